"""Host grouping (SPEC §3.1 steps 2-4, §3.2) against the scipy-per-group oracle."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import identity_oracle as oracle
from peaklayers.identity import (
    classify_peaks_from_maps,
    get_class_inds_from_vectors,
    group_class_peaks,
    group_instances,
)
from peaklayers.ops.class_maps import ClassMapLookup, class_probabilities
from peaklayers.ops.topk_peaks import topk_peaks
from peaklayers.serving import assignment

PATHS = {
    "default": {},
    "dp": {"MAX_ENUMERATED": 0},
    "scipy": {"MAX_ENUMERATED": 0, "MAX_DP_CLASSES": 0},
}


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    """Run a test through every solver path (enumeration, DP, per-group scipy)."""
    for name, value in PATHS[request.param].items():
        monkeypatch.setattr(assignment, name, value)
    return request.param


def random_peaks(n_samples, n_channels, classes, sizes, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    samples, channels = [], []
    for s in range(n_samples):
        for c in range(n_channels):
            n = rng.choice(sizes)
            samples += [s] * n
            channels += [c] * n
    order = rng.permutation(len(samples))  # peaks of a group are not contiguous
    samples, channels = np.array(samples)[order], np.array(channels)[order]
    probs = rng.random((len(samples), classes)).astype(dtype)
    return probs, samples, channels


def check_group(probs, samples, channels, n_samples, n_channels, assign=None):
    peak_inds, class_inds = group_class_peaks(probs, samples, channels, n_samples, n_channels)
    exp_peaks, exp_classes = oracle.group_class_peaks(
        probs, samples, channels, n_samples, n_channels, assign
    )
    assert peak_inds.dtype == np.int64 and class_inds.dtype == np.int64
    np.testing.assert_array_equal(peak_inds, exp_peaks)
    np.testing.assert_array_equal(class_inds, exp_classes)


@pytest.mark.parametrize("classes", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("sizes", [[1, 2], [3, 4, 5, 6], [6, 7, 9]], ids=["few", "around", "many"])
def test_random_matches_scipy(path, classes, sizes):
    probs, samples, channels = random_peaks(4, 3, classes, sizes, seed=classes + sum(sizes))
    check_group(probs, samples, channels, 4, 3)


def test_more_and_fewer_peaks_than_classes(path):
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.6, 0.1], [0.1, 0.2, 0.3],
                      [0.95, 0.05, 0.0]], dtype=np.float32)
    samples = np.zeros(5, dtype=np.int64)
    check_group(probs, samples, np.zeros(5, dtype=np.int64), 1, 1)  # 5 peaks, 3 classes
    check_group(probs[:2], samples[:2], np.zeros(2, dtype=np.int64), 1, 1)  # 2 peaks, 3
    # The strongest claims class 0; the 0.7/0.6 peak takes class 1; peak 3 class 2.
    peak_inds, class_inds = group_class_peaks(probs, samples, np.zeros(5, np.int64), 1, 1)
    assert dict(zip(peak_inds.tolist(), class_inds.tolist(), strict=True)) == {4: 0, 3: 2}


def test_best_class_filter_drops_a_match(path):
    """Both peaks prefer class 0; the loser is matched to class 1 but dropped."""
    probs = np.array([[0.6, 0.3], [0.9, 0.2]], dtype=np.float32)
    peak_inds, class_inds = group_class_peaks(probs, np.zeros(2, int), np.zeros(2, int), 1, 1)
    assert peak_inds.tolist() == [1] and class_inds.tolist() == [0]
    check_group(probs, np.zeros(2, int), np.zeros(2, int), 1, 1)


def test_exact_ties_follow_the_rule(path):
    """Equal totals: the first peak gets the lowest class it can (dyadic values, exact)."""
    cases = [
        np.array([[0.5, 0.5], [0.5, 0.5]]),
        np.array([[0.75, 0.25], [0.75, 0.25]]),  # either way 1.0; peak 0 gets class 0
        np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]),
        np.array([[0.25, 0.5], [0.5, 0.25], [0.5, 0.5]]),  # 3 peaks, 2 classes
        np.array([[0.0, 0.0, 0.0]]),
    ]
    for probs in cases:
        n = probs.shape[0]
        zeros = np.zeros(n, dtype=np.int64)
        check_group(probs.astype(np.float32), zeros, zeros, 1, 1, oracle.lexicographic_assignment)
        if path != "scipy":  # the rule is promised for the vectorised paths
            classes, _ = get_class_inds_from_vectors(probs)
            np.testing.assert_array_equal(classes, oracle.lexicographic_assignment(probs))


def test_near_ties(path):
    """One float32 ulp decides: the peak with the larger value wins the class."""
    up = np.nextafter(np.float32(0.6), np.float32(1))
    probs = np.array([[0.6, 0.4], [up, 0.4]], dtype=np.float32)
    peak_inds, class_inds = group_class_peaks(probs, np.zeros(2, int), np.zeros(2, int), 1, 1)
    assert peak_inds.tolist() == [1] and class_inds.tolist() == [0]
    check_group(probs, np.zeros(2, int), np.zeros(2, int), 1, 1)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_torch_in_torch_out(index_dtype):
    probs, samples, channels = random_peaks(3, 2, 4, [2, 4, 5], seed=3)
    got = group_class_peaks(torch.from_numpy(probs), torch.from_numpy(samples.astype(index_dtype)),
                            torch.from_numpy(channels.astype(index_dtype)), 3, 2)
    expected = oracle.group_class_peaks(probs, samples, channels, 3, 2)
    for a, b in zip(got, expected, strict=True):
        assert isinstance(a, torch.Tensor) and a.dtype == torch.int64
        np.testing.assert_array_equal(a.numpy(), b)
    check_group(probs, samples.astype(index_dtype), channels.astype(index_dtype), 3, 2)


def test_no_peaks():
    empty = np.zeros((0, 3), dtype=np.float32)
    peak_inds, class_inds = group_class_peaks(empty, np.zeros(0, int), np.zeros(0, int), 2, 4)
    assert peak_inds.shape == (0,) and class_inds.shape == (0,)
    points, vals, probs = classify_peaks_from_maps(
        torch.rand(2, 3, 5, 5), torch.zeros(0, 2), torch.zeros(0),
        torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int32), 4
    )
    assert points.shape == (2, 3, 4, 2) and torch.isnan(points).all()
    assert torch.isnan(vals).all() and torch.isnan(probs).all()
    classes, class_probs = get_class_inds_from_vectors(np.zeros((0, 3)))
    assert classes.shape == (0,) and class_probs.shape == (0,)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 8), min_size=1, max_size=6),
    classes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    coarse=st.booleans(),
)
def test_property_random_probabilities(sizes, classes, seed, coarse):
    """Fine random values: scipy's unique optimum. Coarse values (many exact ties): the rule."""
    rng = np.random.default_rng(seed)
    channels = np.repeat(np.arange(len(sizes)), sizes)
    channels = channels[rng.permutation(len(channels))]
    samples = np.zeros_like(channels)
    if coarse:
        probs = rng.integers(0, 5, (len(channels), classes)).astype(np.float32) / 4
        check_group(probs, samples, channels, 1, len(sizes), oracle.lexicographic_assignment)
    else:
        probs = rng.random((len(channels), classes)).astype(np.float32)
        check_group(probs, samples, channels, 1, len(sizes))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_classify_peaks_from_maps(dtype):
    gen = torch.Generator().manual_seed(4)
    maps = torch.rand(3, 4, 9, 11, generator=gen).to(dtype)
    n = 60
    points = torch.rand(n, 2, generator=gen) * torch.tensor([13.0, 11.0]) - 1
    points[::4] = torch.floor(points[::4]) + 0.5  # exact halves
    vals = torch.rand(n, generator=gen).to(dtype)
    samples = torch.randint(0, 3, (n,), generator=gen, dtype=torch.int32)
    channels = torch.randint(0, 5, (n,), generator=gen, dtype=torch.int32)
    got = classify_peaks_from_maps(maps, points, vals, samples, channels, 5)
    probs = oracle.lookup(maps.double().numpy(), points.numpy(), samples.numpy())
    expected = oracle.classify(points.numpy(), vals.double().numpy(), probs, samples.numpy(),
                               channels.numpy(), 3, 5)
    assert got[0].dtype == torch.float32 and got[1].dtype == dtype and got[2].dtype == dtype
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.double().numpy(), b)
    # numpy in, numpy out, same values
    got_np = classify_peaks_from_maps(maps.numpy(), points.numpy(), vals.numpy(),
                                      samples.numpy(), channels.numpy(), 5)
    for a, b in zip(got_np, got, strict=True):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b.numpy())


