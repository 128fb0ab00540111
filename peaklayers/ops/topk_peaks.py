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
    python_int,
)
from ._layer import LocalPeakLayer
from ._windows import pixel_windows
from .flat_tops import flat_top_rejected, merged_offsets
from .integral import integral_offsets
from .nms import strict_maxima_mask
from .outputs import Output


def _ordered_topk_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest scores, value descending, ties by position.

    ``torch.topk`` promises nothing about which of several equal values it returns or
    in which order, and equal peak values are common in half-precision maps. So the
    set is chosen with a key that is unique among ties, and the order is made exact
    with small integer keys; every step is a TopK with a constant ``k``.

    Args:
        scores (Tensor[S, C, L]): ``L >= k``.
        k (int): number of slots.

    Returns:
        Tensor[S, C, k], int64: positions along the last axis.
    """
    length = scores.shape[2]
    kth = scores.topk(k, dim=2).values[:, :, -1:]
    # Everything above the k-th value is in (there are fewer than k such values);
    # among the values equal to it, the first ones in row-major order.
    position = torch.arange(length, device=scores.device, dtype=torch.float32)
    key = torch.where(scores == kth, length - position, torch.full_like(position, -1.0))
    key = torch.where(scores > kth, key.new_full((), 2.0 * length), key)
    chosen = key.topk(k, dim=2).indices

    by_position = chosen.gather(2, (-chosen.to(torch.float32)).topk(k, dim=2).indices)
    vals = scores.gather(2, by_position)
    sorted_vals, position_rank = vals.topk(k, dim=2)  # equal values in no known order
    # Number the runs of equal values; within a run, keep position order.
    new_run = (sorted_vals[:, :, 1:] != sorted_vals[:, :, :-1]).to(torch.float32)
    first = torch.zeros_like(sorted_vals[:, :, :1], dtype=torch.float32)
    run = torch.cat([first, new_run], dim=2).cumsum(dim=2)
    order = (-(run * k + position_rank.to(torch.float32))).topk(k, dim=2).indices
    return by_position.gather(2, position_rank.gather(2, order))


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

    Returns:
        points (Tensor[S, C, k, 2], float32): ``(x, y)`` of each slot.
        vals (Tensor[S, C, k], dtype of ``cms``): peak values, 0 in unused slots.
        valid (Tensor[S, C, k], bool): which slots hold a peak.
    """
    check_confmaps(cms)
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

    empty = cms.new_full((), float("-inf"))
    if flat_tops == "merge":
        scores = torch.where(flat_top_rejected(cms), empty, cms)
    else:
        scores = torch.where(strict_maxima_mask(cms, threshold), cms, empty)
    # k empty slots at the end keep k a constant even when it exceeds H * W.
    scores = torch.cat(
        [_by_map(scores), empty.expand(samples, channels, k)],
        dim=2,
    )
    positions = _ordered_topk_positions(scores, k)
    vals = scores.gather(2, positions)
    # The threshold again: flat-top anchors are found at any value.
    valid = vals > cms.new_full((), threshold)

    positions = torch.where(valid, positions, torch.zeros_like(positions))
    # The row of each position by lookup, not ``positions // width``: the dynamo exporter
    # writes integer ``//`` as Div, Mod and sign tests with an ``Equal`` on booleans
    # (which TensorRT refuses), and ``trunc`` division as a float32 division.
    rows = torch.arange(height, device=cms.device)[:, None].expand(height, width)
    ys = rows.reshape(-1)[positions]
    xs = positions - ys * width
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
        )

    def extra_repr(self) -> str:
        return f"k={self.k}, " + super().extra_repr()
