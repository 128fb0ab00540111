"""Whole pipelines (SPEC §5.2-§5.4): frames in, frame-pixel points out.

Oracle: a plain-Python composition of the functional API, one frame and one instance at
a time (``F.interpolate`` and ``F.pad`` for the frames; ``find_global_peaks``,
``find_local_peaks`` sorted by value for the centroids; ``crop_bboxes(make_centered_bboxes)``
on the centre snapped to the pixel grid for the crops; the head called on each crop
alone). The heads are fixed convolutions (tests/pipeline_heads.py) on frames with
Gaussian blobs, so the peaks are known to exist. Then the same pipelines in TorchScript,
``torch.export`` and ONNX Runtime (both exporters), exported once and run at other batch
and frame sizes, uint8 and float input.
"""

import functools
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from peaklayers import export_onnx, export_program
from peaklayers.functional import (
    crop_bboxes,
    find_global_peaks,
    find_local_peaks,
    make_centered_bboxes,
)
from peaklayers.ops.pipelines import (
    CentroidPipeline,
    MultiClassTopDownPipeline,
    SingleInstancePipeline,
    TopDownPipeline,
)
from peaklayers.serving.pipelines import assign_instance_classes
from pipeline_heads import Blur, Parts, PartsClasses, PartsTuple, animals_for, frames

PX = 1e-5
CROP = (24, 20)
SLOTS = 3


# -- oracle ---------------------------------------------------------------------------------


def oracle_frames(image, scale, max_stride):
    x = image.to(torch.float32) / 255 if image.dtype == torch.uint8 else image.float()
    if scale != 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False,
                          antialias=scale < 1, recompute_scale_factor=False)
    h, w = x.shape[2:]
    return F.pad(x, (0, -w % max_stride, 0, -h % max_stride))


def oracle_single(p, image):
    maps = p.head(oracle_frames(image, p.input_scale, p.max_stride))
    points, vals = find_global_peaks(maps, p.threshold, "integral")
    return points * p.stride / p.input_scale, vals


def oracle_centroids(maps, threshold, slots, factor):
    samples = maps.shape[0]
    points = torch.full((samples, slots, 2), float("nan"))
    vals = torch.zeros(samples, slots)
    valid = torch.zeros(samples, slots, dtype=torch.bool)
    found, found_vals, sample_inds, _ = find_local_peaks(maps, threshold, "integral")
    for s in range(samples):
        mine = [i for i in range(len(found)) if int(sample_inds[i]) == s]
        mine.sort(key=lambda i: -float(found_vals[i]))  # stable: row-major among ties
        for slot, i in enumerate(mine[:slots]):
            points[s, slot] = found[i] * factor
            vals[s, slot] = found_vals[i]
            valid[s, slot] = True
    return points, vals, valid


