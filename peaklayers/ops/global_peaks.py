"""Global peaks: one peak per sample and channel (SPEC §1.1, §1.3, §1.5)."""

import functools
from typing import Optional

import torch

from ._checks import (
    check_confmaps,
    check_patch_size,
    check_refinement,
    check_stride,
    check_threshold,
)
from ._graph import in_graph
from ._layer import PeakLayer
from .integral import patch_constants, patch_offsets, patch_pixels, patch_rows
from .outputs import Output


def global_peaks(
    cms: torch.Tensor,
    threshold: float = 0.2,
    refinement: Optional[str] = "integral",
    patch_size: int = 5,
    stride: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The maximum of every map, optionally refined to sub-pixel precision.

    The peak is the FIRST pixel holding the maximum in row-major order (smallest y,
    then smallest x), so the point is always a real maximum pixel. (The historical
    eager implementation reduced rows and columns independently and, with ties in
    different rows and columns, could return a point that is not a maximum.) Here
    the first row holding the maximum is found from the row maxima, then the first
    column holding it within that row.

    The threshold is inclusive and compared in the dtype of ``cms``: a maximum
    ``v < threshold`` is dropped, giving point ``(NaN, NaN)`` and value ``0``.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, float16/bfloat16/float32/float64.
        threshold (float): minimum peak value (inclusive).
        refinement (str or None): ``"integral"`` (see :func:`integral_offsets`) or None.
        patch_size (int): side of the integral-refinement patch.
        stride (float): output stride; points are multiplied by it after refinement.

    Returns:
        points (Tensor[S, C, 2], float32): ``(x, y)`` per sample and channel.
        vals (Tensor[S, C], dtype of ``cms``): the peak values.
    """
    check_confmaps(cms)
    check_threshold(threshold)
    check_refinement(refinement)
    check_patch_size(patch_size)
    check_stride(stride)
    return _global_peaks(cms, threshold, refinement, patch_size, stride)


def _global_peaks(
    cms: torch.Tensor,
    threshold: float,
    refinement: Optional[str],
    patch_size: int,
    stride: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`global_peaks` after its checks (a layer checks its settings once)."""
    samples, channels, height, width = cms.shape[0], cms.shape[1], cms.shape[2], cms.shape[3]

    vals, ys = cms.amax(dim=3).max(dim=2)  # (S, C): first row holding the maximum
    # the row of each peak in cms.reshape(-1, W)
    lines = _map_rows(samples, channels, height, cms.device) + ys
    if refinement is None:
        xs = torch.embedding(cms.reshape(-1, width), lines).argmax(dim=2)
        points = torch.stack([xs, ys], dim=-1).to(torch.float32)
    else:  # "integral", checked above
        half = patch_size // 2
        steps, columns, weights = patch_constants(patch_size, cms.device)
        rows, inside = patch_rows(cms, lines, ys, steps)
        # ``dim=2``, not ``-1``: ONNX Runtime's ArgMax keeps a negative axis of an empty input.
        xs = rows.select(2, half).argmax(dim=2, keepdim=True)  # first column holding it
        pixels = patch_pixels(rows, inside, xs, columns, half)
        points = torch.cat([xs, ys.unsqueeze(2)], dim=2).to(torch.float32)
        points = points + patch_offsets(pixels, weights)
    if stride != 1.0:
        points = points * stride

    keep = vals >= cms.new_full((), threshold)
    points = torch.where(keep.unsqueeze(2), points, float("nan"))
    vals = torch.where(keep, vals, 0.0)
    return points, vals


def _map_rows(samples: int, channels: int, height: int, device: torch.device) -> torch.Tensor:
    """``(sample * C + channel) * H`` (Tensor[S, C], int64): the first row of each map in
    ``cms.reshape(-1, W)``, made once per shape in eager code."""
    if not torch.jit.is_scripting():
        if not in_graph():
            return _eager_map_rows(samples, channels, height, device)
    return torch.arange(samples * channels, device=device).reshape(samples, channels) * height


# Made outside inference mode: an inference tensor cannot join a later autograd graph.
@functools.lru_cache(maxsize=64)
def _eager_map_rows(samples: int, channels: int, height: int, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):
        return torch.arange(0, samples * channels * height, height, device=device).reshape(
            samples, channels
        )


class GlobalPeaks(PeakLayer):
    """One peak per sample and channel. See :func:`global_peaks`.

    ``forward(cms (Tensor[S, C, H, W]))`` returns ``points (Tensor[S, C, 2], float32)``
    and ``vals (Tensor[S, C], dtype of cms)``.
    """

    outputs = (
        Output("points", ("batch", "channels", 2), "float32"),
        Output("vals", ("batch", "channels"), "maps"),
    )

    def forward(self, cms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_confmaps(cms)
        return _global_peaks(cms, self.threshold, self.refinement, self.patch_size, self.stride)
