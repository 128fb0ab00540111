"""Local peaks: every strict local maximum above the threshold (SPEC §1.2, §1.3, §1.5),
optionally with flat tops merged into one peak (see :mod:`peaklayers.ops.flat_tops`)."""

from typing import Optional

import torch

from ._checks import (
    check_confmaps,
    check_flat_tops,
    check_patch_size,
    check_refinement,
    check_stride,
    check_threshold,
)
from ._layer import LocalPeakLayer
from .flat_tops import flat_top_maxima
from .integral import patch_constants, patch_offsets, patch_pixels, patch_rows
from .nms import strict_maxima
from .outputs import Output


def local_peaks(
    cms: torch.Tensor,
    threshold: float = 0.2,
    refinement: Optional[str] = "integral",
    patch_size: int = 5,
    stride: float = 1.0,
    flat_tops: str = "drop",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All strict local maxima (see :mod:`peaklayers.ops.nms`), optionally refined.

    Peaks are ordered by ``(sample, y, x, channel)``, i.e. row-major over an
    ``(S, H, W, C)`` view of the maps. With ``flat_tops="merge"``, a flat top of up to
    2x2 equal pixels is one peak, ordered by its first pixel, at the mean of its
    pixels; its refinement patch is centred on ``floor`` of that mean.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, float16/bfloat16/float32/float64.
        threshold (float): peaks must be strictly greater (compared in ``cms.dtype``).
        refinement (str or None): ``"integral"`` (see :func:`integral_offsets`) or None.
        patch_size (int): side of the integral-refinement patch.
        stride (float): output stride; points are multiplied by it after refinement.
        flat_tops (str): ``"drop"`` (SPEC §1.2) or ``"merge"``.

    Returns:
        points (Tensor[N, 2], float32): ``(x, y)`` of each peak.
        vals (Tensor[N], dtype of ``cms``): peak values.
        sample_inds (Tensor[N], int32): sample of each peak.
        channel_inds (Tensor[N], int32): channel of each peak.
    """
    check_confmaps(cms)
    check_threshold(threshold)
    check_refinement(refinement)
    check_patch_size(patch_size)
    check_stride(stride)
    check_flat_tops(flat_tops)
    return _local_peaks(cms, threshold, refinement, patch_size, stride, flat_tops)


def _local_peaks(
    cms: torch.Tensor,
    threshold: float,
    refinement: Optional[str],
    patch_size: int,
    stride: float,
    flat_tops: str,
    for_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`local_peaks` after its checks (a layer checks its settings once);
    ``for_graph`` as for :func:`~peaklayers.ops.topk_peaks.topk_peaks`."""
    channels, height, width = cms.shape[1], cms.shape[2], cms.shape[3]

    offsets: Optional[torch.Tensor] = None  # mean point of each flat top - its anchor
    if flat_tops == "merge":
        rows, xs, dx, dy = flat_top_maxima(cms, threshold, for_graph)
        offsets = torch.stack([dx, dy], dim=1)
    else:
        rows, xs = strict_maxima(cms, threshold)
    # rows and xs are ordered by (s, c, y, x); the outputs by (s, y, x, c)
    map_inds = rows // height
    ys = rows - map_inds * height
    sample_inds = map_inds // channels
    channel_inds = map_inds - sample_inds * channels
    order = torch.argsort(((sample_inds * height + ys) * width + xs) * channels + channel_inds)
    rows, xs, ys = rows.index_select(0, order), xs.index_select(0, order), ys.index_select(0, order)
    sample_inds = sample_inds.index_select(0, order)
    channel_inds = channel_inds.index_select(0, order)

    points = torch.stack([xs, ys], dim=1).to(torch.float32)
    vals: Optional[torch.Tensor] = None
    if offsets is not None:
        vals = cms.take(rows * width + xs)  # the anchor's value
        points = points + offsets.index_select(0, order)
        centres = torch.floor(points).to(torch.int64)  # crops stay on the pixel grid
        rows = rows + (centres[:, 1] - ys)
        xs, ys = centres[:, 0], centres[:, 1]
        if refinement is not None:
            points = centres.to(torch.float32)
    if refinement is not None:  # "integral", checked above
        half = patch_size // 2
        steps, columns, weights = patch_constants(patch_size, cms.device)
        lines, inside = patch_rows(cms, rows, ys, steps)
        pixels = patch_pixels(lines, inside, xs.unsqueeze(1), columns, half)
        if vals is None:  # the patch is centred on the peak
            vals = pixels[:, half, half]
        points = points + patch_offsets(pixels, weights)
    if vals is None:
        vals = cms.take(rows * width + xs)
    if stride != 1.0:
        points = points * stride
    return points, vals, sample_inds.to(torch.int32), channel_inds.to(torch.int32)


class LocalPeaks(LocalPeakLayer):
    """Every strict local maximum above the threshold. See :func:`local_peaks`.

    ``forward(cms (Tensor[S, C, H, W]))`` returns ``points (Tensor[N, 2], float32)``,
    ``vals (Tensor[N], dtype of cms)``, ``sample_inds (Tensor[N], int32)`` and
    ``channel_inds (Tensor[N], int32)``, ordered by ``(sample, y, x, channel)``.
    """

    outputs = (
        Output("points", ("peaks", 2), "float32"),
        Output("vals", ("peaks",), "maps"),
        Output("sample_inds", ("peaks",), "int32"),
        Output("channel_inds", ("peaks",), "int32"),
    )

    def forward(
        self, cms: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_confmaps(cms)
        return _local_peaks(
            cms,
            self.threshold,
            self.refinement,
            self.patch_size,
            self.stride,
            self.flat_tops,
            self.for_graph,
        )
