"""Shared plumbing: the user-facing error, progress lines, all-or-nothing output folders."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path


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


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail(message: str, code: int = 1) -> int:
    print(f"export: error: {message}", file=sys.stderr, flush=True)
    return code
