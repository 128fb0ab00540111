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


def local_peaks(cms, threshold, refinement="integral", patch_size=5, stride=1.0):
    """Returns points (N, 2), vals (N,), sample_inds (N,), channel_inds (N,)."""
    maps = as_exact(cms)
    thr = in_dtype(threshold, cms.dtype)
    samples, channels, height, width = maps.shape
    points, vals, sample_inds, channel_inds = [], [], [], []
    for s in range(samples):
        for y in range(height):
            for x in range(width):
                for c in range(channels):
                    if not is_strict_peak(maps[s, c], x, y, thr):
                        continue
                    px, py = float(x), float(y)
                    if refinement == "integral":
                        dx, dy = integral_offset(maps[s, c], x, y, patch_size)
                        px, py = px + dx, py + dy
                    points.append((px * stride, py * stride))
                    vals.append(maps[s, c, y, x])
                    sample_inds.append(s)
                    channel_inds.append(c)
    return (
        np.array(points, dtype=np.float64).reshape(-1, 2),
        np.array(vals, dtype=np.float64),
        np.array(sample_inds, dtype=np.int64),
        np.array(channel_inds, dtype=np.int64),
    )


def topk_peaks(cms, k, threshold, refinement="integral", patch_size=5, stride=1.0):
    """Returns points (S, C, k, 2), vals (S, C, k), valid (S, C, k)."""
    points, vals, sample_inds, channel_inds = local_peaks(
        cms, threshold, refinement, patch_size, stride
    )
    samples, channels, _, width = cms.shape
    out_points = np.full((samples, channels, k, 2), np.nan)
    out_vals = np.zeros((samples, channels, k))
    valid = np.zeros((samples, channels, k), dtype=bool)
    rough = local_peaks(cms, threshold, None)[0]
    for s in range(samples):
        for c in range(channels):
            mine = [i for i in range(len(vals)) if sample_inds[i] == s and channel_inds[i] == c]
            # value descending, then row-major position
            mine.sort(key=lambda i: (-vals[i], rough[i, 1] * width + rough[i, 0]))
            for slot, i in enumerate(mine[:k]):
                out_points[s, c, slot] = points[i]
                out_vals[s, c, slot] = vals[i]
                valid[s, c, slot] = True
    return out_points, out_vals, valid
