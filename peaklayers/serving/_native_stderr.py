"""Capture what native code writes to the process's stderr (file descriptor 2).

ONNX Runtime's C++ logger writes there directly, past ``sys.stderr``; while a CUDA
session is created, :mod:`peaklayers.runtime` captures that output to move the reason
for a failed CUDA load into its error or warning message.
"""

import contextlib
import os
import re
import sys
import tempfile

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class _Captured:
    raw = b""
    text = ""


@contextlib.contextmanager
def _native_stderr_captured():
    """Redirect file descriptor 2 (where ONNX Runtime's C++ logger writes) to a file.

    Yields an object whose ``text`` is set on exit (ANSI colours removed). If the body
    raises, the captured text is added to the exception as a note (shown with its
    traceback), not printed: it is ONNX Runtime's log of the same failure. Output of
    other threads during this short window is captured as well; it is never dropped (it
    ends up in the message, in the note, or back on stderr).
    """
    captured = _Captured()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no usable stderr or fd 2
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        except BaseException as error:
            _restore(saved, tmp, captured)
            if captured.text and hasattr(error, "add_note"):
                error.add_note("ONNX Runtime's log:\n" + captured.text)
            raise
        _restore(saved, tmp, captured)


def _restore(saved: int, tmp, captured: _Captured) -> None:
    """Point fd 2 back at stderr; read what was captured into ``captured``."""
    os.dup2(saved, 2)
    os.close(saved)
    tmp.seek(0)
    captured.raw = tmp.read()
    text = _ANSI_ESCAPE.sub("", captured.raw.decode(errors="replace"))
    captured.text = "\n".join(line for line in text.splitlines() if line.strip())
