"""Strict local maxima (SPEC §1.2): the non-maximum suppression behind the local peaks.

A pixel is a peak iff its value is strictly greater than the threshold and strictly
greater than each of its 8 neighbours; neighbours outside the map do not exist. A
flat top of equal pixels therefore gives no peak (``x == maxpool(x)`` would keep all
of them), and a value equal to the threshold is dropped. Comparisons are made in the
dtype of the maps.

The neighbourhood is written once, in :func:`_around`, as a 3x3 max-pool without
the centre built from shifted slices and ``maximum`` (``MaxPool`` itself includes the
centre, and its dilated variants are not accepted by every backend). It is applied

- densely by :func:`strict_maxima_mask`: fixed shapes, no ``NonZero``;
- to the rows that reach above the threshold only, by :func:`hot_row_maxima`.
  Confidence maps are near zero almost everywhere, so this is several times
  cheaper on CPU than any dense pass; the variable-length local-peak layer, which
  needs ``NonZero`` anyway, uses it.

The top-K layer uses :func:`strict_maxima_scores`, the same rule from one map padded
on all sides (fewer passes over the maps, no threshold).
"""


import torch
import torch.nn.functional as F

from ._graph import in_graph


def _below(threshold: float, like: torch.Tensor) -> torch.Tensor:
    """The threshold as a 0-d tensor of the maps' dtype, so comparisons happen in it.

    ``new_full`` takes the dtype from ``like`` when the graph runs, so a traced graph
    keeps comparing in the dtype of its input.
    """
    return like.new_full((), threshold)


