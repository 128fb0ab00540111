"""Bad arguments fail with a clear error naming the argument (SPEC §4)."""

import numpy as np
import pytest
import torch

from peaklayers import (
    GlobalPeaks,
    LocalPeaks,
    TopKPeaks,
    class_probabilities,
    functional,
    global_peaks,
    integral_offsets,
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


# The same argument checks everywhere (SPEC §4): every way of asking for peaks, each
# given a keyword argument by the name it uses for it.
def _layer(make):
    return lambda **kw: make(**kw)(CMS)


ENTRY_POINTS = {
    "GlobalPeaks": (_layer(GlobalPeaks), {}),
    "LocalPeaks": (_layer(LocalPeaks), {}),
    "TopKPeaks": (_layer(lambda **kw: TopKPeaks(2, **kw)), {}),
    "global_peaks": (lambda **kw: global_peaks(CMS, **kw), {}),
    "local_peaks": (lambda **kw: local_peaks(CMS, **kw), {}),
    "topk_peaks": (lambda **kw: topk_peaks(CMS, 2, **kw), {}),
    "find_global_peaks": (
        lambda **kw: functional.find_global_peaks(CMS, refinement="integral", **kw),
        {"patch_size": "integral_patch_size", "stride": None},
    ),
    "find_local_peaks": (
        lambda **kw: functional.find_local_peaks(CMS, refinement="integral", **kw),
        {"patch_size": "integral_patch_size", "stride": None},
    ),
    "find_global_peaks_rough": (
        lambda **kw: functional.find_global_peaks_rough(CMS, **kw),
        {"patch_size": None, "stride": None},
    ),
    "find_local_peaks_rough": (
        lambda **kw: functional.find_local_peaks_rough(CMS, **kw),
        {"patch_size": None, "stride": None},
    ),
}

BAD_VALUES = [
    ("threshold", float("nan"), ValueError),
    ("threshold", True, TypeError),
    ("threshold", None, TypeError),
    ("threshold", "0.2", TypeError),
    ("threshold", torch.tensor(0.2), TypeError),
    ("threshold", 1e39, ValueError),
    ("threshold", -1e300, ValueError),
    ("patch_size", True, TypeError),
    ("patch_size", None, TypeError),
    ("patch_size", 5.0, TypeError),
    ("patch_size", "5", TypeError),
    ("patch_size", 0, ValueError),
    ("patch_size", 256, ValueError),
    ("patch_size", 2**31, ValueError),
    ("stride", True, TypeError),
    ("stride", None, TypeError),
    ("stride", "4", TypeError),
    ("stride", float("nan"), ValueError),
    ("stride", float("inf"), ValueError),
    ("stride", 1e300, ValueError),
    ("stride", 0.0, ValueError),
]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("argument, value, error", BAD_VALUES, ids=repr)
def test_every_entry_point_checks_the_same(entry, argument, value, error):
    call, names = ENTRY_POINTS[entry]
    name = names.get(argument, argument)
    if name is None:
        return  # the entry point has no such argument
    with pytest.raises(error, match=name + " must"):
        call(**{name: value})


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(
    "argument, value, plain",
    [
        ("threshold", np.float32(0.25), 0.25),
        ("threshold", np.float64(0.25), 0.25),
        ("threshold", 0, 0.0),
        ("patch_size", np.int64(3), 3),
        ("stride", np.float32(4.0), 4.0),
    ],
    ids=repr,
)
def test_numpy_scalars_are_numbers(entry, argument, value, plain):
    call, names = ENTRY_POINTS[entry]
    name = names.get(argument, argument)
    if name is None:
        return
    for got, expected in zip(call(**{name: value}), call(**{name: plain}), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("threshold, kept", [(float("-inf"), True), (float("inf"), False)])
def test_infinite_thresholds_are_valid(entry, threshold, kept):
    call, _ = ENTRY_POINTS[entry]
    vals = call(threshold=threshold)[1]
    if not kept:
        assert bool((vals == 0).all())  # no peak, or only dropped / empty slots
    else:
        assert vals.numel() > 0


@pytest.mark.parametrize("k", [True, None, 2.0, "2"])
def test_k_type(k):
    with pytest.raises(TypeError, match="k must"):
        TopKPeaks(k)
    with pytest.raises(TypeError, match="k must"):
        topk_peaks(CMS, k)


NOT_TENSORS = [CMS.numpy(), CMS.tolist(), None, 3.0]


@pytest.mark.parametrize("call", CALLS + [
    lambda cms: functional.integral_regression(cms, torch.arange(8.0), torch.arange(8.0)),
])
@pytest.mark.parametrize("cms", NOT_TENSORS, ids=["ndarray", "list", "None", "float"])
def test_maps_must_be_tensors(call, cms):
    with pytest.raises(TypeError, match="cms must be a torch.Tensor"):
        call(cms)


@pytest.mark.parametrize("value", NOT_TENSORS[:3], ids=["ndarray", "list", "None"])
def test_other_tensor_arguments_must_be_tensors(value):
    points, sample_inds = torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(TypeError, match="class_maps must be a torch.Tensor"):
        class_probabilities(value, points, sample_inds)
    with pytest.raises(TypeError, match="points must be a torch.Tensor"):
        class_probabilities(CMS, value, sample_inds)
    if value is not None:  # None selects the top-K form
        with pytest.raises(TypeError, match="sample_inds must be a torch.Tensor"):
            class_probabilities(CMS, points, value)
    inds = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(TypeError, match="cms must be a torch.Tensor"):
        integral_offsets(value, inds, inds, inds)
    with pytest.raises(TypeError, match="xs must be a torch.Tensor"):
        integral_offsets(CMS, inds, value, inds)
    with pytest.raises(TypeError, match="xv must be a torch.Tensor"):
        functional.integral_regression(CMS, value, torch.arange(8.0))
    with pytest.raises(TypeError, match="centroids must be a torch.Tensor"):
        functional.make_centered_bboxes(value, 5, 5)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        functional.crop_bboxes(value, torch.zeros(2, 4, 2), inds)


def test_integral_offsets_arguments():
    inds = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="patch_size"):
        integral_offsets(CMS, inds, inds, inds, 256)
    with pytest.raises(TypeError, match="patch_size"):
        integral_offsets(CMS, inds, inds, inds, True)
    with pytest.raises(ValueError, match="ys must be 1-D"):
        integral_offsets(CMS, inds, inds, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="xs must have dtype int64"):
        integral_offsets(CMS, inds, inds.int(), inds)


def test_box_sizes():
    with pytest.raises(TypeError, match="box_height"):
        functional.make_centered_bboxes(torch.zeros(2, 2), None, 5)
    with pytest.raises(ValueError, match="box_width"):
        functional.make_centered_bboxes(torch.zeros(2, 2), 5, float("nan"))


@pytest.mark.parametrize(
    "sample_inds, error",
    [
        (torch.tensor([0, -1]), ValueError),  # would wrap to the last image
        (torch.tensor([0, 1]), ValueError),  # CMS has one image
        (torch.tensor([0.0, 0.7]), TypeError),  # would be truncated to 0
        (torch.tensor([False, True]), TypeError),
        ([0, 0], TypeError),
    ],
    ids=["negative", "too-large", "float", "bool", "list"],
)
def test_crop_bboxes_sample_inds(sample_inds, error):
    boxes = functional.make_centered_bboxes(torch.tensor([[3.0, 3.0], [4.0, 4.0]]), 4, 4)
    with pytest.raises(error, match="sample_inds must"):
        functional.crop_bboxes(CMS, boxes, sample_inds)
