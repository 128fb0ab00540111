"""Opening ONNX Runtime sessions through :mod:`peaklayers.runtime`, with tool-style errors."""

from __future__ import annotations

import warnings
from pathlib import Path

from peaklayers.runtime import ProviderUnavailableError, open_session

from .common import ToolError


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
    except Exception as error:  # onnxruntime's own errors for a file it cannot load
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ToolError(f"ONNX Runtime cannot load {path}: {text}") from None
