"""Opening ONNX Runtime sessions through :mod:`peaklayers.runtime`, with tool-style errors."""

from __future__ import annotations

import warnings
from pathlib import Path

from peaklayers.runtime import RUNTIME_ERRORS, ProviderUnavailableError, open_session

from .common import ToolError, first_line


def open_peak_session(path: Path, provider: str = "auto"):
    """``peaklayers.runtime.open_session`` with its errors as one-line :class:`ToolError`s.

    With ``"auto"`` the library warns once when CUDA does not load; the tool reports the
    provider actually used in its own output instead, so the warning is silenced here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_session(Path(path), provider)
    except ProviderUnavailableError as error:
        raise ToolError(str(error).splitlines()[0] + " (see docs/deployment.md)") from None
    except (ValueError, FileNotFoundError) as error:
        raise ToolError(str(error).splitlines()[0]) from None
    except RUNTIME_ERRORS as error:  # a file ONNX Runtime cannot load
        raise ToolError(f"ONNX Runtime cannot load {path}: {first_line(error)}") from None
