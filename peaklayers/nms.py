"""Strict local maxima (SPEC §1.2): the non-maximum suppression behind the local peaks.

A pixel is a peak iff its value is strictly greater than the threshold and strictly
greater than each of its 8 neighbours; neighbours outside the map do not exist. A
flat top of equal pixels therefore gives no peak (``x == maxpool(x)`` would keep all
of them), and a value equal to the threshold is dropped. Comparisons are made in the
dtype of the maps.

Two evaluations of that one rule live here side by side, tested against each other:

- :func:`strict_maxima_mask` is dense, fixed-shape and free of data-dependent shapes:
  a max-pool written as shifted slices and ``maximum`` (``MaxPool`` itself would
  include the centre pixel, and its dilated variants are not accepted everywhere).
  The top-K layer uses it.
- :func:`strict_maxima` visits only pixels above the threshold. Confidence maps are
  almost everywhere near zero, so this is several times cheaper than any dense pass
  on CPU. The variable-length local-peak layer, which needs ``NonZero`` anyway, uses it.
"""


import torch
import torch.nn.functional as F


def _below(threshold: float, like: torch.Tensor) -> torch.Tensor:
    """The threshold as a 0-d tensor of the maps' dtype, so comparisons happen in it.

    ``new_full`` takes the dtype from ``like`` when the graph runs, so a traced graph
    keeps comparing in the dtype of its input.
    """
    return like.new_full((), threshold)


def strict_maxima_mask(cms: torch.Tensor, threshold: float) -> torch.Tensor:
    """Dense mask of the strict local maxima above ``threshold``.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): peaks must be strictly greater.

    Returns:
        Tensor[S, C, H, W], bool.
    """
    padded = F.pad(cms, (1, 1, 1, 1), value=float("-inf"))
    # Max of the left and right neighbours, then of the three pixels of a row, for
    # every row of the padded map; the 8-neighbourhood max is separable from these.
    sides = torch.maximum(padded[:, :, :, :-2], padded[:, :, :, 2:])
    rows3 = torch.maximum(sides, padded[:, :, :, 1:-1])
    around = torch.maximum(
        sides[:, :, 1:-1], torch.maximum(rows3[:, :, :-2], rows3[:, :, 2:])
    )
    return cms > torch.maximum(around, _below(threshold, cms))


def strict_maxima(cms: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict local maxima above ``threshold``, found from the pixels above it.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, floating point.
        threshold (float): peaks must be strictly greater.

    Returns:
        (rows, cols): ``rows`` (Tensor[N], int64) indexes ``cms.reshape(S * C * H, W)``
        (so ``row = (s * C + c) * H + y``), ``cols`` (Tensor[N], int64) is ``x``.
        Ordered by ``(s, c, y, x)``.
    """
    height, width = cms.shape[2], cms.shape[3]
    values = cms.reshape(-1)
    lines = values.view(-1, width)
    thr = _below(threshold, cms)

    # Row maxima are one cheap reduction; only rows reaching above the threshold can
    # hold a peak, and only those are compared pixel by pixel.
    hot_rows = torch.nonzero(lines.amax(dim=1) > thr).squeeze(1)
    hot_lines = lines.index_select(0, hot_rows)
    hot = torch.nonzero(hot_lines > thr)
    rows = hot_rows[hot[:, 0]]
    cols = hot[:, 1]
    centre = hot_lines[hot[:, 0], cols]

    ys = rows - (rows // height) * height
    # The 8 neighbours, as (row, column) steps.
    dy = torch.tensor([-1, -1, -1, 0, 0, 1, 1, 1], device=cms.device)
    dx = torch.tensor([-1, 0, 1, -1, 1, -1, 0, 1], device=cms.device)
    n_rows = ys[:, None] + dy
    n_cols = cols[:, None] + dx
    inside = (n_rows >= 0) & (n_rows < height) & (n_cols >= 0) & (n_cols < width)
    flat = (rows[:, None] + dy) * width + n_cols
    neighbours = values[flat.clamp(0, values.shape[0] - 1)]
    is_peak = ((centre[:, None] > neighbours) | ~inside).all(dim=1)
    return rows[is_peak], cols[is_peak]
