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

The rule is written once, in :func:`_anchors`, on a map padded with ``-inf``; the
top-K layer applies it densely (:func:`flat_top_mask`), the local layer only to the
pixels no neighbour exceeds (:func:`flat_top_maxima`), through 4 x 5 windows.
"""

import torch
import torch.nn.functional as F

from ._windows import pixel_windows
from .nms import hot_row_maxima


def _at(t: torch.Tensor, dy: int, dx: int, top: int, left: int, height: int, width: int):
    """The ``height x width`` view of ``t`` shifted by ``(dy, dx)`` from ``(top, left)``."""
    return t[..., top + dy : top + dy + height, left + dx : left + dx + width]


def _links(padded: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """Whether each pixel equals its neighbour to the right, below, below-right and
    below-left, and the column of pixel ``x = 0`` in each map (row ``y = 0`` is 1).

    Every equality the rule needs is one of these: it only ever compares a pixel of a
    flat top (value ``v``) with a neighbour of that pixel.
    """
    links = [
        padded[..., :, :-1] == padded[..., :, 1:],
        padded[..., :-1, :] == padded[..., 1:, :],
        padded[..., :-1, :-1] == padded[..., 1:, 1:],
        padded[..., :-1, 1:] == padded[..., 1:, :-1],
    ]
    return links, [2, 2, 2, 1]


def _linked(
    links: list[torch.Tensor], lefts: list[int], which: int, dy: int, dx: int,
    size: tuple[int, int],
) -> torch.Tensor:
    """Whether the pixel at ``(dy, dx)`` from each pixel equals its ``which`` neighbour."""
    return _at(links[which], dy, dx, 1, lefts[which], size[0], size[1])


def _anchors(padded: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Anchors (first pixels) of the flat tops that make a peak.

    Args:
        padded (Tensor[..., height + 3, width + 4]): maps padded with ``-inf``: 1 row
            above, 2 below and 2 columns on each side.
        height, width (int): size of the maps inside the padding.

    Returns:
        Tensor[..., height, width], bool.
    """
    size = (height, width)
    links, lefts = _links(padded)
    RIGHT, DOWN, DOWN_RIGHT, DOWN_LEFT = 0, 1, 2, 3  # indices into links

    # Maps over the pixels a flat top's members can be, rows 0..H and columns -1..W
    # (pixel (y, x) at [y, x + 1]). "higher": some neighbour exceeds the pixel (its 3x3
    # max, centre included, is not itself).
    rows3 = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    max3 = torch.maximum(torch.maximum(rows3[..., :-2, :], rows3[..., 1:-1, :]), rows3[..., 2:, :])
    higher = max3 != padded[..., 1:-1, 1:-1]
    # Whether a member of a flat top sitting right of, below, below-right or below-left
    # of the anchor breaks the top: it has a higher neighbour, or an equal one outside
    # the 2x2 block (on its right side, below it, or on its left side). Its other
    # neighbours are the anchor's: any equal one there is a member or was rejected.
    region = (height + 1, width + 2)
    equal_below = (
        _linked(links, lefts, DOWN, 0, -1, region)
        | _linked(links, lefts, DOWN_RIGHT, 0, -1, region)
        | _linked(links, lefts, DOWN_LEFT, 0, -1, region)
    )
    right_breaks = (
        higher
        | _linked(links, lefts, RIGHT, 0, -1, region)
        | _linked(links, lefts, DOWN_RIGHT, 0, -1, region)
        | _linked(links, lefts, DOWN_LEFT, -1, 0, region)
    )
    below_breaks = higher | equal_below
    below_right_breaks = right_breaks | equal_below
    below_left_breaks = (
        below_breaks
        | _linked(links, lefts, RIGHT, 0, -2, region)
        | _linked(links, lefts, DOWN_RIGHT, -1, -2, region)
    )

    right = _linked(links, lefts, RIGHT, 0, 0, size)
    down = _linked(links, lefts, DOWN, 0, 0, size)
    down_right = _linked(links, lefts, DOWN_RIGHT, 0, 0, size)
    down_left = _linked(links, lefts, DOWN_LEFT, 0, 0, size)
    # The anchor is flat and the first pixel of its flat top (no equal neighbour before
    # it in row-major order); a top with the pixel below-left fits in a 2x2 block only
    # without the pixels right and below-right; no member breaks it.
    rejected = (
        _region(higher, 0, 0, size)
        | _linked(links, lefts, RIGHT, 0, -1, size)
        | _linked(links, lefts, DOWN_RIGHT, -1, -1, size)
        | _linked(links, lefts, DOWN, -1, 0, size)
        | _linked(links, lefts, DOWN_LEFT, -1, 1, size)
        | (down_left & (right | down_right | _region(below_left_breaks, 1, -1, size)))
        | (right & _region(right_breaks, 0, 1, size))
        | (down & _region(below_breaks, 1, 0, size))
        | (down_right & _region(below_right_breaks, 1, 1, size))
    )
    # No threshold here: both callers apply it to far fewer values (see them).
    return ~rejected


def _region(t: torch.Tensor, dy: int, dx: int, size: tuple[int, int]) -> torch.Tensor:
    """The view at ``(dy, dx)`` from each pixel of a map over rows 0..H, columns -1..W."""
    return _at(t, dy, dx, 0, 1, size[0], size[1])


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


def flat_top_mask(cms: torch.Tensor) -> torch.Tensor:
    """Dense anchors of the flat-top peaks, at any value (no data-dependent shape).

    The threshold is left to the caller: the top-K layer compares only the values of
    the slots it keeps (an anchor above the threshold always outranks one below it),
    which saves a comparison over the whole map.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.

    Returns:
        Tensor[S, C, H, W], bool: the anchors (see :func:`_anchors`).
    """
    height, width = cms.shape[2], cms.shape[3]
    # The rule looks at rows -1..2 and columns -2..2 around an anchor.
    padded = F.pad(cms, (2, 2, 1, 2), value=float("-inf"))
    return _anchors(padded, height, width)


def flat_top_maxima(
    cms: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat-top peaks above ``threshold``, checked only where no neighbour is higher.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): peaks must be strictly greater.

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
    row_steps = torch.arange(-1, 3, device=cms.device)  # the padding of flat_top_mask
    col_steps = torch.arange(-2, 3, device=cms.device)
    windows = pixel_windows(cms, map_inds, cols, ys, row_steps, col_steps, float("-inf"))
    keep = _anchors(windows, 1, 1)[:, 0, 0]
    dx, dy = merged_offsets(windows[keep, 1:3, 1:4])
    return rows[keep], cols[keep], dx, dy
