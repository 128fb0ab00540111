"""Multi-class bottom-up pipeline (SPEC §3.1, §5): frames in, top-K peaks and class
probabilities out; identities grouped on the host.

Oracles: the frames as in tests/test_pipelines.py (``F.interpolate``, ``F.pad``), the
head called on them, then the pixel-loop top-K peaks of tests/oracle.py, the per-peak
class-map lookup of tests/identity_oracle.py and its scipy grouping per (frame, part).
Then the same pipelines scripted, traced, in ``torch.export`` and in ONNX Runtime (both
exporters), exported once and run at other batch and frame sizes, uint8 and float input.
"""

import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import identity_oracle
import oracle
from peaklayers import (
    MultiClassBottomUpPipeline,
    assign_peak_classes,
    export_onnx,
    export_program,
)
from pipeline_heads import (
    Parts,
    PartsClasses,
    PartsClassMapsDict,
    PartsClassMapsTuple,
    frames,
)
from test_pipelines import assert_outputs, oracle_frames, scene

PX = 1e-5

CONFIGS = {
    # uint8 frames, input_scale 0.5, strided maps, class maps at their own coarser stride.
    "scaled": lambda: MultiClassBottomUpPipeline(
        PartsClassMapsTuple(stride=2, class_stride=4), 3, stride=2, class_stride=4,
        input_scale=0.5, max_stride=4),
    # float frames, a dict head, three classes, fewer slots than animals.
    "float": lambda: MultiClassBottomUpPipeline(
        PartsClassMapsDict(classes=3, keys=("maps", "class_maps")), 2, max_stride=8,
        maps_output="maps", class_output="class_maps"),
}
FLOAT = {"scaled": False, "float": True}
ANIMALS = {"scaled": 2, "float": 3}


def bottomup_scene(name, samples, height, width, seed):
    return scene(samples, height, width, seed, count=ANIMALS[name], float_input=FLOAT[name])


def oracle_graph(p, image):
    """(peaks, peak_vals, peak_valid, class_probs) as numpy, from the oracles."""
    raw = p.head.head(oracle_frames(image, p.input_scale, p.max_stride))
    maps, class_maps = raw[p.head.first], raw[p.head.second]
    points, vals, valid = oracle.topk_peaks(maps, p.max_peaks, p.threshold, "integral", 5)
    samples, parts, slots = valid.shape
    sample_inds = np.repeat(np.arange(samples), parts * slots)
    probs = identity_oracle.lookup(class_maps.numpy(), points.reshape(-1, 2), sample_inds,
                                   stride=p.class_stride / p.stride)
    probs = probs.reshape(samples, parts, slots, -1)
    probs[~valid] = 0.0
    return points * (p.stride / p.input_scale), vals, valid, probs


def oracle_identities(peaks, vals, valid, probs):
    """SPEC §3.1 steps 2-4 over the valid slots, with scipy per (frame, part)."""
    samples, parts = valid.shape[:2]
    s, c, _ = np.nonzero(valid)
    return identity_oracle.classify(peaks[valid], vals[valid], probs[valid], s, c,
                                    samples, parts)


def as_torch(outputs):
    return tuple(torch.as_tensor(np.asarray(o)) for o in outputs)


