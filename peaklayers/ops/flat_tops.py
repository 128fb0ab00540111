"""Flat-top peaks: equal neighbouring maxima merged into one peak (``flat_tops="merge"``).

Half-precision maps often round the top of a peak into 2 to 4 equal pixels, which the
strict rule of SPEC §1.2 drops. In ``"merge"`` mode a flat top of equal pixels that
fits inside a 2x2 block (two pixels side by side or diagonal, an L of three, or all
four) and is strictly higher than every pixel around it becomes ONE peak:

- it is anchored at its first pixel in row-major order (which orders it among peaks);
- its point is the mean of its pixels' coordinates (so it can be e.g. ``x + 0.5``);
- integral refinement crops the patch on the pixel ``floor(mean point)``.

A wider flat top, or one touching a pixel at least as high outside it, gives no peak.
A single strict maximum is the one-pixel case, so ``"merge"`` finds every peak that
``"drop"`` finds. Values must be strictly above the threshold, as for any local peak.

The rule is written once, in :func:`_flat_and_broken` and :func:`_rejected`, on maps
padded with ``-inf``. The top-K layer applies it densely (:func:`flat_top_scores`),
the local layer only to the pixels no neighbour exceeds (:func:`flat_top_maxima`),
through 6 x 7 windows.
"""

import torch
import torch.nn.functional as F

from ._bits import pack_maps, unpack_maps
from ._windows import pixel_windows
from .nms import hot_row_maxima


def _at(t: torch.Tensor, dy: int, dx: int, top: int, left: int, height: int, width: int):
    """The ``height x width`` view of ``t`` shifted by ``(dy, dx)`` from ``(top, left)``."""
    return t[..., top + dy : top + dy + height, left + dx : left + dx + width]


