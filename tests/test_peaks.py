"""The three peak layers and their functions against the pixel-loop oracle (SPEC §1)."""

import contextlib

import numpy as np
import pytest
import torch

import cases
import oracle
from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks, global_peaks, local_peaks, topk_peaks
from peaklayers.ops import topk_peaks as topk_module

PX = 1e-5  # tolerance of refined points, in map pixels


def assert_points(actual, expected, atol=PX):
    actual = actual.double().numpy()
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, equal_nan=True)


def check_global(cms, threshold=0.2, refinement="integral", patch_size=5, stride=1.0):
    points, vals = global_peaks(cms, threshold, refinement, patch_size, stride)
    exp_points, exp_vals = oracle.global_peaks(cms, threshold, refinement, patch_size, stride)
    assert points.dtype == torch.float32 and vals.dtype == cms.dtype
    np.testing.assert_array_equal(vals.double().numpy(), exp_vals)
    assert_points(points, exp_points, PX * stride)
    module = GlobalPeaks(threshold, refinement, patch_size, stride)(cms)
    assert torch.equal(module[1], vals) and torch.equal(module[0].isnan(), points.isnan())
    assert torch.equal(module[0].nan_to_num(), points.nan_to_num())


def check_local(
    cms, threshold=0.2, refinement="integral", patch_size=5, stride=1.0, flat_tops="drop"
):
    points, vals, samples, channels = local_peaks(
        cms, threshold, refinement, patch_size, stride, flat_tops
    )
    exp = oracle.local_peaks(cms, threshold, refinement, patch_size, stride, flat_tops)
    assert samples.dtype == torch.int32 and channels.dtype == torch.int32
    assert vals.dtype == cms.dtype and points.dtype == torch.float32
    np.testing.assert_array_equal(samples.numpy(), exp[2])
    np.testing.assert_array_equal(channels.numpy(), exp[3])
    np.testing.assert_array_equal(vals.double().numpy(), exp[1])
    assert_points(points, exp[0], PX * stride)
    module = LocalPeaks(threshold, refinement, patch_size, stride, flat_tops)(cms)
    for a, b in zip(module, (points, vals, samples, channels), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    return points.shape[0]


@contextlib.contextmanager
def dense_topk_selection():
    """Eager ``topk_peaks`` selecting as its graphs do: densely, with fixed shapes."""
    saved = topk_module._in_graph
    topk_module._in_graph = lambda: True
    try:
        yield
    finally:
        topk_module._in_graph = saved


def check_topk(
    cms, k, threshold=0.2, refinement="integral", patch_size=5, stride=1.0, flat_tops="drop"
):
    """Both selections of ``topk_peaks`` (eager's from the peaks found, the graphs' dense
    one) against the oracle."""
    args = (k, threshold, refinement, patch_size, stride, flat_tops)
    exp_points, exp_vals, exp_valid = oracle.topk_peaks(cms, *args)
    with dense_topk_selection():
        dense = topk_peaks(cms, *args)
    for points, vals, valid in (topk_peaks(cms, *args), dense):
        assert points.shape == (*cms.shape[:2], k, 2) and valid.dtype == torch.bool
        np.testing.assert_array_equal(valid.numpy(), exp_valid)
        np.testing.assert_array_equal(vals.double().numpy(), exp_vals)
        assert_points(points, exp_points, PX * stride)
    module = TopKPeaks(k, threshold, refinement, patch_size, stride, flat_tops)(cms)
    assert torch.equal(module[2], valid) and torch.equal(module[1], vals)
    return int(valid.sum())


ALL = [check_global, check_local, lambda cms, *a, **kw: check_topk(cms, 4, *a, **kw)]
ALL_IDS = ["global", "local", "topk"]


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 2, 32, 32), (3, 1, 8, 40)])
@pytest.mark.parametrize("refinement", [None, "integral"])
def test_gaussians(check, shape, refinement):
    cms = cases.gaussians(*shape, peaks=3, sigma=1.7, seed=sum(shape))
    check(cms, 0.2, refinement)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("patch_size", range(1, 10))
