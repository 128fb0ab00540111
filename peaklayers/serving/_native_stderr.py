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
    raises, the captured bytes go back to stderr before the exception propagates.
    Output of other threads during this short window is captured as well; it is never
    dropped (it ends up in the message or back on stderr).
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
        failed = False
        try:
            yield captured
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            raw = tmp.read()
            if failed and raw:
                os.write(2, raw)
            captured.raw = raw
            text = _ANSI_ESCAPE.sub("", raw.decode(errors="replace"))
            captured.text = "\n".join(line for line in text.splitlines() if line.strip())
