"""Fixed-shape top-K local peaks for serving graphs (SPEC §1.4)."""

from typing import Optional

import torch

from ._checks import (
    check_confmaps,
    check_flat_tops,
    check_k,
    check_patch_size,
    check_refinement,
    check_stride,
    check_threshold,
    python_int,
)
from ._graph import in_graph as _in_graph
from ._layer import LocalPeakLayer
from ._windows import pixel_windows
from .flat_tops import flat_top_maxima, flat_top_scores, merged_offsets
from .integral import integral_offsets
from .nms import strict_maxima, strict_maxima_scores
from .outputs import Output


def _first_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest scores, ties by position, in position order.

    ``torch.topk`` promises nothing about which of several equal values it returns, and
    equal peak values are common in half-precision maps. So the set is chosen with a
    key that is unique among ties; every step is a TopK with a constant ``k``.

    Args:
        scores (Tensor[S, C, L]): ``L >= k``, ``L <= 2**22``.
        k (int): number of slots.

    Returns:
        Tensor[S, C, k], int64: positions along the last axis, ascending.
    """
    length = scores.shape[2]
    kth = scores.topk(k, dim=2).values[:, :, -1:]
    # Everything above the k-th value is in (there are fewer than k such values);
    # among the values equal to it, the first ones in row-major order.
    position = torch.arange(length, device=scores.device, dtype=torch.float32)
    key = torch.where(scores == kth, length - position, torch.full_like(position, -1.0))
    key = torch.where(scores > kth, key.new_full((), 2.0 * length), key)
    chosen = key.topk(k, dim=2).indices
    return chosen.gather(2, (-chosen.to(torch.float32)).topk(k, dim=2).indices)


def _ordered_topk_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest scores, value descending, ties by position.

    Args:
        scores (Tensor[S, C, L]): ``L >= k``, ``L <= 2**22``.
        k (int): number of slots.

    Returns:
        Tensor[S, C, k], int64: positions along the last axis.
    """
    by_position = _first_topk(scores, k)
    vals = scores.gather(2, by_position)
    sorted_vals, position_rank = vals.topk(k, dim=2)  # equal values in no known order
    # Number the runs of equal values; within a run, keep position order.
    new_run = (sorted_vals[:, :, 1:] != sorted_vals[:, :, :-1]).to(torch.float32)
    first = torch.zeros_like(sorted_vals[:, :, :1], dtype=torch.float32)
    run = torch.cat([first, new_run], dim=2).cumsum(dim=2)
    order = (-(run * k + position_rank.to(torch.float32))).topk(k, dim=2).indices
    return by_position.gather(2, position_rank.gather(2, order))


