"""All-or-nothing output folders that replace only what this tool wrote.

Everything is written to a staging folder beside the output and moved into place when
complete. An existing output folder is replaced only if it is empty or this tool wrote
it: its ``metadata.json`` says ``"created_by": CREATED_BY``. On Linux the staging
folder and the old output are swapped in one atomic ``renameat2(RENAME_EXCHANGE)``, so a
kill at any moment leaves either the old or the new output in place, never neither;
elsewhere two renames follow each other. Staging folders left by a killed run (their
process is gone) are removed by the next run into the same place.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .common import ToolError

CREATED_BY = "peaklayers export tool"
_STAGE = ".partial-"
_OLD = ".old-"


def written_by_tool(folder: Path) -> bool:
    """Whether ``folder`` holds a ``metadata.json`` that this tool wrote."""
    try:
        data = json.loads((folder / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("created_by") == CREATED_BY


def check_output(final: Path, option: str = "--out") -> None:
    """Refuse an output path this tool may not write or replace (before any work is done)."""
    if final.is_symlink():
        raise ToolError(f"{option} {final} is a symbolic link; give the folder itself")
    if final.exists() and not final.is_dir():
        raise ToolError(f"{option} {final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not written_by_tool(final):
        raise ToolError(f"{option} folder {final} is not empty and was not written by this "
                        "tool; nothing was changed: choose another folder")


def check_apart(first: Path, second: Path, names: tuple[str, str]) -> None:
    """Refuse two output folders of which one is, or is inside, the other."""
    a, b = first.resolve(), second.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise ToolError(f"{names[0]} {first} and {names[1]} {second} overlap; give two "
                        "separate folders")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(final: Path) -> None:
    """Staging and old folders of ``final`` whose run has ended (killed, power cut)."""
    for kind in (_STAGE, _OLD):
        for path in final.parent.glob(f".{final.name}{kind}*"):
            pid = path.name[len(final.name) + 1 + len(kind):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}{kind}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system cannot (not Linux, old kernel)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _move_into_place(staging: Path, final: Path) -> None:
    """``staging`` becomes ``final``; the old ``final`` (if any) ends up at ``staging``."""
    check_output(final)  # again: something else may have been put there meanwhile
    if not final.exists():
        with contextlib.suppress(FileExistsError, OSError):
            staging.rename(final)  # also replaces an empty folder
            return
    if _exchange(staging, final):
        return
    old = _sibling(final, _OLD)
    final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(final: Path, option: str = "--out") -> Iterator[Path]:
    """A staging folder beside ``final``, moved onto it only when the block succeeds."""
    final = Path(final)
    check_output(final, option)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final)
        staging = _sibling(final, _STAGE)
        # mkdir (not mkdtemp) so the folder gets the usual permissions from the umask.
        staging.mkdir()
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise ToolError(f"cannot write to {option} folder {final}: {error.strerror}{where}"
                        ) from None
    try:
        yield staging
        _move_into_place(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
