"""The top-K layer's two-step selection (best rows first, then their pixels) and the
dense strict-maximum scores it reads, against plain loops over pixels (SPEC §1.2, §1.4)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from peaklayers.ops.nms import strict_maxima_scores
from test_peaks import check_topk


def loop_scores(cms):
    """Value of each pixel greater than every neighbour inside the map, else -inf."""
    cms = cms.double().numpy()
    out = np.full(cms.shape, -np.inf)
    samples, channels, height, width = cms.shape
    for s in range(samples):
        for c in range(channels):
            for y in range(height):
                for x in range(width):
                    v = cms[s, c, y, x]
                    neighbours = [
                        cms[s, c, y + dy, x + dx]
                        for dy in (-1, 0, 1)
                        for dx in (-1, 0, 1)
                        if (dy or dx) and 0 <= y + dy < height and 0 <= x + dx < width
                    ]
                    if all(v > n for n in neighbours):
                        out[s, c, y, x] = v
    return out


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(1, 2),
                                    st.integers(1, 7), st.integers(1, 7)),
              elements=st.sampled_from([-math.inf, -1.0, 0.0, 0.25, 0.5, 1.0, math.inf])))
def test_scores_equal_loop(cms):
    cms = torch.from_numpy(cms)
    scores = strict_maxima_scores(cms)
    assert scores.shape == (*cms.shape[:3], cms.shape[3] + 2)
    assert torch.all(scores[..., [0, -1]] == -math.inf)
    np.testing.assert_array_equal(scores[..., 1:-1].double().numpy(), loop_scores(cms))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_scores_keep_dtype(dtype):
    cms = torch.rand(2, 3, 9, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    scores = strict_maxima_scores(cms)[..., 1:-1]
    assert scores.dtype == dtype
    np.testing.assert_array_equal(scores.double().numpy(), loop_scores(cms))


def lattice(height, width, spacing, values):
    """Isolated single-pixel peaks on a lattice, values taken in turn from ``values``."""
    cms = torch.zeros(1, 1, height, width)
    spots = [(y, x) for y in range(0, height, spacing) for x in range(0, width, spacing)]
    for i, (y, x) in enumerate(spots):
        cms[0, 0, y, x] = values[i % len(values)]
    return cms


@pytest.mark.parametrize("k", [1, 2, 5, 7, 12])
def test_equal_peaks_across_rows(k):
    """Many equal peaks on many rows: the k-th slot cuts through a run of ties, and the
    rows holding the chosen peaks are not the rows with the most peaks."""
    check_topk(lattice(13, 11, 2, [0.5]), k, 0.2, None)
    check_topk(lattice(13, 11, 2, [0.5, 0.7, 0.5, 0.3]), k, 0.2, None)


@pytest.mark.parametrize("k", [3, 9])
def test_best_peaks_in_few_rows(k):
    """All high peaks share two rows; a lower row maximum elsewhere must not take a slot."""
    cms = lattice(12, 20, 2, [0.3])
    cms[0, 0, 4, ::2] = torch.linspace(0.6, 0.9, 10)
    cms[0, 0, 8, 1::2] = 0.95
    check_topk(cms, k, 0.2, None)


@pytest.mark.parametrize("shape", [(1, 2, 1, 30), (1, 2, 30, 1), (2, 1, 3, 3)])
@pytest.mark.parametrize("k", [1, 4, 40])
def test_more_slots_than_rows_or_columns(shape, k):
    gen = torch.Generator().manual_seed(k)
    cms = torch.rand(shape, generator=gen)
    check_topk(cms, k, 0.1, None)
    check_topk(cms, k, 0.1, None, flat_tops="merge")


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(1, 2),
                                    st.integers(1, 8), st.integers(1, 8)),
              elements=st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9])),
       st.integers(1, 9), st.sampled_from(["drop", "merge"]))
def test_ties_match_oracle(cms, k, flat_tops):
    check_topk(torch.from_numpy(cms), k, 0.2, None, flat_tops=flat_tops)


@pytest.mark.parametrize("flat_tops", ["drop", "merge"])
@pytest.mark.parametrize("shape", [(0, 3, 6, 5), (2, 0, 6, 5), (3, 4, 1, 1), (2, 3, 1, 9)])
def test_empty_and_tiny_maps(shape, flat_tops):
    """No maps, no pixels beside the peak, k beyond every pixel: both selections."""
    gen = torch.Generator().manual_seed(sum(shape))
    check_topk(torch.rand(shape, generator=gen), 5, 0.2, None, flat_tops=flat_tops)


@pytest.mark.parametrize("flat_tops", ["drop", "merge"])
def test_equal_peaks_in_many_maps(flat_tops):
    """Equal peaks in every map, fewer and more than k per map: each map keeps its own
    first k in row-major order, whatever the other maps hold."""
    cms = torch.zeros(3, 4, 9, 10)
    for m in range(12):
        s, c = divmod(m, 4)
        for i in range(m):
            cms[s, c, 2 * (i // 5), 2 * (i % 5)] = 0.5 if i % 3 else 0.75
    for k in (1, 3, 7):
        check_topk(cms, k, 0.2, None, flat_tops=flat_tops)
        check_topk(cms.half(), k, 0.2, None, flat_tops=flat_tops)
