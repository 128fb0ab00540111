"""Global peaks: one peak per sample and channel (SPEC §1.1, §1.3, §1.5)."""

from typing import Optional

import torch

from ._checks import check_confmaps, check_patch_size, check_refinement, check_stride
from ._layer import PeakLayer
from .integral import integral_offsets
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
    check_refinement(refinement)
    check_patch_size(patch_size)
    check_stride(stride)
    samples, channels, width = cms.shape[0], cms.shape[1], cms.shape[3]

    vals, ys = cms.amax(dim=3).max(dim=2)  # (S, C): first row holding the maximum
    row = cms.gather(2, ys[:, :, None, None].expand(samples, channels, 1, width))
    # ``[:, :, 0]``, not ``squeeze(2)``: the TorchScript ONNX exporter turns a squeeze of
    # a size it cannot prove is 1 into an ``If`` node.
    xs = row[:, :, 0].argmax(dim=2)  # first column of that row holding it
    points = torch.stack([xs, ys], dim=-1).to(torch.float32)

    if refinement is not None:  # "integral", checked above
        map_inds = torch.arange(samples * channels, device=cms.device)
        offsets = integral_offsets(cms, map_inds, xs.reshape(-1), ys.reshape(-1), patch_size)
        points = points + offsets.reshape(samples, channels, 2)
    if stride != 1.0:
        points = points * stride

    keep = vals >= cms.new_full((), threshold)
    points = torch.where(keep[:, :, None], points, torch.full_like(points, float("nan")))
    vals = torch.where(keep, vals, torch.zeros_like(vals))
    return points, vals


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
        return global_peaks(cms, self.threshold, self.refinement, self.patch_size, self.stride)