def oracle_topdown(p, image, classes=False):
    maps = p.centroid_head(oracle_frames(image, p.input_scale, p.max_stride))
    centroids, cvals, valid = oracle_centroids(
        maps, p.threshold, p.max_instances, p.centroid_stride / p.input_scale
    )
    frames_ = oracle_frames(image, 1, 1)
    samples, parts = image.shape[0], None
    results = []
    for s in range(samples):
        for i in range(p.max_instances):
            if not valid[s, i]:
                results.append(None)
                continue
            h, w = p.crop_height, p.crop_width
            corner = torch.floor(centroids[s, i] + 0.5) - torch.tensor([w // 2, h // 2])
            snapped = corner + torch.tensor([w / 2 - 0.5, h / 2 - 0.5])
            box = make_centered_bboxes(snapped[None], h, w)
            crop = crop_bboxes(frames_, box, torch.tensor([s]))
            crop = oracle_frames(crop, p.instance_input_scale, p.instance_max_stride)
            out = p.instance_head.head(crop)
            if classes:
                maps_i, probs = out["maps"], out["classes"][0]
            else:
                maps_i, probs = (out[1] if isinstance(out, tuple) else out), None
            points, vals = find_global_peaks(maps_i, p.peak_threshold, "integral")
            points = points[0] * p.instance_stride / p.instance_input_scale + box[0, 0]
            results.append((points, vals[0], probs))
            parts = points.shape[0]
    peaks = torch.full((samples, p.max_instances, parts, 2), float("nan"))
    peak_vals = torch.zeros(samples, p.max_instances, parts)
    probs = None
    for index, r in enumerate(results):
        s, i = divmod(index, p.max_instances)
        if r is not None:
            peaks[s, i], peak_vals[s, i] = r[0], r[1]
            if classes:
                if probs is None:
                    probs = torch.zeros(samples, p.max_instances, r[2].shape[0])
                probs[s, i] = r[2]
    out = (centroids, cvals, peaks, peak_vals, valid)
    return (*out, probs) if classes else out


# -- pipelines under test -------------------------------------------------------------------

CONFIGS = {
    "single": lambda: SingleInstancePipeline(Parts(), input_scale=0.5, max_stride=4),
    "single-float": lambda: SingleInstancePipeline(Parts(), input_scale=1.0, max_stride=8),
    "centroid": lambda: CentroidPipeline(Blur(2), SLOTS, stride=2, input_scale=0.5,
                                         max_stride=4),
    "topdown": lambda: TopDownPipeline(Blur(2), PartsTuple(), CROP, SLOTS, centroid_stride=2,
                                       input_scale=0.5, max_stride=4, instance_output=1),
    "topdown-scaled": lambda: TopDownPipeline(Blur(), Parts(), (25, 19), 2,
                                              instance_input_scale=0.5,
                                              instance_max_stride=4),
    "multiclass": lambda: MultiClassTopDownPipeline(Blur(), PartsClasses(2), CROP, SLOTS,
                                                    instance_output="maps",
                                                    class_output="classes"),
}


def oracle(name, pipeline, image):
    if name.startswith("single"):
        return oracle_single(pipeline, image)
    if name == "centroid":
        maps = pipeline.head(oracle_frames(image, pipeline.input_scale, pipeline.max_stride))
        return oracle_centroids(maps, pipeline.threshold, SLOTS,
                                pipeline.stride / pipeline.input_scale)
    return oracle_topdown(pipeline, image, classes=name == "multiclass")


def scene(samples, height, width, seed, count=2, float_input=False):
    image = frames(samples, height, width, animals_for(samples, height, width, count, seed),
                   seed)
    return image.to(torch.float32) / 255 if float_input else image


def assert_outputs(got, want, names):
    assert len(got) == len(want) == len(names)
    for g, w, name in zip(got, want, names, strict=True):
        g = torch.as_tensor(np.asarray(g)) if not isinstance(g, torch.Tensor) else g
        assert g.shape == w.shape, name
        if w.dtype == torch.bool:
            assert torch.equal(g, w), name
        else:
            assert torch.equal(torch.isnan(g), torch.isnan(w)), name
            torch.testing.assert_close(g.float(), w.float(), atol=PX, rtol=0, equal_nan=True,
                                       msg=name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_pipeline_equals_functional_composition(name):
    pipeline = CONFIGS[name]().eval()
    image = scene(2, 72, 88, seed=1, float_input=name.endswith("float"))
    got = pipeline(image)
    assert_outputs(got, oracle(name, pipeline, image), pipeline.output_names)
    if "instance_valid" in pipeline.output_names:  # the scenes hold animals to find
        assert bool(got[pipeline.output_names.index("instance_valid")].any())


def test_topdown_finds_the_parts_of_each_animal():
    """Independent of the oracle: each animal's centre comes back where it was drawn, as a
    centroid and as part 0 in frame pixels (crop offsets undone).

    At scale 1 and stride 1 only: SPEC §5.1 maps a point as ``p * t / s``, which puts
    output pixel j at input pixel ``j * t``, while an average-pooled or resized pixel's
    centre is at ``j * t + (t - 1) / 2``; that convention (the reference's too) shifts
    points by up to 1.5 px at s = 0.5, t = 2 and is documented in docs/pipelines.md."""
    animals = animals_for(2, 80, 96, 2, seed=5)
    image = frames(2, 80, 96, animals, seed=5, parts=False)  # one round blob per animal
    out = TopDownPipeline(Blur(), Parts(), CROP, SLOTS)(image)
    centroids, peaks, valid = out[0], out[2], out[4]
    for s in range(2):
        assert int(valid[s].sum()) == 2
        for cx, cy in animals[s]:
            distance = (centroids[s] - torch.tensor([cx, cy])).norm(dim=1)
            slot = int(distance.nan_to_num(1e9).argmin())
            assert float(distance[slot]) < 0.5
            # Part 0's map is the blurred blob itself (PARTS[0] is the centre).
            assert float((peaks[s, slot, 0] - torch.tensor([cx, cy])).norm()) < 0.5


def test_empty_slots_are_nan_and_zero():
    image = scene(2, 64, 64, seed=2, count=1)
    out = TopDownPipeline(Blur(), Parts(), CROP, 4)(image)
    valid = out[4]
    assert valid.sum(dim=1).tolist() == [1, 1]
    empty = ~valid
    assert torch.isnan(out[0][empty]).all() and (out[1][empty] == 0).all()
    assert torch.isnan(out[2][empty]).all() and (out[3][empty] == 0).all()


@pytest.mark.parametrize("name", ["single", "topdown", "multiclass"])
def test_scripted_equals_eager(name):
    pipeline = CONFIGS[name]().eval()
    image = scene(3, 70, 90, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(pipeline)
    assert_outputs(scripted(image), pipeline(image), pipeline.output_names)


@pytest.mark.parametrize("name", ["single", "centroid", "topdown", "multiclass"])
def test_torch_export_at_other_sizes(name):
    pipeline = CONFIGS[name]().eval()
    program = export_program(pipeline, scene(2, 64, 80, seed=0))
    for shape in [(3, 90, 70), (1, 57, 131)]:
        image = scene(*shape, seed=sum(shape))
        assert_outputs(program.module()(image), pipeline(image), pipeline.output_names)


_TMP = Path(tempfile.mkdtemp(prefix="peaklayers-pipelines-"))


@functools.cache
def onnx_file(name, dynamo):
    pipeline = CONFIGS[name]().eval()
    example = scene(2, 64, 80, seed=0, float_input=name.endswith("float"))
    path = _TMP / f"{name}-{dynamo}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(pipeline, example, path, dynamo=dynamo)
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
    assert [i.name for i in model.graph.input] == ["image"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    float_input = name.endswith("float")
    for shape in [(3, 90, 70), (1, 57, 131)]:
        image = scene(*shape, seed=sum(shape), float_input=float_input)
        got = session.run(None, {"image": image.numpy()})
        assert_outputs(got, pipeline(image), pipeline.output_names)


def test_host_class_assignment_per_frame_over_valid_slots():
    probs = torch.tensor([
        [[0.9, 0.1], [0.8, 0.2], [0.0, 0.0]],
        [[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]],
    ])
    valid = torch.tensor([[True, True, False], [True, False, False]])
    inds, scores = assign_instance_classes(probs, valid)
    # Frame 0: 0.9 + 0.2 (=1.1) beats 0.1 + 0.8; frame 1: one valid instance takes class 1.
    np.testing.assert_array_equal(inds, [[0, 1, -1], [1, -1, -1]])
    np.testing.assert_allclose(scores, [[0.9, 0.2, np.nan], [0.7, np.nan, np.nan]])


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: CentroidPipeline(Blur(), 0), ValueError, "max_instances"),
        (lambda: CentroidPipeline(Blur(), 2.0), TypeError, "max_instances"),
        (lambda: TopDownPipeline(Blur(), Parts(), (0, 8), 2), ValueError, "crop_size"),
        (lambda: TopDownPipeline(Blur(), Parts(), (8, -1), 2), ValueError, "crop_size"),
        (lambda: TopDownPipeline(Blur(), Parts(), "8", 2), TypeError, "crop_size"),
        (lambda: SingleInstancePipeline(Parts(), input_scale=0), ValueError, "input_scale"),
        (lambda: SingleInstancePipeline(Parts(), input_scale=-2), ValueError, "input_scale"),
        (lambda: TopDownPipeline(Blur(), Parts(), 8, 2, instance_input_scale=0.0), ValueError,
         "instance_input_scale"),
        (lambda: SingleInstancePipeline(Parts(), max_stride=0), ValueError, "max_stride"),
        (lambda: SingleInstancePipeline(Parts(), stride=0), ValueError, "stride"),
        (lambda: SingleInstancePipeline("head"), TypeError, "head"),
        (lambda: SingleInstancePipeline(Parts(), head_output=1.5), TypeError, "head_output"),
        (lambda: MultiClassTopDownPipeline(Blur(), Parts(), 8, 2, instance_output=0,
                                           class_output="c"), TypeError, "class_output"),
    ],
)
def test_bad_settings(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_centroid_head_with_several_channels():
    image = scene(1, 32, 32, seed=0)
    with pytest.raises(ValueError, match="centroid_head must return one channel"):
        TopDownPipeline(Parts(), Parts(), 8, 2)(image)
    with pytest.raises(ValueError, match="centroid_head must return one channel"):
        CentroidPipeline(Parts(), 2)(image)


def test_head_output_that_is_not_maps():
    image = scene(1, 32, 32, seed=0)
    with pytest.raises(ValueError, match="instance_head must return floating-point maps"):
        TopDownPipeline(Blur(), torch.nn.Flatten(), 8, 2)(image)
    with pytest.raises(ValueError, match="head must return floating-point maps"):
        SingleInstancePipeline(torch.nn.Flatten())(image)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SingleInstancePipeline(PartsTuple()), "head_output is not set, but the head "
         "returns a tuple"),
        (lambda: SingleInstancePipeline(PartsTuple(), head_output=2),
         r"head_output=2 does not index the head's output \(2 outputs\)"),
        (lambda: SingleInstancePipeline(Parts(), head_output=0),
         r"head_output=0 does not index the head's output \(a Tensor\)"),
        (lambda: SingleInstancePipeline(PartsClasses(), head_output="confmaps"),
         r"head_output='confmaps' is not a key of the head's output \(\['classes', 'maps'\]\)"),
        (lambda: TopDownPipeline(Blur(), PartsTuple(), 8, 2, instance_output=-3),
         "instance_output=-3 does not index"),
        (lambda: TopDownPipeline(Blur(), PartsTuple(), 8, 2, centroid_output="maps"),
         "centroid_output='maps' is not a key of the head's output \\(Tensor\\)"),
        (lambda: MultiClassTopDownPipeline(Blur(), PartsClasses(), 8, 2, instance_output="maps",
                                           class_output="probs"), "class_output='probs'"),
        # Indexing a tensor would take its first sample: a tensor is refused.
        (lambda: MultiClassTopDownPipeline(Blur(), Parts(), 8, 2),
         r"instance_output=0 does not index the head's output \(a Tensor\)"),
    ],
)
def test_head_output_that_is_not_there(make, match):
    """A selector that does not fit the head's output names the argument (not an
    IndexError or KeyError from inside the head's output)."""
    with pytest.raises(ValueError, match=match):
        make()(scene(1, 32, 32, seed=0))


def test_repr_shows_settings():
    text = repr(CONFIGS["topdown"]())
    assert "crop_size=(24, 20)" in text and "max_instances=3" in text
    assert math.isclose(CONFIGS["topdown"]().min_frame_size(), 10)