def assert_identities(got, want):
    for g, w, name in zip(got, want, ("points", "point_vals", "class_probs"), strict=True):
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=name)
        np.testing.assert_allclose(g, w, atol=PX, rtol=0, err_msg=name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_pipeline_equals_oracle_composition(name):
    pipeline = CONFIGS[name]().eval()
    image = bottomup_scene(name, 2, 72, 90, seed=1)
    got = pipeline(image)
    want = oracle_graph(pipeline, image)
    assert_outputs(got, as_torch(want), pipeline.output_names)
    assert got[0].dtype == torch.float32 and got[3].dtype == torch.float32
    # "scaled" has empty slots (2 animals, 3 slots), "float" more animals than slots.
    assert bool(got[2].all()) == (ANIMALS[name] > pipeline.max_peaks)
    identities = assign_peak_classes(*got)
    assert_identities(identities, oracle_identities(*want))
    assert np.isfinite(identities[0]).any()


def test_identities_follow_the_drawn_animals():
    """Independent of the oracles: class k's part 0 is the animal drawn in band k.

    Frame 0 has one animal per band. Frame 1 has both animals in band 0: class 0 gets the
    one deeper in it, the other is assigned class 1 but dropped (not its best class)."""
    animals = [[(20.3, 30.6), (71.8, 35.2)], [(30.4, 20.2), (10.7, 44.9)]]
    image = frames(2, 64, 96, animals, seed=4, parts=False)
    pipeline = MultiClassBottomUpPipeline(PartsClassMapsTuple(), 4).eval()
    points, _, _ = assign_peak_classes(*pipeline(image))
    assert points.shape == (2, 2, 3, 2)
    for s, k, (x, y) in [(0, 0, animals[0][0]), (0, 1, animals[0][1]), (1, 0, animals[1][1])]:
        assert np.hypot(*(points[s, k, 0] - (x, y))) < 0.5
    assert np.isnan(points[1, 1]).all()


def test_empty_frame_has_no_peaks_and_no_identities():
    image = torch.zeros(2, 1, 40, 48, dtype=torch.uint8)
    pipeline = CONFIGS["scaled"]().eval()
    peaks, vals, valid, probs = pipeline(image)
    assert not bool(valid.any()) and torch.isnan(peaks).all()
    assert (vals == 0).all() and (probs == 0).all()
    points, point_vals, class_probs = assign_peak_classes(peaks, vals, valid, probs)
    assert points.shape == (2, 2, 3, 2) and np.isnan(points).all()
    assert np.isnan(point_vals).all() and np.isnan(class_probs).all()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_scripted_and_traced_equal_eager(name):
    pipeline = CONFIGS[name]().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(pipeline)
        traced = torch.jit.trace(pipeline, bottomup_scene(name, 2, 64, 80, seed=0),
                                 check_trace=False)
    for shape in [(3, 70, 90), (1, 57, 131)]:
        image = bottomup_scene(name, *shape, seed=sum(shape))
        want = pipeline(image)
        assert_outputs(scripted(image), want, pipeline.output_names)
        assert_outputs(traced(image), want, pipeline.output_names)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_export_at_other_sizes(name):
    pipeline = CONFIGS[name]().eval()
    program = export_program(pipeline, bottomup_scene(name, 2, 64, 80, seed=0))
    for shape in [(3, 90, 70), (1, 57, 131)]:
        image = bottomup_scene(name, *shape, seed=sum(shape))
        assert_outputs(program.module()(image), pipeline(image), pipeline.output_names)


_TMP = Path(tempfile.mkdtemp(prefix="peaklayers-bottomup-"))


@functools.cache
def onnx_file(name, dynamo):
    path = _TMP / f"{name}-{dynamo}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(CONFIGS[name]().eval(), bottomup_scene(name, 2, 64, 80, seed=0), path,
                    dynamo=dynamo)
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_runtime_at_other_sizes(name, dynamo):
    import onnx
    import onnxruntime as ort

    pipeline = CONFIGS[name]().eval()
    path = onnx_file(name, dynamo)
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == list(pipeline.output_names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(3, 90, 70), (1, 57, 131), (4, 120, 96)]:
        image = bottomup_scene(name, *shape, seed=sum(shape))
        got = session.run(None, {"image": image.numpy()})
        want = pipeline(image)
        assert_outputs(got, want, pipeline.output_names)
        assert got[2].dtype == np.bool_
        assert_identities(assign_peak_classes(*got), assign_peak_classes(*want))


def test_host_grouping_takes_tensors_and_arrays_alike():
    outputs = CONFIGS["scaled"]().eval()(bottomup_scene("scaled", 2, 72, 90, seed=6))
    assert_identities(assign_peak_classes(*outputs),
                      assign_peak_classes(*(o.numpy() for o in outputs)))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: MultiClassBottomUpPipeline(PartsClassMapsTuple(), 0), ValueError, "max_peaks"),
        (lambda: MultiClassBottomUpPipeline(PartsClassMapsTuple(), 4096), ValueError,
         "max_peaks"),
        (lambda: MultiClassBottomUpPipeline(PartsClassMapsTuple(), 2.0), TypeError, "max_peaks"),
        (lambda: MultiClassBottomUpPipeline(PartsClassMapsTuple(), 2, class_stride=0),
         ValueError, "class_stride"),
        (lambda: MultiClassBottomUpPipeline(PartsClassMapsTuple(), 2, stride=-1), ValueError,
         "stride"),
        (lambda: MultiClassBottomUpPipeline(PartsClassMapsTuple(), 2, maps_output="m"),
         TypeError, "maps_output and class_output"),
        (lambda: MultiClassBottomUpPipeline(PartsClassMapsTuple(), 2, maps_output=1.0),
         TypeError, "maps_output"),
        (lambda: MultiClassBottomUpPipeline("head", 2), TypeError, "head"),
    ],
)
def test_bad_settings(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_heads_whose_outputs_do_not_fit():
    image = scene(1, 32, 32, seed=0)
    with pytest.raises(ValueError, match=r"maps_output=0 does not index the head's output "
                       r"\(a Tensor\)"):
        MultiClassBottomUpPipeline(Parts(), 2)(image)
    with pytest.raises(ValueError, match=r"class_output='probs' is not a key of the head's "
                       r"output \(\['classes', 'maps'\]\)"):
        MultiClassBottomUpPipeline(PartsClassMapsDict(keys=("maps", "classes")), 2,
                                   maps_output="maps", class_output="probs")(image)
    vectors = MultiClassBottomUpPipeline(PartsClasses(2), 2, maps_output="maps",
                                         class_output="classes")
    with pytest.raises(ValueError, match="class_output"):
        vectors(image)  # class vectors, not class maps


def test_bad_host_input():
    peaks, vals, valid, probs = CONFIGS["scaled"]().eval()(bottomup_scene("scaled", 1, 40, 48, 0))
    with pytest.raises(ValueError, match="peak_valid"):
        assign_peak_classes(peaks, vals, valid.to(torch.uint8), probs)
    with pytest.raises(ValueError, match="peaks"):
        assign_peak_classes(peaks[0], vals, valid, probs)
    with pytest.raises(ValueError, match="class_probs"):
        assign_peak_classes(peaks, vals, valid, probs[..., None])


def test_repr_and_kind():
    pipeline = CONFIGS["scaled"]()
    assert pipeline.kind == "multi_class_bottomup"
    assert "max_peaks=3" in repr(pipeline) and "class_stride=4" in repr(pipeline)
    assert pipeline.min_frame_size() == 18  # (2 * 4 + 1) / 0.5: class maps at least 2 x 2