def test_get_class_inds_from_vectors():
    rng = np.random.default_rng(5)
    for n, k in [(3, 5), (5, 3), (4, 4), (1, 1)]:
        probs = rng.random((n, k))
        classes, class_probs = get_class_inds_from_vectors(torch.from_numpy(probs))
        rows, cols = oracle.solve(probs)
        expected = np.full(n, -1)
        expected[rows] = cols
        np.testing.assert_array_equal(classes.numpy(), expected)
        taken = expected >= 0
        np.testing.assert_array_equal(class_probs.numpy()[taken], probs[rows, cols])
        assert np.isnan(class_probs.numpy()[~taken]).all()


def test_group_instances_topk_outputs():
    """The fixed-shape graph's outputs, as ONNX Runtime returns them (numpy)."""
    gen = torch.Generator().manual_seed(8)
    cms = torch.rand(3, 4, 12, 12, generator=gen) ** 4
    class_maps = torch.rand(3, 3, 12, 12, generator=gen)
    points, vals, valid = topk_peaks(cms, 5, 0.2, None)
    class_probs = ClassMapLookup()(class_maps, points)
    got = group_instances(points.numpy(), vals.numpy(), class_probs.numpy(), valid=valid.numpy())
    s, c, _ = np.nonzero(valid.numpy())
    expected = oracle.classify(points.numpy()[valid.numpy()], vals.double().numpy()[valid.numpy()],
                               class_probs.double().numpy()[valid.numpy()], s, c, 3, 4)
    for a, b in zip(got, expected, strict=True):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b)
    # Without `valid`, NaN points mark the unused slots; torch in gives torch out.
    again = group_instances(points, vals, class_probs)
    for a, b in zip(again, got, strict=True):
        assert isinstance(a, torch.Tensor)
        np.testing.assert_array_equal(a.numpy(), b)