def _top_pixels(
    scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels of the ``k`` highest scores of each map, value descending,
    ties by position.

    Two small selections instead of one over every pixel: the ``k`` best pixels lie in
    the ``k`` rows whose best pixels come first (rows ordered by their maximum, ties by
    row), since each of the other rows is beaten, best pixel and all, by those ``k``
    rows' best pixels. Only these rows, kept in row order (so ties stay in row-major
    order), are searched pixel by pixel.

    Args:
        scores (Tensor[S, C, H, W]): ``-inf`` where there is no peak.
        k (int): number of slots.

    Returns:
        ys, xs (Tensor[S, C, k], int64 each): row and column of each slot; a slot with
            no pixel left (score ``-inf``) has row ``H``.
        vals (Tensor[S, C, k], dtype of ``scores``): the score of each slot.
    """
    samples, channels = scores.shape[0], scores.shape[1]
    height, width = scores.shape[2], scores.shape[3]
    empty = scores.new_full((), float("-inf"))
    # k empty rows and slots at the end keep k a constant even beyond H and k * W.
    row_best = torch.cat([scores.amax(dim=3), empty.expand(samples, channels, k)], dim=2)
    rows = _first_topk(row_best, k)  # (S, C, k), ascending
    real = rows < height
    safe_rows = torch.where(real, rows, torch.zeros_like(rows))
    picked = scores.gather(2, safe_rows[:, :, :, None].expand(samples, channels, k, width))
    picked = torch.where(real[:, :, :, None], picked, empty)
    candidates = torch.cat([_by_map(picked), empty.expand(samples, channels, k)], dim=2)
    slots = _ordered_topk_positions(candidates, k)
    # The picked row of each slot by lookup, not ``slots // width`` (see topk_peaks);
    # the empty slots point at row ``k``, which stands for row ``H``.
    slot_rows = torch.arange(k, device=scores.device)[:, None].expand(k, width).reshape(-1)
    slot_rows = torch.cat([slot_rows, torch.full_like(slot_rows[:1], k).expand(k)])
    picked_row = slot_rows[slots]
    row = torch.cat([safe_rows, torch.full_like(safe_rows[:, :, :1], height)], dim=2)
    ys = row.gather(2, picked_row)
    return ys, slots - picked_row * width, candidates.gather(2, slots)


def _top_peaks_found(
    cms: torch.Tensor, k: int, threshold: float, flat_tops: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_top_pixels` of the peak scores, from the peaks above ``threshold`` only.

    The slots that stay valid are the same: a peak at or below the threshold is never
    valid, and it ranks below every peak above it. The peaks are found as
    :func:`local_peaks` finds them, from the rows reaching above the threshold, which
    in eager PyTorch is several times cheaper than any dense pass over the maps; the
    ``k`` best of each map are then picked from that short list. Its length depends on
    the data, so graphs keep the dense selection.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        k (int): number of slots.
        threshold (float): peaks must be strictly greater (compared in ``cms.dtype``).
        flat_tops (str): ``"drop"`` or ``"merge"`` (flat tops by their anchors).

    Returns:
        ys, xs (Tensor[S, C, k], int64 each): row and column of each slot, 0 where the
            slot is empty.
        vals (Tensor[S, C, k], dtype of ``cms``): the value of each slot, ``-inf``
            where it is empty.
    """
    samples, channels, height = cms.shape[0], cms.shape[1], cms.shape[2]
    if flat_tops == "merge":
        rows, cols, _, _ = flat_top_maxima(cms, threshold)
    else:
        rows, cols = strict_maxima(cms, threshold)
    vals = cms.reshape(-1, cms.shape[3])[rows, cols]
    # Found in row-major order within each map; two stable sorts give value descending,
    # ties in that order, maps in order.
    order = torch.sort(vals, descending=True, stable=True)[1]
    maps = rows[order] // height
    order = order[torch.sort(maps, stable=True)[1]]
    maps = rows[order] // height
    counts = torch.bincount(maps, minlength=samples * channels)
    rank = torch.arange(maps.shape[0], device=cms.device) - (counts.cumsum(0) - counts)[maps]
    kept = rank < k
    order, slots = order[kept], maps[kept] * k + rank[kept]
    ys = torch.zeros(samples * channels * k, dtype=torch.int64, device=cms.device)
    xs = torch.zeros_like(ys)
    out = torch.full((samples * channels * k,), float("-inf"), dtype=cms.dtype, device=cms.device)
    ys[slots] = rows[order] % height
    xs[slots] = cols[order]
    out[slots] = vals[order]
    shape = (samples, channels, k)
    return ys.reshape(shape), xs.reshape(shape), out.reshape(shape)


def _by_map(t: torch.Tensor) -> torch.Tensor:
    """``t (Tensor[S, C, H, W])`` as ``Tensor[S, C, H * W]``."""
    if torch.jit.is_tracing():
        # The TorchScript-based ONNX exporter writes the computed H * W as -1, which
        # ONNX Runtime cannot resolve for an empty batch; a -1 batch it can.
        return t.reshape(-1, t.shape[1], t.shape[2] * t.shape[3])
    return t.flatten(2)


