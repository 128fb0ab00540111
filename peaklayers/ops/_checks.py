"""Argument checks shared by the peak layers.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument, so bad input never reaches an operator that would crash or, worse,
silently compute something else. The checks on tensors are TorchScript-compatible
(they run inside scripted ``forward``); under tracing and export they read only
static facts (rank, dtype), so they add no graph nodes.
"""

from typing import Optional

import torch

REFINEMENTS = (None, "integral")


def check_confmaps(cms: torch.Tensor, name: str = "cms") -> None:
    """Raise unless ``cms`` is a floating-point ``(S, C, H, W)`` tensor with ``H, W > 0``."""
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
    if patch_size < 1:
        raise ValueError(name + " must be a positive integer, got " + str(patch_size))


def check_stride(stride: float) -> None:
    if not stride > 0.0 or stride == float("inf"):
        raise ValueError("stride must be a positive finite number, got " + str(stride))


def check_threshold(threshold: float) -> None:
    if threshold != threshold:
        raise ValueError("threshold must be a number, got NaN")


def check_k(k: int) -> None:
    # TopK slots are ordered with keys ``run * k + rank`` that must be exact in
    # float32 (TensorRT's TopK allows at most 3840 anyway).
    if k < 1 or k > 4095:
        raise ValueError("k must be between 1 and 4095, got " + str(k))


def python_int(value: object, name: str) -> int:
    """``value`` as an ``int`` (construction time only: bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(name + " must be an int, got " + type(value).__name__)
    return value


def python_float(value: object, name: str) -> float:
    """``value`` as a ``float`` (construction time only: bools and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(name + " must be a number, got " + type(value).__name__)
    return float(value)
