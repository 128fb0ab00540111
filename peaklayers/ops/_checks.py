"""Argument checks shared by the peak layers, their plain functions and the functional API.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument, so bad input never reaches an operator that would crash or, worse,
silently compute something else. The checks on tensors are TorchScript-compatible
(they run inside scripted ``forward``); under tracing and export they read only
static facts (rank, dtype), so they add no graph nodes. Type checks on Python values
(a bool given as a threshold, a string as a patch size, a list as maps) sit behind
``torch.jit.is_scripting()``: in scripted code the annotations already enforce them.
"""

import numbers
from typing import Optional

import torch

REFINEMENTS = (None, "integral")


def _beyond_float32(value: float) -> bool:
    """``value`` is finite but too large for float32 (a float32 map's ``new_full``
    refuses it; a stride that large makes every point infinite)."""
    # A literal, not a module constant: TorchScript cannot read global floats.
    return abs(value) > 3.4028234663852886e38 and abs(value) != float("inf")


def check_confmaps(cms: torch.Tensor, name: str = "cms") -> None:
    """Raise unless ``cms`` is a floating-point ``(S, C, H, W)`` tensor with ``H, W > 0``."""
    if not torch.jit.is_scripting():
        check_tensor(cms, name)
    if cms.dim() != 4:
        raise ValueError(
            name + " must be a 4-D tensor (samples, channels, height, width), got "
            + str(cms.dim()) + "-D"
        )
    if not cms.is_floating_point():
        raise TypeError(name + " must have a floating-point dtype, got " + str(cms.dtype))
    if cms.shape[2] == 0 or cms.shape[3] == 0:
        raise ValueError(name + " must have non-zero height and width, got " + str(cms.shape))


def check_refinement(refinement: Optional[str]) -> None:
    if refinement is not None and refinement != "integral":
        raise ValueError(
            "refinement must be None or 'integral', got '" + str(refinement) + "'"
        )


def check_flat_tops(flat_tops: str) -> None:
    if flat_tops != "drop" and flat_tops != "merge":
        raise ValueError("flat_tops must be 'drop' or 'merge', got '" + str(flat_tops) + "'")


def check_patch_size(patch_size: int, name: str = "patch_size") -> None:
    if not torch.jit.is_scripting():
        python_int(patch_size, name)
    # Larger patches only allocate memory (N * k * k samples per call).
    if patch_size < 1 or patch_size > 255:
        raise ValueError(name + " must be an integer from 1 to 255, got " + str(patch_size))


def check_stride(stride: float, name: str = "stride") -> None:
    if not torch.jit.is_scripting():
        python_float(stride, name)
    if not stride > 0.0 or stride == float("inf") or _beyond_float32(stride):
        raise ValueError(
            name + " must be a positive number within the float32 range, got " + str(stride)
        )


def check_threshold(threshold: float, name: str = "threshold") -> None:
    if not torch.jit.is_scripting():
        python_float(threshold, name)
    if threshold != threshold:
        raise ValueError(name + " must be a number, got NaN")
    # Infinite thresholds are meaningful (keep everything, keep nothing); finite ones
    # beyond float32 would overflow when compared in a float32 map.
    if _beyond_float32(threshold):
        raise ValueError(
            name + " must be infinite or within the float32 range, got " + str(threshold)
        )


def check_k(k: int) -> None:
    if not torch.jit.is_scripting():
        python_int(k, "k")
    # TopK slots are ordered with keys ``run * k + rank`` that must be exact in
    # float32 (TensorRT's TopK allows at most 3840 anyway).
    if k < 1 or k > 4095:
        raise ValueError("k must be between 1 and 4095, got " + str(k))


def check_tensor(value: object, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a tensor (eager Python only)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(name + " must be a torch.Tensor, got " + type(value).__name__)


def python_int(value: object, name: str) -> int:
    """``value`` as an ``int``; bools, floats and other types are refused (Python only)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(name + " must be an int, got " + type(value).__name__)
    return int(value)


def python_float(value: object, name: str) -> float:
    """``value`` as a ``float``; bools, strings and other types are refused (Python only)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(name + " must be a number, got " + type(value).__name__)
    return float(value)
