"""Confidence-map families the tests (and the export tests) run every layer on."""

import math

import torch


def gaussians(samples, channels, height, width, peaks=3, sigma=2.0, seed=0, dtype=torch.float32):
    """Sums of Gaussian blobs at random sub-pixel centres (some near the borders)."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    cms = torch.zeros(samples, channels, height, width, dtype=torch.float64)
    for s in range(samples):
        for c in range(channels):
            for _ in range(peaks):
                cx = (torch.rand((), generator=gen, dtype=torch.float64) * 1.2 - 0.1) * (width - 1)
                cy = (torch.rand((), generator=gen, dtype=torch.float64) * 1.2 - 0.1) * (height - 1)
                amp = 0.3 + 0.7 * torch.rand((), generator=gen, dtype=torch.float64)
                cms[s, c] += amp * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return cms.to(dtype)


def plateaus(dtype=torch.float32):
    """Flat tops of 2 to 6 equal pixels, beside single strict peaks, on one map each."""
    shapes = [
        [(0, 0), (0, 1)],  # 2 side by side
        [(0, 0), (1, 0)],  # 2 stacked
        [(0, 0), (1, 1)],  # 2 diagonal
        [(0, 0), (0, 1), (1, 0)],  # L of 3
        [(0, 0), (0, 1), (1, 0), (1, 1)],  # 2 x 2
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)],  # 5
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)],  # 2 x 3
    ]
    cms = torch.zeros(1, len(shapes), 12, 14, dtype=torch.float64)
    for c, shape in enumerate(shapes):
        for dy, dx in shape:
            cms[0, c, 3 + dy, 4 + dx] = 0.9
        for y in range(2, 7):  # a lower ring around the top
            for x in range(3, 8):
                if cms[0, c, y, x] == 0:
                    cms[0, c, y, x] = 0.5
        cms[0, c, 9, 11] = 0.7  # a strict single peak elsewhere
    return cms.to(dtype)


def borders(dtype=torch.float32):
    """Peaks on every edge and corner of odd and even sized maps."""
    cms = torch.full((2, 3, 7, 8), 0.1, dtype=torch.float64)
    height, width = 7, 8
    spots = [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1), (0, 4), (3, 0),
             (height - 1, 3), (2, width - 1)]
    for i, (y, x) in enumerate(spots):
        s, c = divmod(i, 3)
        s %= 2
        cms[s, c, y, x] = 0.9 - 0.01 * i
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy or dx) and 0 <= y + dy < height and 0 <= x + dx < width:
                    cms[s, c, y + dy, x + dx] = max(float(cms[s, c, y + dy, x + dx]), 0.5)
    return cms.to(dtype)


def at_threshold(threshold, dtype=torch.float32):
    """Isolated peaks exactly at, just above and just below the threshold (in dtype)."""
    exact = torch.tensor(threshold, dtype=dtype)
    above = torch.nextafter(exact.double(), torch.tensor(math.inf, dtype=torch.float64)).to(dtype)
    if above == exact:  # nextafter in float64 rounds back in low precision
        above = (exact.double() * (1 + 2**-6)).to(dtype)
    below = (exact.double() * (1 - 2**-6)).to(dtype)
    cms = torch.zeros(1, 3, 9, 9, dtype=dtype)
    cms[0, :, 4, 4] = torch.stack([exact, above, below])
    cms[0, :, 1, 1] = exact
    return cms


def noisy(samples, channels, height, width, seed=0, dtype=torch.float32, negative=False):
    gen = torch.Generator().manual_seed(seed)
    cms = torch.rand(samples, channels, height, width, generator=gen, dtype=torch.float64)
    if negative:
        cms = cms * 2 - 1.5
    return cms.to(dtype)
