"""Bad arguments fail with a clear error naming the argument (SPEC §4)."""

import pytest
import torch

from peaklayers import (
    GlobalPeaks,
    LocalPeaks,
    TopKPeaks,
    functional,
    global_peaks,
    local_peaks,
    topk_peaks,
)

CMS = torch.rand(1, 2, 8, 8)


@pytest.mark.parametrize("make", [GlobalPeaks, LocalPeaks, lambda **kw: TopKPeaks(3, **kw)])
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"refinement": "local"}, ValueError, "refinement"),
        ({"refinement": "Integral"}, ValueError, "refinement"),
        ({"patch_size": 0}, ValueError, "patch_size"),
        ({"patch_size": -3}, ValueError, "patch_size"),
        ({"patch_size": 2.5}, TypeError, "patch_size"),
        ({"stride": -1}, ValueError, "stride"),
        ({"stride": 0}, ValueError, "stride"),
        ({"threshold": float("nan")}, ValueError, "threshold"),
        ({"threshold": "0.2"}, TypeError, "threshold"),
    ],
)
def test_construction(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


@pytest.mark.parametrize("k", [0, -1, 4096])
def test_k_out_of_range(k):
    with pytest.raises(ValueError, match="k must"):
        TopKPeaks(k)
    with pytest.raises(ValueError, match="k must"):
        topk_peaks(CMS, k)


def test_k_not_int():
    with pytest.raises(TypeError, match="k must"):
        TopKPeaks(2.0)


CALLS = [
    GlobalPeaks(),
    LocalPeaks(),
    TopKPeaks(2),
    global_peaks,
    local_peaks,
    lambda cms: topk_peaks(cms, 2),
    functional.find_global_peaks,
    functional.find_global_peaks_rough,
    functional.find_local_peaks,
    functional.find_local_peaks_rough,
]


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(
    "cms, error, match",
    [
        (torch.rand(8, 8), ValueError, "cms must be a 4-D"),
        (torch.rand(1, 1, 2, 8, 8), ValueError, "cms must be a 4-D"),
        (torch.ones(1, 2, 8, 8, dtype=torch.int64), TypeError, "cms must have a floating"),
        (torch.ones(1, 2, 8, 8, dtype=torch.bool), TypeError, "cms must have a floating"),
        (torch.rand(1, 2, 0, 8), ValueError, "cms must have non-zero"),
    ],
)
def test_call(call, cms, error, match):
    with pytest.raises(error, match=match):
        call(cms)


@pytest.mark.parametrize(
    "call", [global_peaks, local_peaks, lambda c, **kw: topk_peaks(c, 2, **kw)]
)
def test_function_arguments(call):
    with pytest.raises(ValueError, match="refinement"):
        call(CMS, refinement="gaussian")
    with pytest.raises(ValueError, match="patch_size"):
        call(CMS, patch_size=0)
    with pytest.raises(ValueError, match="stride"):
        call(CMS, stride=-2.0)


def test_functional_refinement_is_not_silently_ignored():
    with pytest.raises(ValueError, match="refinement"):
        functional.find_local_peaks(CMS, refinement="local")
    with pytest.raises(ValueError, match="integral_patch_size|patch_size"):
        functional.find_global_peaks(CMS, refinement="integral", integral_patch_size=-1)


def test_helpers():
    with pytest.raises(ValueError, match="xv"):
        functional.integral_regression(CMS, torch.arange(7.0), torch.arange(8.0))
    with pytest.raises(ValueError, match="centroids"):
        functional.make_centered_bboxes(torch.zeros(3), 5, 5)
    with pytest.raises(ValueError, match="bboxes"):
        functional.crop_bboxes(CMS, torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="sample_inds"):
        functional.crop_bboxes(CMS, torch.zeros(2, 4, 2), torch.zeros(3, dtype=torch.int64))
