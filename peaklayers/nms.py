"""Strict local maxima (SPEC §1.2): the non-maximum suppression behind the local peaks.

A pixel is a peak iff its value is strictly greater than the threshold and strictly
greater than each of its 8 neighbours; neighbours outside the map do not exist. A
flat top of equal pixels therefore gives no peak (``x == maxpool(x)`` would keep all
of them), and a value equal to the threshold is dropped. Comparisons are made in the
dtype of the maps.

The rule is written once, in :func:`_strict_rows`, as a 3x3 max-pool without the
centre built from shifted slices and ``maximum`` (``MaxPool`` itself includes the
centre, and its dilated variants are not accepted by every backend). It is applied

- densely by :func:`strict_maxima_mask`: fixed shapes, no ``NonZero``; the top-K
  layer uses it;
- to the rows that reach above the threshold only, by :func:`strict_maxima`.
  Confidence maps are near zero almost everywhere, so this is several times
  cheaper on CPU than any dense pass; the variable-length local-peak layer, which
  needs ``NonZero`` anyway, uses it.
"""


import torch
import torch.nn.functional as F


def _below(threshold: float, like: torch.Tensor) -> torch.Tensor:
    """The threshold as a 0-d tensor of the maps' dtype, so comparisons happen in it.

    ``new_full`` takes the dtype from ``like`` when the graph runs, so a traced graph
    keeps comparing in the dtype of its input.
    """
    return like.new_full((), threshold)


def _strict_rows(
    above: torch.Tensor, row: torch.Tensor, below: torch.Tensor, threshold: torch.Tensor
) -> torch.Tensor:
    """Which pixels of ``row`` are strict maxima of their 3x3 neighbourhood and above
    ``threshold``, given the rows above and below (``-inf`` where there is none).

    Args:
        above, row, below (Tensor[..., W]): three neighbouring rows, one dtype.
        threshold (Tensor[], same dtype).

    Returns:
        Tensor[..., W], bool.
    """
    vertical = torch.maximum(above, below)
    columns = F.pad(torch.maximum(vertical, row), (1, 1), value=float("-inf"))
    around = torch.maximum(vertical, torch.maximum(columns[..., :-2], columns[..., 2:]))
    return row > torch.maximum(around, threshold)


def strict_maxima_mask(cms: torch.Tensor, threshold: float) -> torch.Tensor:
    """Dense mask of the strict local maxima above ``threshold``.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): peaks must be strictly greater.

    Returns:
        Tensor[S, C, H, W], bool.
    """
    padded = F.pad(cms, (0, 0, 1, 1), value=float("-inf"))
    return _strict_rows(padded[:, :, :-2], cms, padded[:, :, 2:], _below(threshold, cms))


def strict_maxima(cms: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict local maxima above ``threshold``, found from the rows reaching above it.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): peaks must be strictly greater.

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
    hot = torch.nonzero(lines.amax(dim=1) > thr).squeeze(1)
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
    peaks = torch.nonzero(_strict_rows(above, lines.index_select(0, hot), below, thr))
    return hot[peaks[:, 0]], peaks[:, 1]
