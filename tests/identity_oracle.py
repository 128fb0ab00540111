"""Independent reference for SPEC.md §3, written from the spec with scipy per group.

Nothing here calls peaklayers. Class-map lookup is a per-peak loop with Python's
``round`` (half to even); grouping calls ``linear_sum_assignment`` once per group.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment


def lookup(class_maps, points, sample_inds, stride=1.0):
    """class_maps (S, K, H, W) ndarray; points (N, 2); returns (N, K) float64, NaN rows."""
    maps = np.asarray(class_maps, dtype=np.float64)
    _, classes, height, width = maps.shape
    out = np.full((len(points), classes), np.nan)
    for i, ((x, y), s) in enumerate(zip(points, sample_inds, strict=True)):
        x, y = float(np.float32(x) / np.float32(stride)), float(np.float32(y) / np.float32(stride))
        if np.isnan(x) or np.isnan(y):
            continue
        col = min(max(round(x) if np.isfinite(x) else (0 if x < 0 else width - 1), 0), width - 1)
        row = min(max(round(y) if np.isfinite(y) else (0 if y < 0 else height - 1), 0),
                  height - 1)
        out[i] = maps[int(s), :, row, col]
    return out


def solve(probs):
    """Optimal assignment of one group: (rows, cols) from scipy, maximising the total."""
    return linear_sum_assignment(np.asarray(probs, dtype=np.float64), maximize=True)


def optimum(probs):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        return 0.0
    rows, cols = solve(probs)
    return float(probs[rows, cols].sum())


def lexicographic_assignment(probs):
    """The SPEC tie rule made explicit, for exactly summable (dyadic) probabilities.

    Peak by peak, the lowest class (then "none") that still allows an optimal total,
    checked by re-solving the rest with scipy. Returns the class of each peak, -1 none.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    target = optimum(probs)
    peaks, classes = list(range(n)), list(range(k))
    out = np.full(n, -1)
    gained = 0.0
    for p in range(n):
        rest_peaks = [q for q in peaks if q > p]
        for c in classes + [None]:
            if c is None:
                if len(rest_peaks) < len(classes):
                    continue  # "none" would leave fewer than min(n, K) pairs
                rest = probs[np.ix_(rest_peaks, classes)]
                if gained + optimum(rest) == target:
                    break
                continue
            others = [d for d in classes if d != c]
            rest = probs[np.ix_(rest_peaks, others)]
            if gained + probs[p, c] + optimum(rest) == target:
                out[p] = c
                gained += probs[p, c]
                classes = others
                break
        else:
            raise AssertionError("no optimal choice found")
    return out


def group_class_peaks(probs, sample_inds, channel_inds, n_samples, n_channels, assign=None):
    """(peak_inds, class_inds) per SPEC §3.1 steps 2-3, ordered by (sample, channel, peak)."""
    probs = np.asarray(probs, dtype=np.float64)
    peak_inds, class_inds = [], []
    for s in range(n_samples):
        for c in range(n_channels):
            members = np.flatnonzero((sample_inds == s) & (channel_inds == c))
            if len(members) == 0 or probs.shape[1] == 0:
                continue
            group = probs[members]
            if assign is None:
                rows, cols = solve(group)
            else:
                chosen = assign(group)
                rows = np.flatnonzero(chosen >= 0)
                cols = chosen[rows]
            for r, k in sorted(zip(rows, cols, strict=True)):
                if group[r, k] == group[r].max():
                    peak_inds.append(members[r])
                    class_inds.append(k)
    return np.array(peak_inds, dtype=np.int64), np.array(class_inds, dtype=np.int64)


def classify(points, vals, probs, sample_inds, channel_inds, n_samples, n_channels, assign=None):
    """SPEC §3.1 step 4 from per-peak probabilities: (points, point_vals, class_probs)."""
    probs = np.asarray(probs, dtype=np.float64)
    classes = probs.shape[1]
    out_points = np.full((n_samples, classes, n_channels, 2), np.nan)
    out_vals = np.full((n_samples, classes, n_channels), np.nan)
    out_probs = np.full((n_samples, classes, n_channels), np.nan)
    peak_inds, class_inds = group_class_peaks(
        probs, sample_inds, channel_inds, n_samples, n_channels, assign
    )
    for p, k in zip(peak_inds, class_inds, strict=True):
        s, c = sample_inds[p], channel_inds[p]
        out_points[s, k, c] = points[p]
        out_vals[s, k, c] = vals[p]
        out_probs[s, k, c] = probs[p, k]
    return out_points, out_vals, out_probs