def topk_peaks(
    cms: torch.Tensor,
    k: int,
    threshold: float = 0.2,
    refinement: Optional[str] = "integral",
    patch_size: int = 5,
    stride: float = 1.0,
    flat_tops: str = "drop",
    for_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` highest strict local maxima of every map, in fixed-shape slots.

    The valid slots hold exactly the peaks :func:`local_peaks` finds in that map, cut
    to the ``k`` highest; slots are ordered by value descending, equal values by
    row-major position. Unused slots have point ``(NaN, NaN)``, value 0 and
    ``valid == False``. ``k`` may exceed ``H * W``. The graph has no ``NonZero`` and
    no data-dependent shape; ``k`` is a constant of it.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, float16/bfloat16/float32/float64,
            with ``H * W + k <= 2**23``.
        k (int): slots per map, ``1 <= k <= 4095``.
        threshold (float): peaks must be strictly greater (compared in ``cms.dtype``).
        refinement (str or None): ``"integral"`` (see :func:`integral_offsets`) or None.
        patch_size (int): side of the integral-refinement patch.
        stride (float): output stride; points are multiplied by it after refinement.
        flat_tops (str): ``"drop"`` (SPEC §1.2) or ``"merge"`` (as :func:`local_peaks`).
        for_graph (bool): scripted code that will become a graph (see
            :class:`~peaklayers.ops._layer.LocalPeakLayer`); no effect elsewhere.

    Returns:
        points (Tensor[S, C, k, 2], float32): ``(x, y)`` of each slot.
        vals (Tensor[S, C, k], dtype of ``cms``): peak values, 0 in unused slots.
        valid (Tensor[S, C, k], bool): which slots hold a peak.
    """
    check_confmaps(cms)
    check_threshold(threshold)
    check_k(k)
    check_refinement(refinement)
    check_patch_size(patch_size)
    check_stride(stride)
    check_flat_tops(flat_tops)
    samples, channels, height, width = cms.shape[0], cms.shape[1], cms.shape[2], cms.shape[3]
    # Selection keys go up to 2 * (H * W + k) and must be exact in float32 (TopK on
    # float32 is what every backend, TensorRT included, implements).
    if not torch.jit.is_tracing() and height * width + k > 8388608:
        raise ValueError(
            "cms maps are too large for topk_peaks: H * W + k must be at most 2**23, got "
            + str(height * width + k)
        )

    maps = cms
    widened = False
    if not torch.jit.is_scripting():
        if torch.onnx.is_in_onnx_export() and cms.element_size() < 4:
            widened = True
            # ONNX Runtime's CPU kernels for half-precision Max, Greater and Where are
            # several times slower than the float32 ones; widening is exact.
            maps = cms.to(torch.float32)
    found: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
    if not torch.jit.is_scripting():  # scripted code keeps fixed shapes too
        if not _in_graph():
            found = _top_peaks_found(cms, k, threshold, flat_tops)
    if found is not None:
        ys, xs, vals = found
    elif flat_tops == "merge":
        ys, xs, vals = _top_pixels(flat_top_scores(maps, for_graph), k)
    else:
        ys, xs, vals = _top_pixels(strict_maxima_scores(maps), k)
        xs = xs - 1  # the scores have a padding column on the left
    if widened:  # a traced dtype conversion would be fixed to the example's dtype
        vals = vals.to(cms.dtype)
    # The threshold again: flat-top anchors are found at any value.
    valid = vals > cms.new_full((), threshold)
    ys = torch.where(valid, ys, torch.zeros_like(ys))
    xs = torch.where(valid, xs, torch.zeros_like(xs))
    points = torch.stack([xs, ys], dim=-1).to(torch.float32)
    map_inds = torch.arange(samples * channels, device=cms.device)
    map_inds = map_inds[:, None].expand(samples * channels, k).reshape(-1)
    if flat_tops == "merge":
        row_steps = torch.arange(2, device=cms.device)
        col_steps = torch.arange(-1, 2, device=cms.device)
        neighbours = pixel_windows(
            cms, map_inds, xs.reshape(-1), ys.reshape(-1), row_steps, col_steps, float("-inf")
        )
        dx, dy = merged_offsets(neighbours)
        points = points + torch.stack([dx, dy], dim=-1).reshape(samples, channels, k, 2)
        centres = torch.floor(points).to(torch.int64)  # crops stay on the pixel grid
        xs, ys = centres[..., 0], centres[..., 1]
    if refinement is not None:  # "integral", checked above
        offsets = integral_offsets(cms, map_inds, xs.reshape(-1), ys.reshape(-1), patch_size)
        rough = torch.stack([xs, ys], dim=-1).to(torch.float32)
        points = rough + offsets.reshape(samples, channels, k, 2)
    if stride != 1.0:
        points = points * stride

    points = torch.where(valid[:, :, :, None], points, torch.full_like(points, float("nan")))
    vals = torch.where(valid, vals, torch.zeros_like(vals))
    return points, vals, valid


class TopKPeaks(LocalPeakLayer):
    """The ``k`` highest local peaks of each map in fixed-shape slots. See :func:`topk_peaks`.

    ``forward(cms (Tensor[S, C, H, W]))`` returns ``points (Tensor[S, C, k, 2], float32)``,
    ``vals (Tensor[S, C, k], dtype of cms)`` and ``valid (Tensor[S, C, k], bool)``.
    """

    outputs = (
        Output("points", ("batch", "channels", "k", 2), "float32"),
        Output("vals", ("batch", "channels", "k"), "maps"),
        Output("valid", ("batch", "channels", "k"), "bool"),
    )

    def __init__(
        self,
        k: int,
        threshold: float = 0.2,
        refinement: Optional[str] = "integral",
        patch_size: int = 5,
        stride: float = 1.0,
        flat_tops: str = "drop",
    ) -> None:
        super().__init__(threshold, refinement, patch_size, stride, flat_tops)
        self.k = python_int(k, "k")
        check_k(self.k)

    def forward(self, cms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return topk_peaks(
            cms,
            self.k,
            self.threshold,
            self.refinement,
            self.patch_size,
            self.stride,
            self.flat_tops,
            self.for_graph,
        )

    def extra_repr(self) -> str:
        return f"k={self.k}, " + super().extra_repr()
