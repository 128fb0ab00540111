"""The reference library's exported-model format (SPEC §5.5).

Checked against the SPEC and the reference's own lists (written out here, not taken from
the code under test): input ``image`` uint8 ``(batch, C, height, width)``; outputs by name
and position per model type; float32 points and values, bool masks; empty slots zero, a
part dropped inside a valid slot NaN with value 0; ``export_metadata.json`` with exactly
the reference's keys, the same JSON embedded as ``sleap_nn_metadata``, peaklayers' own
settings only under other ``metadata_props`` keys.
"""

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from peaklayers.exporting.sleap_nn import export_sleap_nn
from peaklayers.ops.pipelines import (
    CentroidPipeline,
    MultiClassTopDownPipeline,
    SingleInstancePipeline,
    TopDownPipeline,
)
from pipeline_heads import Blur, Parts, PartsClasses, animals_for, frames
from sleap_nn_reference import OUTPUT_NAMES, check_directory

CASES = {
    "single_instance": lambda: SingleInstancePipeline(Parts(), input_scale=0.5, max_stride=4),
    "centroid": lambda: CentroidPipeline(Blur(), 3),
    "topdown": lambda: TopDownPipeline(Blur(), Parts(), (24, 20), 3),
    "multi_class_topdown_combined": lambda: MultiClassTopDownPipeline(
        Blur(), PartsClasses(2), 24, 3, instance_output="maps", class_output="classes"
    ),
}


def scene(samples, height, width, seed, count):
    return frames(samples, height, width, animals_for(samples, height, width, count, seed),
                  seed)


@pytest.mark.parametrize(
    ("model_type", "dynamo"),
    # Both exporters for the top-down graphs (the others' graphs are parts of them and
    # are held to both exporters in test_pipelines.py).
    [(t, False) for t in CASES] + [("topdown", True), ("multi_class_topdown_combined", True)],
)
def test_sleap_nn_directory(model_type, dynamo, tmp_path):
    names = OUTPUT_NAMES[model_type]
    pipeline = CASES[model_type]().eval()
    out = tmp_path / "exported"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_sleap_nn(pipeline, scene(2, 64, 80, 0, 2), out, dynamo=dynamo,
                        node_names=["head", "left", "right"] if model_type != "centroid"
                        else None)
    assert sorted(p.name for p in out.iterdir()) == ["export_metadata.json", "model.onnx"]
    session, metadata = check_directory(out, model_type, channels=1)

    # Another size, one animal per frame: the other slots are empty.
    frames_ = scene(3, 90, 70, 3, 1)
    got = dict(zip(names, session.run(None, {"image": frames_.numpy()}), strict=True))
    want = [t.numpy() for t in pipeline(frames_)]
    if model_type == "single_instance":
        np.testing.assert_allclose(got["peaks"], want[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["peak_vals"], want[1], atol=1e-6, rtol=0)
    else:
        valid = want[names.index("instance_valid") if model_type == "centroid" else 4]
        np.testing.assert_array_equal(got["instance_valid"], valid)
        assert valid.sum(axis=1).tolist() == [1, 1, 1]
        ours = dict(zip(pipeline.output_names, want, strict=True))
        ours["class_logits"] = ours.get("class_probs")
        for name in names:
            if name == "instance_valid":
                continue
            assert (got[name][~valid] == 0).all(), name  # zero-filled, not NaN
            np.testing.assert_allclose(got[name][valid], ours[name][valid], atol=1e-5, rtol=0)

    assert metadata["input_scale"] == pipeline.input_scale
    if model_type == "centroid":
        assert metadata["node_names"] == [] and metadata["crop_size"] is None
        assert metadata["max_instances"] == 3
    else:
        assert metadata["node_names"] == ["head", "left", "right"]
        assert metadata["n_nodes"] == 3
    if model_type.startswith(("topdown", "multi")):
        assert metadata["crop_size"] == ([24, 20] if model_type == "topdown" else [24, 24])
    if model_type == "multi_class_topdown_combined":
        assert metadata["n_classes"] == 2 and metadata["class_names"] == ["class_0", "class_1"]
    else:
        assert metadata["n_classes"] is None and metadata["class_names"] is None


def test_dropped_part_inside_a_valid_slot_stays_nan(tmp_path):
    """A part below the threshold in a found instance: NaN point, value 0 (reference)."""
    pipeline = TopDownPipeline(Blur(), Parts(), 16, 2, peak_threshold=5.0).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_sleap_nn(pipeline, scene(2, 64, 80, 0, 2), tmp_path / "d")
    session = ort.InferenceSession(str(tmp_path / "d" / "model.onnx"))
    centroids, _, peaks, peak_vals, valid = session.run(
        None, {"image": scene(2, 70, 66, 4, 1).numpy()}
    )
    assert valid.sum() == 2
    assert np.isnan(peaks[valid]).all() and (peak_vals[valid] == 0).all()
    assert (peaks[~valid] == 0).all() and (centroids[~valid] == 0).all()


def test_bad_arguments_write_nothing(tmp_path):
    pipeline = CentroidPipeline(Blur(), 2)
    with pytest.raises(TypeError, match="example must be a uint8"):
        export_sleap_nn(pipeline, scene(1, 32, 32, 0, 1).float(), tmp_path / "a")
    taken = tmp_path / "b"
    taken.mkdir()
    (taken / "x").write_text("")
    with pytest.raises(ValueError, match="exists and is not an empty directory"):
        export_sleap_nn(pipeline, scene(1, 32, 32, 0, 1), taken)
    with pytest.raises(ValueError, match="node_names must name 3"):
        export_sleap_nn(SingleInstancePipeline(Parts()), scene(1, 32, 32, 0, 1),
                        tmp_path / "c", node_names=["a"])
    with pytest.raises(TypeError, match="pipeline must be"):
        export_sleap_nn(torch.nn.Identity(), scene(1, 32, 32, 0, 1), tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_torchscript_heads_leave_no_never_ending_loop(tmp_path):
    """TorchScript heads make the exporter script the whole wrapper: its zero-fill must
    not become an ONNX Loop with a constant-true condition (ONNX Runtime hangs in it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads = torch.jit.script(Blur().eval()), torch.jit.script(Parts().eval())
        pipeline = MultiClassTopDownPipeline(heads[0], torch.jit.script(PartsClasses(2).eval()),
                                             16, 3, instance_output="maps",
                                             class_output="classes").eval()
        export_sleap_nn(pipeline, scene(2, 64, 80, 0, 2), tmp_path / "d")
    session, _ = check_directory(tmp_path / "d", "multi_class_topdown_combined", channels=1)
    frames_ = scene(2, 70, 66, 4, 1)
    got = session.run(None, {"image": frames_.numpy()})
    centroids, _, peaks, _, valid, probs = [t.numpy() for t in pipeline(frames_)]
    np.testing.assert_array_equal(got[5], valid)
    assert valid.sum() == 2
    for g, w in ((got[0], centroids), (got[2], peaks), (got[4], probs)):
        assert (g[~valid] == 0).all()
        np.testing.assert_allclose(g[valid], w[valid], atol=1e-5, rtol=0)