def test_patch_sizes(check, patch_size):
    check(cases.gaussians(2, 2, 15, 19, peaks=2, sigma=2.5, seed=patch_size), 0.2, "integral",
          patch_size)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(check, dtype):
    check(cases.gaussians(2, 3, 16, 21, peaks=3, sigma=1.5, seed=7, dtype=dtype), 0.2)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_plateaus(check, dtype):
    check(cases.plateaus(dtype), 0.2)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
def test_borders_and_corners(check):
    check(cases.borders(), 0.2)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("threshold", [0.2, 0.3, 0.55])
def test_values_at_threshold(check, dtype, threshold):
    check(cases.at_threshold(threshold, dtype), threshold)


def test_threshold_rules_differ():
    """Global keeps a maximum equal to the threshold; local drops it."""
    cms = cases.at_threshold(0.3)[:, :1]
    points, vals = global_peaks(cms, 0.3)
    assert vals.item() == torch.tensor(0.3).item()
    assert local_peaks(cms, 0.3)[0].shape[0] == 0


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
def test_all_below_threshold(check):
    check(cases.gaussians(2, 2, 10, 10, seed=3) * 0.1, 0.2)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_maps(check, value):
    check(torch.full((2, 2, 6, 7), value), 0.2)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("negative", [False, True])
def test_noise(check, negative):
    cms = cases.noisy(2, 2, 13, 11, seed=5, negative=negative)
    # Refinement is ill-conditioned where a patch sums to about 0: check rough points.
    check(cms, -0.5 if negative else 0.2, "integral" if not negative else None)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 0, 8, 8), (2, 2, 1, 9), (2, 2, 9, 1),
                                   (2, 2, 1, 1), (1, 1, 2, 2)])
def test_degenerate_shapes(check, shape):
    cms = cases.noisy(*shape, seed=11)
    check(cms, 0.2)


def test_maps_autograd_tracks():
    """Maps that require grad give the oracle's peaks: the eager shortcuts (constants made
    once, maxima folded in place) stay out of autograd's way."""
    cms = cases.gaussians(2, 3, 17, 23, peaks=3, sigma=1.7, seed=5)
    tracked = cms.clone().requires_grad_()
    points, vals = GlobalPeaks()(tracked)
    exp_points, exp_vals = oracle.global_peaks(cms, 0.2)
    np.testing.assert_array_equal(vals.detach().double().numpy(), exp_vals)
    assert_points(points.detach(), exp_points)
    points, vals, samples, channels = LocalPeaks()(tracked)
    exp = oracle.local_peaks(cms, 0.2)
    np.testing.assert_array_equal(samples.numpy(), exp[2])
    np.testing.assert_array_equal(channels.numpy(), exp[3])
    np.testing.assert_array_equal(vals.detach().double().numpy(), exp[1])
    assert_points(points.detach(), exp[0])
    # Top-K against itself on untracked maps, which the tests above hold to the oracle.
    for a, b in zip(TopKPeaks(4)(tracked), TopKPeaks(4)(cms), strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("k", [1, 3, 50, 400])
def test_topk_k_beyond_map(k):
    check_topk(cases.noisy(2, 2, 5, 6, seed=k), k, 0.1)


@pytest.mark.parametrize("check", ALL, ids=ALL_IDS)
def test_stride(check):
    check(cases.gaussians(1, 2, 12, 12, seed=2), 0.2, "integral", 5, 4)


def test_topk_equal_values_ordered_by_position():
    """Ties in value, also across the k-th slot, go to the first pixels in row-major order."""
    cms = torch.zeros(1, 1, 9, 9)
    spots = [(7, 7), (1, 7), (7, 1), (4, 4), (1, 1)]
    for y, x in spots:
        cms[0, 0, y, x] = 0.5
    cms[0, 0, 4, 7] = 0.8
    points, vals, valid = topk_peaks(cms, 3, 0.2, None)
    assert points[0, 0].tolist() == [[7.0, 4.0], [1.0, 1.0], [7.0, 1.0]]
    check_topk(cms, 3, 0.2, None)
    check_topk(cms, 6, 0.2, None)
