"""flat_tops="merge": flat tops of up to 2x2 equal pixels become one peak (issue 6)."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import cases
import oracle
from peaklayers import LocalPeaks, TopKPeaks, functional
from peaklayers.ops.flat_tops import flat_top_scores
from test_peaks import check_local, check_topk

# (dy, dx) pixels of each flat top; those in FITS fit in a 2x2 block.
FITS = {
    "pair-horizontal": [(0, 0), (0, 1)],
    "pair-vertical": [(0, 0), (1, 0)],
    "pair-diagonal": [(0, 0), (1, 1)],
    "pair-antidiagonal": [(0, 1), (1, 0)],
    "L-no-bottom-right": [(0, 0), (0, 1), (1, 0)],
    "L-no-bottom-left": [(0, 0), (0, 1), (1, 1)],
    "L-no-top-right": [(0, 0), (1, 0), (1, 1)],
    "L-no-top-left": [(0, 1), (1, 0), (1, 1)],
    "square": [(0, 0), (0, 1), (1, 0), (1, 1)],
}
TOO_WIDE = {
    "1x3": [(0, 0), (0, 1), (0, 2)],
    "3x1": [(0, 0), (1, 0), (2, 0)],
    "2x3": [(y, x) for y in range(2) for x in range(3)],
    "3x3": [(y, x) for y in range(3) for x in range(3)],
    "ring": [(y, x) for y in range(3) for x in range(3) if (y, x) != (1, 1)],
    "knight-diagonal": [(0, 0), (1, 1), (2, 2)],
}


def flat_top_map(pixels, top, left, height=9, width=10, value=0.8, around=0.4):
    cms = torch.zeros(1, 1, height, width)
    for dy, dx in pixels:
        for ny in range(top + dy - 1, top + dy + 2):
            for nx in range(left + dx - 1, left + dx + 2):
                if 0 <= ny < height and 0 <= nx < width:
                    cms[0, 0, ny, nx] = around
    for dy, dx in pixels:
        cms[0, 0, top + dy, left + dx] = value
    return cms


def check_both(cms, threshold=0.2, **kwargs):
    for refinement in (None, "integral"):
        count = check_local(cms, threshold, refinement, flat_tops="merge", **kwargs)
        assert check_topk(cms, 5, threshold, refinement, flat_tops="merge", **kwargs) == count
    return count


@pytest.mark.parametrize("name", FITS)
def test_shapes_that_fit_give_one_peak_at_their_mean(name):
    cms = flat_top_map(FITS[name], 3, 4)
    assert check_both(cms) == 1
    points = LocalPeaks(0.2, None, flat_tops="merge")(cms)[0]
    ys, xs = zip(*FITS[name], strict=True)
    mean = torch.tensor([[4 + sum(xs) / len(xs), 3 + sum(ys) / len(ys)]], dtype=torch.float64)
    assert torch.allclose(points.double(), mean, rtol=0, atol=1e-6)
    assert LocalPeaks(0.2, None, flat_tops="drop")(cms)[0].shape[0] == 0


@pytest.mark.parametrize("name", TOO_WIDE)
def test_wider_flat_tops_give_no_peak(name):
    assert check_both(flat_top_map(TOO_WIDE[name], 3, 3)) == 0


@pytest.mark.parametrize("name", FITS)
@pytest.mark.parametrize("corner", [(0, 0), (0, 8), (7, 0), (7, 8), (0, 4), (4, 0), (7, 3), (3, 8)])
def test_at_borders_and_corners(name, corner):
    assert check_both(flat_top_map(FITS[name], *corner)) == 1


@pytest.mark.parametrize("name", FITS)
@pytest.mark.parametrize("level", ["equal", "higher"])
def test_touching_a_pixel_at_least_as_high(name, level):
    pixels = FITS[name]
    for y in range(-1, 3):
        for x in range(-1, 3):
            if (y, x) in pixels or not any(abs(y - py) <= 1 and abs(x - px) <= 1
                                            for py, px in pixels):
                continue
            cms = flat_top_map(pixels, 3, 4)
            cms[0, 0, 3 + y, 4 + x] = 0.8 if level == "equal" else 0.9
            check_both(cms)
            # An equal pixel can still make a plateau that fits (the oracle decides);
            # next to a higher one, only that pixel may be a peak.
            if level == "higher":
                vals = LocalPeaks(0.2, None, flat_tops="merge")(cms)[1]
                assert torch.all(vals == 0.9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_at_threshold(dtype):
    exact = float(torch.tensor(0.3, dtype=dtype))
    cms = flat_top_map(FITS["square"], 2, 2, value=exact, around=0.1).to(dtype)
    assert check_both(cms, 0.3) == 0
    assert check_both(cms, 0.29) == 1


@pytest.mark.parametrize("name", ["pair-horizontal", "L-no-top-left"])
def test_infinite_values(name):
    """+inf tops merge like any other; -inf pixels are never peaks nor members."""
    cms = flat_top_map(FITS[name], 3, 4, value=float("inf"))
    cms[0, 0, 7, 1] = float("inf")  # a single +inf pixel: a strict peak in both modes
    cms[0, 0, 0, :3] = float("-inf")
    for flat_tops, expected in (("drop", 1), ("merge", 2)):
        assert check_local(cms, 0.2, None, flat_tops=flat_tops) == expected
        assert check_topk(cms, 3, 0.2, None, flat_tops=flat_tops) == expected


def test_plateau_family():
    assert check_both(cases.plateaus()) == cases.plateaus().shape[1] + 5  # 5 of 7 tops fit


def test_half_precision_gaussians_merge_recovers_what_drop_loses():
    """Rounding fp32 Gaussians to fp16 flattens tops; "merge" keeps those peaks."""
    exact = cases.gaussians(4, 6, 40, 40, peaks=3, sigma=3.0, seed=21, dtype=torch.float64)
    cms = (exact * 3).clamp(max=1.0).to(torch.float16)  # saturated tops round to equal
    drop = check_local(cms, 0.2, None, flat_tops="drop")
    merge = check_local(cms, 0.2, None, flat_tops="merge")
    fp32 = check_local(exact.float(), 0.2, None)
    assert drop < merge <= fp32, (drop, merge, fp32)
    check_topk(cms, 4, 0.2, "integral", flat_tops="merge")

    # Unsaturated maps: the peaks fp16 rounding flattens are exactly the ones lost.
    exact = cases.gaussians(8, 17, 96, 96, peaks=2, sigma=2.5, seed=3, dtype=torch.float64)
    counts = {
        mode: LocalPeaks(0.2, None, flat_tops=mode)(exact.half())[0].shape[0]
        for mode in ("drop", "merge")
    }
    fp32 = LocalPeaks(0.2, None)(exact.float())[0].shape[0]
    assert counts["drop"] < counts["merge"] == fp32, (counts, fp32)


def test_functional_api():
    cms = flat_top_map(FITS["pair-horizontal"], 3, 4)
    rough = functional.find_local_peaks_rough(cms, 0.2, flat_tops="merge")
    refined = functional.find_local_peaks(cms, 0.2, "integral", 5, flat_tops="merge")
    assert rough[0].tolist() == [[4.5, 3.0]] and refined[0].shape == (1, 2)
    with pytest.raises(ValueError, match="flat_tops"):
        functional.find_local_peaks(cms, flat_tops="keep")
    with pytest.raises(ValueError, match="flat_tops"):
        LocalPeaks(flat_tops="Merge")
    with pytest.raises(ValueError, match="flat_tops"):
        TopKPeaks(2, flat_tops=None)


@pytest.mark.parametrize("layer", [LocalPeaks(flat_tops="merge"), TopKPeaks(3, flat_tops="merge")])
def test_script_and_trace_at_other_sizes(layer):
    example = cases.gaussians(2, 2, 20, 24, seed=1).half().float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(layer, example, check_trace=False)
    scripted = torch.jit.script(layer)
    for cms in [flat_top_map(FITS["square"], 0, 0).expand(3, 2, -1, -1).contiguous(),
                cases.plateaus()[:, :2], cases.gaussians(1, 2, 13, 9, seed=2)]:
        expected = layer(cms)
        for got in (traced(cms), scripted(cms)):
            for a, b in zip(got, expected, strict=True):
                assert torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("group_pixels", [1, 327680])
@pytest.mark.parametrize("for_graph", [False, True])
def test_scripted_scores_in_groups_match_oracle(dtype, group_pixels, for_graph):
    """Scripted on the CPU, the dense rule runs on groups of maps: with ``group_pixels=1``
    on 21 maps, groups of 8, 8 and 5; scripted for a graph, on all maps at once through
    pooling. Every anchor keeps its value, at any value (the threshold is left to the
    caller); every other pixel is -inf."""
    rng = np.random.default_rng(7)
    levels = np.array([-math.inf, 0.0, 0.3, 0.5, 0.8, math.inf])
    cms = torch.from_numpy(rng.choice(levels, size=(3, 7, 6, 9), p=[.1, .3, .2, .2, .1, .1]))
    cms = cms.to(dtype)
    scores = torch.jit.script(flat_top_scores)(cms, for_graph, group_pixels)
    maps = oracle.as_exact(cms)
    expected = np.full(maps.shape, -math.inf)
    for s in range(cms.shape[0]):
        for c in range(cms.shape[1]):
            for ax, ay, _, _ in oracle.flat_tops(maps[s, c], -math.inf):
                expected[s, c, ay, ax] = maps[s, c, ay, ax]
    assert scores.dtype == dtype
    np.testing.assert_array_equal(scores.double().numpy(), expected)


LEVELS = [0.0, 0.3, 0.5, 0.8]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 8),
                                    st.integers(1, 8)), elements=st.sampled_from(LEVELS)),
       st.sampled_from([0.0, 0.3]))
def test_random_plateaus_match_oracle(values, threshold):
    cms = torch.from_numpy(values).float()
    count = check_local(cms, threshold, None, flat_tops="merge")
    assert check_topk(cms, 64, threshold, None, flat_tops="merge") == count
    check_local(cms + 0.05, threshold, "integral", 3, flat_tops="merge")


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
              elements=st.sampled_from([-math.inf, 0.0, 0.5, math.inf])))
def test_random_infinite_plateaus_match_oracle(values):
    cms = torch.from_numpy(values).float()[None]
    count = check_local(cms, 0.2, None, flat_tops="merge")
    assert check_topk(cms, 64, 0.2, None, flat_tops="merge") == count