def test_group_instances_variable_outputs():
    gen = torch.Generator().manual_seed(9)
    class_maps = torch.rand(2, 3, 8, 8, generator=gen)
    points = torch.rand(30, 2, generator=gen) * 8
    vals = torch.rand(30, generator=gen)
    samples = torch.randint(0, 2, (30,), generator=gen, dtype=torch.int32)
    channels = torch.randint(0, 4, (30,), generator=gen, dtype=torch.int32)
    probs = ClassMapLookup()(class_maps, points, samples)
    got = group_instances(points.numpy(), vals.numpy(), probs.numpy(), samples.numpy(),
                          channels.numpy(), n_samples=2, n_channels=4)
    expected = classify_peaks_from_maps(class_maps, points, vals, samples, channels, 4)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


def test_bad_input():
    probs = np.full((3, 2), 0.5, dtype=np.float32)
    inds = np.zeros(3, dtype=np.int64)
    for bad in (np.nan, np.inf):
        wrong = probs.copy()
        wrong[1, 1] = bad
        with pytest.raises(ValueError, match="peak_class_probs"):
            group_class_peaks(wrong, inds, inds, 1, 1)
        with pytest.raises(ValueError, match="peak_class_probs"):
            get_class_inds_from_vectors(wrong)
    with pytest.raises(ValueError, match="peak_sample_inds"):
        group_class_peaks(probs, inds[:2], inds, 1, 1)
    with pytest.raises(ValueError, match="peak_channel_inds"):
        group_class_peaks(probs, inds, inds[:2], 1, 1)
    with pytest.raises(ValueError, match="peak_sample_inds"):
        group_class_peaks(probs, inds + 1, inds, 1, 1)
    with pytest.raises(ValueError, match="peak_channel_inds"):
        group_class_peaks(probs, inds, inds - 1, 1, 1)
    with pytest.raises(TypeError, match="peak_sample_inds"):
        group_class_peaks(probs, inds.astype(float), inds, 1, 1)
    with pytest.raises(ValueError, match="peak_class_probs"):
        group_class_peaks(probs[0], inds, inds, 1, 1)
    with pytest.raises(TypeError, match="n_channels"):
        group_class_peaks(probs, inds, inds, 1, 1.0)
    maps = torch.rand(1, 2, 4, 4)
    pts, vals = torch.rand(3, 2), torch.rand(3)
    with pytest.raises(ValueError, match="class_maps"):
        classify_peaks_from_maps(maps[0], pts, vals, inds, inds, 1)
    with pytest.raises(ValueError, match="peak_sample_inds"):
        classify_peaks_from_maps(maps, pts, vals, inds + 1, inds, 1)
    with pytest.raises(ValueError, match="peak_vals"):
        classify_peaks_from_maps(maps, pts, vals[:2], inds, inds, 1)
    nan_maps = maps.clone()
    nan_maps[:] = float("nan")
    with pytest.raises(ValueError, match="class_maps"):
        classify_peaks_from_maps(nan_maps, pts, vals, inds, inds, 1)
    with pytest.raises(ValueError, match="n_samples"):
        group_instances(pts.numpy(), vals.numpy(), probs, inds, inds, n_channels=1)
    with pytest.raises(ValueError, match="class_probs"):
        group_instances(pts.numpy(), vals.numpy(), probs[:2], inds, inds, n_samples=1,
                        n_channels=1)


