"""Shared plumbing: the user-facing error, progress lines, all-or-nothing output folders."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

# A finished output folder always holds this file; a folder holding it may be replaced.
MARKER = "metadata.json"


class ToolError(Exception):
    """An expected problem with the user's input or environment: shown as one line, exit 1."""


def human_size(path: Path) -> str:
    size = path.stat().st_size
    for unit in ("B", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""  # pragma: no cover


def log(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def step(name: str, shown: Path | None = None) -> Iterator[dict]:
    """Time a step and log ``name ✓ 1.2s → file (size)``; ``info["file"]`` may be set inside."""
    info: dict = {"file": None, "note": ""}
    start = time.perf_counter()
    yield info
    line = f"{name} ✓ {time.perf_counter() - start:.1f}s"
    path = info["file"]
    if path is not None:
        path = Path(path)
        line += f" → {Path(shown, path.name) if shown else path} ({human_size(path)})"
    if info["note"]:
        line += f"  {info['note']}"
    log(line)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final``, moved onto it only when the block succeeds.

    So an interrupted or failed export never leaves a folder that looks complete. An
    existing ``final`` is replaced only if it is empty or a previous export (it holds
    ``metadata.json``); anything else is refused rather than deleted.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise ToolError(f"output {final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not (final / MARKER).is_file():
        raise ToolError(f"output folder {final} is not empty and is not a previous export; "
                        "choose another --out")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp) so the folder gets the usual permissions from the umask.
        staging = final.parent / f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise ToolError(f"cannot write to output folder {final}: {error.strerror}{where}") from None
    try:
        yield staging
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            final.rename(old / final.name)
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail(message: str, code: int = 1) -> int:
    print(f"export: error: {message}", file=sys.stderr, flush=True)
    return code
