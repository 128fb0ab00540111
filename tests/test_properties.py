"""Property tests: random maps, every layer == its functional form == the oracle."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import oracle
from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks, functional, strict_maxima_mask
from test_peaks import check_global, check_local, check_topk

# Few distinct levels make ties, plateaus and values at the threshold common.
LEVELS = [0.0, 0.1, 0.2, 0.25, 0.5, 0.7, 0.9, 1.0]


@st.composite
def maps(draw, max_side=9):
    shape = (
        draw(st.integers(0, 2)),
        draw(st.integers(0, 3)),
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )
    if draw(st.booleans()):
        values = arrays(np.float64, shape, elements=st.sampled_from(LEVELS))
    else:
        values = arrays(np.float64, shape, elements=st.floats(-1, 1, width=32))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.float64]))
    return torch.from_numpy(draw(values)).to(dtype)


thresholds = st.sampled_from([0.0, 0.2, 0.25, 0.5])
patch_sizes = st.integers(1, 6)
SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(maps(), thresholds)
def test_rough_layers_match_oracle(cms, threshold):
    check_global(cms, threshold, None)
    check_local(cms, threshold, None)
    check_topk(cms, 3, threshold, None)


@SETTINGS
@given(maps(), thresholds, patch_sizes)
def test_refined_layers_match_oracle(cms, threshold, patch_size):
    cms = cms.abs() + 0.01  # positive maps: patch sums are well away from 0
    check_global(cms, threshold, "integral", patch_size)
    check_local(cms, threshold, "integral", patch_size)
    check_topk(cms, 2, threshold, "integral", patch_size)


@SETTINGS
@given(maps(), thresholds)
def test_dense_mask_equals_oracle(cms, threshold):
    """The dense NMS of the top-K layer and the sparse one of the local layer agree."""
    mask = strict_maxima_mask(cms, threshold)
    exact = oracle.as_exact(cms)
    thr = oracle.in_dtype(threshold, cms.dtype)
    expected = np.zeros(cms.shape, dtype=bool)
    for s, c, y, x in np.ndindex(*cms.shape):
        expected[s, c, y, x] = oracle.is_strict_peak(exact[s, c], x, y, thr)
    np.testing.assert_array_equal(mask.numpy(), expected)


@SETTINGS
@given(maps(), thresholds)
def test_functional_equals_modules(cms, threshold):
    for got, want in [
        (functional.find_local_peaks(cms, threshold, "integral"), LocalPeaks(threshold)(cms)),
        (functional.find_local_peaks_rough(cms, threshold), LocalPeaks(threshold, None)(cms)),
        (functional.find_global_peaks(cms, threshold, "integral"), GlobalPeaks(threshold)(cms)),
        (functional.find_global_peaks_rough(cms, threshold), GlobalPeaks(threshold, None)(cms)),
    ]:
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan())
    # Top-K with room for every pixel keeps exactly the local peaks.
    points, vals, valid = TopKPeaks(max(1, cms.shape[2] * cms.shape[3]), threshold, None)(cms)
    local = LocalPeaks(threshold, None)(cms)
    assert int(valid.sum()) == local[0].shape[0]