# Zero classes (K = 0): no pair can be formed (min(n_peaks, 0) = 0), so the results are
# empty: no kept peak, every instance unassigned, instance arrays with no class rows.
def test_zero_classes_vectors():
    class_inds, class_probs = get_class_inds_from_vectors(np.zeros((3, 0), np.float32))
    np.testing.assert_array_equal(class_inds, [-1, -1, -1])
    assert np.isnan(class_probs).all() and class_probs.shape == (3,)


def test_zero_classes_grouping():
    inds = np.array([0, 0, 1], np.int32)
    peak_inds, class_inds = group_class_peaks(
        np.zeros((3, 0), np.float32), inds, inds, 2, 2
    )
    assert peak_inds.shape == (0,) and class_inds.shape == (0,)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_zero_classes_instances(as_tensor):
    gen = np.random.default_rng(0)
    points = gen.random((3, 2), dtype=np.float32) * 7
    vals = np.ones(3, np.float32)
    inds = np.array([0, 0, 1], np.int32)
    wrap = torch.from_numpy if as_tensor else (lambda a: a)
    outputs = [
        classify_peaks_from_maps(
            wrap(np.zeros((2, 0, 8, 8), np.float32)), wrap(points), wrap(vals), wrap(inds),
            wrap(inds), 3
        ),
        group_instances(
            wrap(points), wrap(vals), wrap(np.zeros((3, 0), np.float32)), wrap(inds),
            wrap(inds), n_samples=2, n_channels=3
        ),
        group_instances(
            wrap(points.reshape(1, 3, 1, 2)), wrap(vals.reshape(1, 3, 1)),
            wrap(np.zeros((1, 3, 1, 0), np.float32))
        ),
    ]
    for (out_points, out_vals, out_probs), samples in zip(outputs, (2, 2, 1), strict=True):
        assert tuple(out_points.shape) == (samples, 0, 3, 2)
        assert tuple(out_vals.shape) == (samples, 0, 3)
        assert tuple(out_probs.shape) == (samples, 0, 3)
        assert isinstance(out_points, torch.Tensor) == as_tensor


def test_class_lookup_needs_a_class():
    with pytest.raises(ValueError, match="class_maps must have at least one class"):
        class_probabilities(torch.zeros(1, 0, 8, 8), torch.zeros(2, 2), torch.zeros(2).long())
