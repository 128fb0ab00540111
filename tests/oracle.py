"""Independent reference for SPEC.md §1, written as plain loops over pixels.

Nothing here calls peaklayers. Maps are handled as float64 arrays holding the exact
values of the original dtype, with the threshold given as it rounds in that dtype, so
float64 comparisons equal comparisons in the map dtype.
"""

import math

import numpy as np
import torch


def in_dtype(threshold: float, dtype: torch.dtype) -> float:
    """``threshold`` as it is represented in ``dtype`` (how the layers compare)."""
    return float(torch.tensor(threshold, dtype=dtype).double())


def as_exact(cms: torch.Tensor) -> np.ndarray:
    """The map values as float64 (exact for every floating dtype up to float64)."""
    return cms.detach().double().cpu().numpy()


def _sample(image: np.ndarray, x: float, y: float) -> float:
    """Bilinear sample at pixel coordinates, zero outside (grid_sample semantics)."""
    height, width = image.shape
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if wy == 0 or wx == 0:
                continue
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * image[yy, xx]
    return total


def integral_offset(image: np.ndarray, x: int, y: int, k: int):
    """(dx, dy) of SPEC §1.3 for the peak at pixel (x, y) of one map."""
    g = [i - (k - 1) / 2 for i in range(k)]
    num_x = num_y = den = 0.0
    for gy in g:
        for gx in g:
            p = _sample(image, x + gx, y + gy)
            num_x += p * gx
            num_y += p * gy
            den += p
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float64(num_x) / den, np.float64(num_y) / den


def global_peaks(cms, threshold, refinement="integral", patch_size=5, stride=1.0):
    """Returns points (S, C, 2) float64 and vals (S, C) float64."""
    maps = as_exact(cms)
    thr = in_dtype(threshold, cms.dtype)
    samples, channels, height, width = maps.shape
    points = np.full((samples, channels, 2), np.nan)
    vals = np.zeros((samples, channels))
    for s in range(samples):
        for c in range(channels):
            best, at = -math.inf, (0, 0)
            for y in range(height):
                for x in range(width):
                    if maps[s, c, y, x] > best:
                        best, at = maps[s, c, y, x], (x, y)
            if best < thr:
                continue
            x, y = at
            px, py = float(x), float(y)
            if refinement == "integral":
                dx, dy = integral_offset(maps[s, c], x, y, patch_size)
                px, py = px + dx, py + dy
            points[s, c] = (px * stride, py * stride)
            vals[s, c] = best
    return points, vals


def is_strict_peak(image: np.ndarray, x: int, y: int, thr: float) -> bool:
    height, width = image.shape
    v = image[y, x]
    if not v > thr:
        return False
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dx or dy) and 0 <= y + dy < height and 0 <= x + dx < width:
                if not v > image[y + dy, x + dx]:
                    return False
    return True


def flat_tops(image: np.ndarray, thr: float):
    """Peaks of one map under ``flat_tops="merge"``, from the issue's wording.

    Every plateau (8-connected set of equal pixels) that fits in a 2x2 block, is above
    the threshold and is strictly higher than every pixel around it is one peak.
    Returns a list of (anchor_x, anchor_y, mean_x, mean_y), anchor = first pixel of
    the plateau in row-major order.
    """
    height, width = image.shape
    seen = np.zeros(image.shape, dtype=bool)
    found = []
    for y in range(height):
        for x in range(width):
            if seen[y, x]:
                continue
            v = image[y, x]
            plateau, todo = [], [(y, x)]
            seen[y, x] = True
            while todo:
                cy, cx = todo.pop()
                plateau.append((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < height and 0 <= nx < width and not seen[ny, nx]:
                            if image[ny, nx] == v:
                                seen[ny, nx] = True
                                todo.append((ny, nx))
            ys = [p[0] for p in plateau]
            xs = [p[1] for p in plateau]
            if max(ys) - min(ys) > 1 or max(xs) - min(xs) > 1 or not v > thr:
                continue
            members = set(plateau)
            higher_around = False
            for cy, cx in plateau:
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if (ny, nx) in members or not (0 <= ny < height and 0 <= nx < width):
                            continue
                        if not image[ny, nx] < v:
                            higher_around = True
            if higher_around:
                continue
            ay, ax = min(plateau)
            found.append((ax, ay, sum(xs) / len(xs), sum(ys) / len(ys)))
    return found


def _map_peaks(image, thr, flat):
    """(anchor_x, anchor_y, x, y) of every peak of one map."""
    if flat == "merge":
        return flat_tops(image, thr)
    height, width = image.shape
    return [
        (x, y, float(x), float(y))
        for y in range(height)
        for x in range(width)
        if is_strict_peak(image, x, y, thr)
    ]


def local_peaks(
    cms, threshold, refinement="integral", patch_size=5, stride=1.0, flat_tops="drop"
):
    """Returns points (N, 2), vals (N,), sample_inds (N,), channel_inds (N,), anchors (N, 2)."""
    maps = as_exact(cms)
    thr = in_dtype(threshold, cms.dtype)
    samples, channels, height, width = maps.shape
    rows = []
    for s in range(samples):
        found = []
        for c in range(channels):
            for ax, ay, px, py in _map_peaks(maps[s, c], thr, flat_tops):
                if refinement == "integral":
                    cx, cy = math.floor(px), math.floor(py)
                    dx, dy = integral_offset(maps[s, c], cx, cy, patch_size)
                    px, py = cx + dx, cy + dy
                found.append(((ay, ax, c), (px * stride, py * stride), maps[s, c, ay, ax]))
        for (ay, ax, c), point, value in sorted(found, key=lambda item: item[0]):
            rows.append((point, value, s, c, (ax, ay)))
    return (
        np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, 2),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.int64),
        np.array([r[3] for r in rows], dtype=np.int64),
        np.array([r[4] for r in rows], dtype=np.int64).reshape(-1, 2),
    )


def topk_peaks(
    cms, k, threshold, refinement="integral", patch_size=5, stride=1.0, flat_tops="drop"
):
    """Returns points (S, C, k, 2), vals (S, C, k), valid (S, C, k)."""
    points, vals, sample_inds, channel_inds, anchors = local_peaks(
        cms, threshold, refinement, patch_size, stride, flat_tops
    )
    samples, channels, _, width = cms.shape
    out_points = np.full((samples, channels, k, 2), np.nan)
    out_vals = np.zeros((samples, channels, k))
    valid = np.zeros((samples, channels, k), dtype=bool)
    for s in range(samples):
        for c in range(channels):
            mine = [i for i in range(len(vals)) if sample_inds[i] == s and channel_inds[i] == c]
            # value descending, then row-major position (of the first pixel)
            mine.sort(key=lambda i: (-vals[i], anchors[i, 1] * width + anchors[i, 0]))
            for slot, i in enumerate(mine[:k]):
                out_points[s, c, slot] = points[i]
                out_vals[s, c, slot] = vals[i]
                valid[s, c, slot] = True
    return out_points, out_vals, valid
