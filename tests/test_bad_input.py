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


# ------------------------------------------------ export tool: near-tie peak differences


def _near_tie_case():
    """A 1 × 1 × 6 × 6 map with one clear peak at (1, 1) and a pair of pixels at (4, 4)
    and (4, 3) equal up to 1e-7: a local peak at (4, 4) in one backend only is a near-tie,
    a missing peak at (1, 1) is not."""
    import numpy as np

    maps = np.full((1, 1, 6, 6), 0.1, np.float32)
    maps[0, 0, 1, 1] = 0.9
    maps[0, 0, 4, 4] = 0.5
    maps[0, 0, 3, 4] = np.float32(0.5) - np.float32(1e-7)

    def local(points):
        n = len(points)
        return [np.array(points, np.float32).reshape(n, 2),
                np.array([maps[0, 0, int(y), int(x)] for x, y in points], np.float32),
                np.zeros(n, np.int32), np.zeros(n, np.int32)]

    return maps, local


def test_near_ties_accepts_only_tied_pixels():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from export.near_ties import NearTies, peaks_of, reconcile
    from peaklayers import LocalPeaks

    maps, local = _near_tie_case()
    axes = list(LocalPeaks.outputs[0].axes)
    names = [o.name for o in LocalPeaks.outputs]
    ties = NearTies(axes, 0.2, 1.0, 1, lambda x: maps)
    both = peaks_of(names, local([(1, 1), (4, 4)]), axes)
    clear_only = peaks_of(names, local([(1, 1)]), axes)
    tie_only = peaks_of(names, local([(4, 4)]), axes)
    assert reconcile(both, both, maps, ties, 1e-3) == (0, None)
    assert reconcile(both, clear_only, maps, ties, 1e-3) == (1, None)
    assert reconcile(clear_only, both, maps, ties, 1e-3) == (1, None)
    count, problem = reconcile(both, tie_only, maps, ties, 1e-3)
    assert problem is not None and "(1.00, 1.00)" in problem
    moved = peaks_of(names, local([(1, 1), (4, 4)]), axes)
    moved[0] = (0, 0, 1.5, 1.0, *moved[0][4:])  # the clear peak half a pixel away
    assert reconcile(both, moved, maps, ties, 1e-3)[1] is not None


def test_near_ties_top_k_push_out():
    """Top-1: a near-tie peak that wins in one backend pushes the other backend's winner
    out; both differences are explained. Without the near-tie, the same swap is not."""
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from export.near_ties import NearTies, peaks_of, reconcile

    maps, _ = _near_tie_case()
    maps[0, 0, 1, 1] = 0.4  # the clear peak, now below the tied pixel (4, 4) at 0.5

    def top1(x, y):
        return [np.array([[[[x, y]]]], np.float32), np.array([[[maps[0, 0, y, x]]]]),
                np.array([[[True]]])]

    from peaklayers import TopKPeaks

    axes = list(TopKPeaks.outputs[0].axes)
    names = [o.name for o in TopKPeaks.outputs]
    ties = NearTies(axes, 0.2, 1.0, 1, lambda x: maps)
    tied, clear = peaks_of(names, top1(4, 4), axes), peaks_of(names, top1(1, 1), axes)
    assert reconcile(tied, clear, maps, ties, 1e-3, slots=1) == (2, None)
    maps[0, 0, 3, 4] = 0.1  # no tie any more: (4, 4) is a clear peak above (1, 1)
    assert reconcile(tied, clear, maps, ties, 1e-3, slots=1)[1] is not None