def _max3(t: torch.Tensor) -> torch.Tensor:
    """3x3 maximum, centre included, of every pixel of ``t`` but its 1-pixel border.

    Args:
        t (Tensor[..., R + 2, K + 2]): floating point.

    Returns:
        Tensor[..., R, K], same dtype.
    """
    rows = torch.maximum(torch.maximum(t[..., :-2], t[..., 1:-1]), t[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _at_least(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a >= b`` (bool; False where either is NaN), for ``a`` and ``b`` of one shape.

    Scripted on the CPU, the comparison is written to a tensor of the maps' dtype, then
    cast: torch's CPU comparison kernels are vectorised only when the result has the
    inputs' dtype, and on maps in the cache (see :func:`flat_top_scores`) the two steps
    together cost less than half of a comparison to bool. (Scripted code that becomes a
    graph never gets here: :func:`_flat_and_broken` pools instead.)
    """
    if torch.jit.is_scripting():
        if a.is_cpu:
            result = torch.empty(a.shape, dtype=a.dtype, device=a.device)
            return torch.ge(a, b, out=result).to(torch.bool)
    return a >= b


def _region(t: torch.Tensor, dy: int, dx: int, size: tuple[int, int]) -> torch.Tensor:
    """The view at ``(dy, dx)`` from each pixel of a map over rows 0..H, columns -1..W."""
    return _at(t, dy, dx, 0, 1, size[0], size[1])


def _flat_and_broken(
    padded: torch.Tensor, for_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two maps the rule reads, with the only comparisons of values it needs.

    A pixel is "flat" when no neighbour is higher. Two neighbouring flat pixels are each
    at least the other, so equal: which pixels form a flat top is read off the flat map.
    A pixel is "broken" when it is not flat, or equals a neighbour that is not flat
    (through which its flat top reaches a higher pixel).

    Args:
        padded (Tensor[S, C, H + 5, W + 6]): maps padded with ``-inf``: 2 rows above, 3
            below and 3 columns on each side.

    Returns:
        flat (Tensor[S, C, H + 3, W + 4], bool): over rows -1..H+1, columns -2..W+1.
        broken (Tensor[S, C, H + 1, W + 2], bool): over rows 0..H, columns -1..W.
    """
    if not torch.jit.is_scripting():
        if torch.onnx.is_in_onnx_export():
            return _flat_and_broken_pooled(padded)
    if for_graph:
        return _flat_and_broken_pooled(padded)
    inner = padded[..., 1:-1, 1:-1]
    flat = _at_least(inner, _max3(padded))
    # The 3x3 max of the steep pixels' values: flat ones count as -inf, the pixel itself
    # included, so a pixel that is not flat is broken by its own value.
    steep = torch.where(flat, padded.new_full((), float("-inf")), inner)
    broken = _at_least(_max3(steep), padded[..., 2:-2, 2:-2])
    return flat, broken


def _flat_and_broken_pooled(padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_flat_and_broken` as ONNX graphs compute it: the same maps, from two
    ``MaxPool`` over the whole padded maps and no slice of a float map (ONNX Runtime
    copies every slice; TensorRT and the CUDA provider pool natively). Eager torch keeps
    the shifted maxima: its CPU pooling kernel is several times slower.
    """
    flat = padded >= F.max_pool2d(padded, 3, 1, 1)
    steep = torch.where(flat, padded.new_full((), float("-inf")), padded)
    broken = F.max_pool2d(steep, 3, 1, 1) >= padded
    return flat[..., 1:-1, 1:-1], broken[..., 2:-2, 2:-2]


def _rejected(flat: torch.Tensor, broken: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixels that are not the anchor (first pixel) of a flat top that makes a peak.

    Only ``|`` and ``&`` on shifted views, so it runs on boolean maps or on maps packed
    eight to a byte (:mod:`peaklayers._bits`) alike.

    Args:
        flat, broken (Tensor[..., H + 3, W + 4] and Tensor[..., H + 1, W + 2]): see
            :func:`_flat_and_broken`; bool, or uint8 holding packed maps.
        height, width (int): ``H`` and ``W``.

    Returns:
        Tensor[..., height, width], dtype of ``flat``.
    """
    size = (height, width)
    # Any flat pixel among three in a row (origin (-1, -1)) or in a column (origin (0, -2)).
    flat_in_row = flat[..., :-2] | flat[..., 1:-1] | flat[..., 2:]
    flat_in_column = flat[..., :-2, :] | flat[..., 1:-1, :] | flat[..., 2:, :]
    # A member breaks the top if it is broken or a flat pixel touches it from outside
    # the top's 2x2 block (that pixel is equal to it: the top would be wider). Its other
    # neighbours are the anchor's: an equal one there is a member or was rejected.
    # These maps cover rows 0..H and columns -1..W.
    flat_right = flat_in_column[..., :, 2:]  # the three pixels right of each pixel
    flat_below = flat_in_row[..., 2:, :]
    flat_left = flat_in_column[..., :, :-2]
    breaks_right = broken | flat_right
    breaks_down = broken | flat_below
    breaks_down_right = breaks_right | flat_below
    breaks_down_left = breaks_down | flat_left

    # The members: flat neighbours right, below, below-right and below-left.
    right = _at(flat, 0, 1, 1, 2, height, width)
    down = _at(flat, 1, 0, 1, 2, height, width)
    down_right = _at(flat, 1, 1, 1, 2, height, width)
    down_left = _at(flat, 1, -1, 1, 2, height, width)
    # The anchor is unbroken and the first pixel of its top (no flat neighbour left or
    # above it); a top with the pixel below-left fits in a 2x2 block only without the
    # pixels right and below-right; no member breaks the top.
    before = _at(flat, 0, -1, 1, 2, height, width) | _at(flat_in_row, -1, 0, 1, 1, height, width)
    # No threshold here: both callers apply it to far fewer values (see them).
    return (
        _region(broken, 0, 0, size)
        | before
        | (down_left & (right | down_right | _region(breaks_down_left, 1, -1, size)))
        | (right & _region(breaks_right, 0, 1, size))
        | (down & _region(breaks_down, 1, 0, size))
        | (down_right & _region(breaks_down_right, 1, 1, size))
    )


def merged_offsets(neighbours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of a flat top's pixel coordinates, relative to its anchor.

    The members of an anchor's flat top are its equal neighbours right, below-left,
    below and below-right (the rule admits no other).

    Args:
        neighbours (Tensor[N, 2, 3]): the pixels at rows 0..1 and columns -1..1 from
            each anchor (the anchor at ``[:, 0, 1]``), any floating dtype.

    Returns:
        (dx, dy) (Tensor[N], float32 each).
    """
    anchor = neighbours[:, :1, 1:2]
    member = (neighbours == anchor).to(torch.float32)
    right, below_left, down, below_right = (
        member[:, 0, 2], member[:, 1, 0], member[:, 1, 1], member[:, 1, 2]
    )
    count = 1.0 + right + below_left + down + below_right
    return (right + below_right - below_left) / count, (below_left + down + below_right) / count


def flat_top_rejected(cms: torch.Tensor, for_graph: bool = False) -> torch.Tensor:
    """Dense mask of the pixels that are NOT flat-top peaks, at any value (no
    data-dependent shape). Its complement holds the anchors.

    The threshold is left to the caller: the top-K layer compares only the values of
    the slots it keeps (an anchor above the threshold always outranks one below it),
    which saves a comparison over the whole map.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        for_graph (bool): scripted code that will become a graph (see
            :class:`~peaklayers.ops._layer.LocalPeakLayer`).

    Returns:
        Tensor[S, C, H, W], bool: see :func:`_rejected`.
    """
    samples, channels = cms.shape[0], cms.shape[1]
    height, width = cms.shape[2], cms.shape[3]
    # The rule looks at rows -2..3 and columns -3..3 around an anchor.
    padded = F.pad(cms, (3, 3, 2, 3), value=float("-inf"))
    flat, broken = _flat_and_broken(padded, for_graph)
    in_graph = for_graph
    if not torch.jit.is_scripting():
        in_graph = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if in_graph:
        return _rejected(flat, broken, height, width)  # graphs keep plain booleans
    # Eagerly, the boolean part runs on maps packed eight to a byte: its passes move
    # memory and hardly compute, so this makes it several times cheaper.
    rejected = _rejected(pack_maps(flat), pack_maps(broken), height, width)
    return unpack_maps(rejected, samples, channels)


def flat_top_scores(
    cms: torch.Tensor, for_graph: bool = False, group_pixels: int = 327680
) -> torch.Tensor:
    """The value of every flat-top anchor, at any value, ``-inf`` at every other pixel.

    Scripted on the CPU, the maps go through in groups: the rule makes a dozen passes
    over them, which then stay in the cache instead of going to memory and back (on
    (8, 17, 192, 192) float32 maps and 2 cores, 8 maps at a time took about two thirds
    of the time of all at once). Graphs being traced or exported take all maps at once,
    so that no size is fixed in them.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        for_graph (bool): scripted code that will become a graph (see
            :class:`~peaklayers.ops._layer.LocalPeakLayer`): all maps at once.
        group_pixels (int): the pixels of a group: as many maps as fit, in whole eights
            (the rule runs on maps packed eight to a byte), at least 8.

    Returns:
        Tensor[S, C, H, W], dtype of ``cms``.
    """
    empty = cms.new_full((), float("-inf"))
    if torch.jit.is_scripting() and not for_graph:
        if cms.is_cpu:
            samples, channels = cms.shape[0], cms.shape[1]
            height, width = cms.shape[2], cms.shape[3]
            group = max(1, group_pixels // (height * width * 8)) * 8
            if samples * channels > group:
                return _scores_in_groups(cms, group, empty)
    return torch.where(flat_top_rejected(cms, for_graph), empty, cms)


def _scores_in_groups(cms: torch.Tensor, group: int, empty: torch.Tensor) -> torch.Tensor:
    """:func:`flat_top_scores` of ``cms`` (Tensor[S, C, H, W]), ``group`` maps at a time."""
    samples, channels = cms.shape[0], cms.shape[1]
    height, width = cms.shape[2], cms.shape[3]
    maps = cms.reshape(samples * channels, 1, height, width)
    # Each group's scores are written in place: a cat would copy them all again.
    scores = torch.empty_like(maps)
    for start in range(0, samples * channels, group):
        part = maps[start : start + group]
        torch.where(flat_top_rejected(part), empty, part, out=scores[start : start + group])
    return scores.reshape(samples, channels, height, width)


def flat_top_maxima(
    cms: torch.Tensor, threshold: float, for_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat-top peaks above ``threshold``, checked only where no neighbour is higher.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): peaks must be strictly greater.
        for_graph (bool): scripted code that will become a graph (see
            :class:`~peaklayers.ops._layer.LocalPeakLayer`).

    Returns:
        rows (Tensor[N], int64): anchor row in ``cms.reshape(S * C * H, W)``.
        cols (Tensor[N], int64): anchor column.
        dx, dy (Tensor[N], float32): mean point of the flat top minus its anchor.
        Ordered by ``(s, c, y, x)`` of the anchors.
    """
    height = cms.shape[2]
    # Every candidate is above the threshold, so the rule itself need not compare.
    rows, cols = hot_row_maxima(cms, threshold, False)
    map_inds = rows // height
    ys = rows - map_inds * height
    row_steps = torch.arange(-2, 4, device=cms.device)  # the padding of flat_top_rejected
    col_steps = torch.arange(-3, 4, device=cms.device)
    windows = pixel_windows(cms, map_inds, cols, ys, row_steps, col_steps, float("-inf"))
    flat, broken = _flat_and_broken(windows[:, None], for_graph)
    keep = ~_rejected(flat, broken, 1, 1)[:, 0, 0, 0]
    dx, dy = merged_offsets(windows[keep, 2:4, 2:5])
    return rows[keep], cols[keep], dx, dy