def _around(above: torch.Tensor, row: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
    """The largest of the 8 neighbours of each pixel of ``row``, given the rows above
    and below (``-inf`` where there is none). A 3x3 max-pool without the centre.

    Args:
        above, row, below (Tensor[..., W]): three neighbouring rows, one dtype.

    Returns:
        Tensor[..., W], same dtype.
    """
    vertical = torch.maximum(above, below)
    columns = F.pad(torch.maximum(vertical, row), (1, 1), value=float("-inf"))
    return torch.maximum(vertical, torch.maximum(columns[..., :-2], columns[..., 2:]))


def _around_at_least(
    above: torch.Tensor, row: torch.Tensor, below: torch.Tensor, floor: torch.Tensor
) -> torch.Tensor:
    """``maximum(_around(above, row, below), floor)`` for eager code: the side columns
    are folded in place into a new tensor instead of padding (no copy of the rows).

    Args:
        above, row, below (Tensor[N, W]): three neighbouring rows, one dtype.
        floor (Tensor[]): same dtype.

    Returns:
        Tensor[N, W], same dtype.
    """
    vertical = torch.maximum(above, below)
    three = torch.maximum(vertical, row)
    around = torch.maximum(vertical, floor)
    has_left, has_right = around[:, 1:], around[:, :-1]
    torch.maximum(has_left, three[:, :-1], out=has_left)
    torch.maximum(has_right, three[:, 1:], out=has_right)
    return around


def strict_maxima_mask(cms: torch.Tensor, threshold: float) -> torch.Tensor:
    """Dense mask of the strict local maxima above ``threshold``.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): peaks must be strictly greater.

    Returns:
        Tensor[S, C, H, W], bool.
    """
    padded = F.pad(cms, (0, 0, 1, 1), value=float("-inf"))
    around = _around(padded[:, :, :-2], cms, padded[:, :, 2:])
    return cms > torch.maximum(around, _below(threshold, cms))


def strict_maxima_scores(cms: torch.Tensor) -> torch.Tensor:
    """The value of every strict local maximum, at any value, ``-inf`` elsewhere, with
    a column of ``-inf`` on each side of the maps.

    No threshold: the top-K layer compares only the values it keeps. The maps are
    padded once and laid out flat, pixel after pixel; a neighbour is then the same flat
    array shifted by 1 (left, right) or by a padded row (above, below). Every shifted
    view is one contiguous block per map, so that ONNX Runtime, which copies each
    slice, copies blocks rather than rows, and eager torch runs its fast kernels.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.

    Returns:
        Tensor[S, C, H, W + 2], dtype of ``cms``: column ``x + 1`` holds pixel ``x``.
    """
    samples, channels, height, width = cms.shape[0], cms.shape[1], cms.shape[2], cms.shape[3]
    # Two rows above and below: every shifted view below starts and ends inside.
    padded = F.pad(cms, (1, 1, 2, 2), value=float("-inf"))
    side = width + 2
    flat = _flat(padded)
    length = flat.shape[2]
    beside = torch.maximum(flat[:, :, : length - 2], flat[:, :, 2:])  # of pixel j + 1
    three = torch.maximum(beside, flat[:, :, 1 : length - 1])
    count = height * side  # the pixels of rows 0..H-1, padding columns included
    start = 2 * side
    around = torch.maximum(
        torch.maximum(three[:, :, side - 1 : side - 1 + count],
                      three[:, :, 3 * side - 1 : 3 * side - 1 + count]),
        beside[:, :, start - 1 : start - 1 + count],
    )
    centre = flat[:, :, start : start + count]
    scores = torch.where(centre > around, centre, cms.new_full((), float("-inf")))
    if torch.jit.is_tracing():
        return scores.reshape(-1, channels, height, side)  # see _flat
    return scores.reshape(samples, channels, height, side)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t (Tensor[S, C, H, W])`` as ``Tensor[S, C, H * W]``."""
    if torch.jit.is_tracing():
        # The TorchScript-based ONNX exporter writes the computed H * W as -1, which
        # ONNX Runtime cannot resolve for an empty batch; a -1 batch it can.
        return t.reshape(-1, t.shape[1], t.shape[2] * t.shape[3])
    return t.flatten(2)


def hot_row_maxima(
    cms: torch.Tensor, threshold: float, strict: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local maxima above ``threshold``, found from the rows reaching above it.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): maxima must be strictly greater.
        strict (bool): True for strict maxima (the peaks of SPEC §1.2); False for
            pixels no neighbour exceeds (which includes every pixel of a flat top).

    Returns:
        (rows, cols): ``rows`` (Tensor[N], int64) indexes ``cms.reshape(S * C * H, W)``
        (so ``row = (s * C + c) * H + y``), ``cols`` (Tensor[N], int64) is ``x``.
        Ordered by ``(s, c, y, x)``.
    """
    height, width = cms.shape[2], cms.shape[3]
    lines = cms.reshape(-1, width)
    thr = _below(threshold, cms)

    # Row maxima are one cheap reduction; only rows reaching above the threshold can
    # hold a peak, and only those (with their neighbour rows) are compared.
    hot = torch.nonzero(lines.amax(dim=1) > thr)[:, 0]
    ys = hot - (hot // height) * height
    row = lines.index_select(0, hot)
    if _eager() and height > 1:
        # A missing neighbour row is replaced by the other one (the larger of the two is
        # then the one that exists): two index selections, no masking of whole rows.
        above = lines.index_select(0, torch.where(ys > 0, hot - 1, hot + 1))
        below = lines.index_select(0, torch.where(ys < height - 1, hot + 1, hot - 1))
        if strict and not row.requires_grad:  # out= arguments refuse autograd
            maxima = torch.nonzero(row > _around_at_least(above, row, below, thr))
            return hot[maxima[:, 0]], maxima[:, 1]
    else:
        empty = torch.full_like(lines[:1], float("-inf"))
        above = torch.where(
            (ys > 0)[:, None], lines.index_select(0, (hot - 1).clamp(min=0)), empty
        )
        below = torch.where(
            (ys < height - 1)[:, None],
            lines.index_select(0, (hot + 1).clamp(max=lines.shape[0] - 1)),
            empty,
        )
    around = _around(above, row, below)
    if strict:
        found = row > torch.maximum(around, thr)
    else:
        found = (row >= around) & (row > thr)
    maxima = torch.nonzero(found)
    return hot[maxima[:, 0]], maxima[:, 1]


def _eager() -> bool:
    """Neither scripted nor making a graph: shapes may steer Python here."""
    if not torch.jit.is_scripting():
        return not in_graph()
    return False


def strict_maxima(cms: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict local maxima above ``threshold``. See :func:`hot_row_maxima`."""
    return hot_row_maxima(cms, threshold, True)
