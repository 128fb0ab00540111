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
    """The value of every strict local maximum, at any value, ``-inf`` elsewhere.

    No threshold: the top-K layer compares only the values it keeps. The neighbours
    come from one padded copy of the maps and four maxima of shifted views (left and
    right, then the rows above and below over three columns, then the two together).

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.

    Returns:
        Tensor[S, C, H, W], dtype of ``cms``.
    """
    padded = F.pad(cms, (1, 1, 1, 1), value=float("-inf"))
    beside = torch.maximum(padded[..., :-2], padded[..., 2:])  # rows -1..H
    three = torch.maximum(beside, padded[..., 1:-1])
    around = torch.maximum(torch.maximum(three[:, :, :-2], three[:, :, 2:]), beside[:, :, 1:-1])
    return torch.where(cms > around, cms, cms.new_full((), float("-inf")))


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
    empty = torch.full_like(lines[:1], float("-inf"))
    above = torch.where(
        (ys > 0)[:, None], lines.index_select(0, (hot - 1).clamp(min=0)), empty
    )
    below = torch.where(
        (ys < height - 1)[:, None],
        lines.index_select(0, (hot + 1).clamp(max=lines.shape[0] - 1)),
        empty,
    )
    row = lines.index_select(0, hot)
    around = _around(above, row, below)
    if strict:
        found = row > torch.maximum(around, thr)
    else:
        found = (row >= around) & (row > thr)
    maxima = torch.nonzero(found)
    return hot[maxima[:, 0]], maxima[:, 1]


def strict_maxima(cms: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict local maxima above ``threshold``. See :func:`hot_row_maxima`."""
    return hot_row_maxima(cms, threshold, True)
