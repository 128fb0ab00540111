"""ONNX export of every peak layer (alone and after a head), run in ONNX Runtime (SPEC §4).

Each graph is exported once, at ``EXPORT_SHAPE`` (see export_helpers), by both ONNX
exporters, and then run by ONNX Runtime's CPU execution provider at other batch and map
sizes (non-square, odd, smaller than the refinement patch, 1 x 1). Outputs must equal
eager PyTorch: peak sets, indices, valid masks and values exactly, refined points within
1e-5 px. Eager itself is held to the pixel-loop oracle in test_peaks.py; a few cheap cases
are also checked against the oracle directly here.
"""

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import cases
import oracle
from export_helpers import (
    CHANNELS,
    EXPORTERS,
    KINDS,
    THRESHOLD,
    K,
    assert_maps_same,
    assert_same,
    dyadic_head,
    eager,
    exported,
    image_cases,
    images,
    make_layer,
    make_model,
    map_cases,
    run_session,
    session,
)
from peaklayers import (
    GlobalPeaks,
    LocalPeaks,
    TopKPeaks,
    export_onnx,
    output_names_for,
)
from peaklayers.exporting import DYNAMO_OPSETS, TORCHSCRIPT_OPSETS

FP32_CASES = map_cases(torch.float32)
FP16_CASES = map_cases(torch.float16)
IMAGE_CASES = image_cases(torch.float32)
FP16_IMAGE_CASES = image_cases(torch.float16)

NAMES = {
    "global": ("points", "vals"),
    "local": ("points", "vals", "sample_inds", "channel_inds"),
    "topk": ("points", "vals", "valid"),
}


def ids(case_list):
    return [name for name, _ in case_list]


# -- parity with eager ------------------------------------------------------------------


@pytest.mark.parametrize("case", FP32_CASES, ids=ids(FP32_CASES))
@pytest.mark.parametrize("refinement", ["integral", None])
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_matches_eager(kind, exporter, refinement, case):
    _, cms = case
    out = run_session(session(kind, exporter, refinement), cms)
    assert_same(out, eager(make_layer(kind, refinement), cms), refined=refinement is not None)


@pytest.mark.parametrize("case", FP32_CASES, ids=ids(FP32_CASES))
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", ["local", "topk"])
def test_merged_flat_tops_match_eager(kind, exporter, case):
    _, cms = case
    out = run_session(session(kind, exporter, flat_tops="merge"), cms)
    assert_same(out, eager(make_layer(kind, flat_tops="merge"), cms))


@pytest.mark.parametrize("case", FP16_CASES, ids=ids(FP16_CASES))
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", KINDS)
def test_fp16_layer_matches_eager(kind, exporter, case):
    """Half-precision maps: thresholds and maxima compared in fp16, refinement in fp32."""
    _, cms = case
    out = run_session(session(kind, exporter, dtype=torch.float16), cms)
    assert out[1].dtype == torch.float16 and out[0].dtype == torch.float32
    assert_same(out, eager(make_layer(kind), cms))


@pytest.mark.parametrize("case", IMAGE_CASES, ids=ids(IMAGE_CASES))
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", KINDS)
def test_head_and_layer_match_eager(kind, exporter, case):
    _, x = case
    out = run_session(session(kind, exporter, head=True), x)
    assert_same(out, eager(make_model(kind, head=True), x))


@pytest.mark.parametrize("case", FP16_IMAGE_CASES, ids=ids(FP16_IMAGE_CASES))
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", KINDS)
def test_fp16_head_and_layer_match_eager(kind, exporter, case):
    _, x = case
    out = run_session(session(kind, exporter, head=True, dtype=torch.float16), x)
    assert_same(out, eager(make_model(kind, head=True, dtype=torch.float16), x))


def test_parity_cases_find_peaks():
    """The case list is not vacuous: it holds peaks, plateaus, empty maps and ties."""
    counts = [int(eager(make_layer("local"), cms)[1].shape[0]) for _, cms in FP32_CASES]
    assert sum(counts) > 100 and counts.count(0) >= 2
    plateaus = dict(FP32_CASES)["plateaus"]
    assert eager(make_layer("local", None), plateaus)[1].shape[0] == 7  # one lone peak each


# -- against the oracle, where cheap ----------------------------------------------------

ORACLE_CASES = [c for c in FP32_CASES if c[1].numel() <= 3000]


@pytest.mark.parametrize("case", ORACLE_CASES, ids=ids(ORACLE_CASES))
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_onnx_matches_oracle(exporter, case):
    _, cms = case
    points, vals = run_session(session("global", exporter), cms)
    exp_points, exp_vals = oracle.global_peaks(cms, THRESHOLD)
    np.testing.assert_array_equal(vals.double().numpy(), exp_vals)
    np.testing.assert_allclose(points.double().numpy(), exp_points, atol=1e-5, rtol=0)

    points, vals, samples, channels = run_session(session("local", exporter), cms)
    exp = oracle.local_peaks(cms, THRESHOLD)
    np.testing.assert_array_equal(samples.numpy(), exp[2])
    np.testing.assert_array_equal(channels.numpy(), exp[3])
    np.testing.assert_array_equal(vals.double().numpy(), exp[1])
    np.testing.assert_allclose(points.double().numpy(), exp[0], atol=1e-5, rtol=0)

    points, vals, valid = run_session(session("topk", exporter), cms)
    exp_points, exp_vals, exp_valid = oracle.topk_peaks(cms, K, THRESHOLD)
    np.testing.assert_array_equal(valid.numpy(), exp_valid)
    np.testing.assert_array_equal(vals.double().numpy(), exp_vals)
    np.testing.assert_allclose(points.double().numpy(), exp_points, atol=1e-5, rtol=0)


# -- the exported files -----------------------------------------------------------------


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", KINDS)
def test_graph_is_checked_named_and_dynamic(kind, exporter):
    model = onnx.load(str(exported(kind, exporter)))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)

    (graph_input,) = inferred.graph.input
    assert graph_input.name == "confmaps"
    dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # S, H, W dynamic
    assert dims[1].dim_value == CHANNELS
    assert tuple(o.name for o in inferred.graph.output) == NAMES[kind]
    declared = {  # no size of the example is frozen into the outputs
        "global": [["batch", CHANNELS, 2], ["batch", CHANNELS]],
        "local": [["peaks", 2], ["peaks"], ["peaks"], ["peaks"]],
        "topk": [["batch", CHANNELS, K, 2], ["batch", CHANNELS, K], ["batch", CHANNELS, K]],
    }[kind]
    for out, expected in zip(inferred.graph.output, declared, strict=True):
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        assert dims == expected, out.name

    version = {o.domain: o.version for o in model.opset_import}[""]
    assert version == (17 if exporter == "torchscript" else DYNAMO_OPSETS[-1])
    props = {p.key: p.value for p in model.metadata_props}
    assert props["peaklayers.layer"].startswith(type(make_layer(kind)).__name__ + "(")


def test_output_names_for():
    assert output_names_for(GlobalPeaks()) == NAMES["global"]
    assert output_names_for(LocalPeaks()) == NAMES["local"]
    assert output_names_for(TopKPeaks(3)) == NAMES["topk"]
    with pytest.raises(TypeError, match="layer must be"):
        output_names_for(nn.ReLU())


class _Pipeline(nn.Module):
    """A model that is not a Sequential but still ends in a peak layer."""

    def __init__(self):
        super().__init__()
        self.head = dyadic_head()
        self.peaks = TopKPeaks(K, THRESHOLD)

    def forward(self, image):
        return self.peaks(self.head(image))


class _AfterPeaks(nn.Module):
    """Post-processing after the peak layer: its outputs are no longer the layer's."""

    def __init__(self):
        super().__init__()
        self.peaks = GlobalPeaks(THRESHOLD)

    def forward(self, cms):
        points, vals = self.peaks(cms)
        return points * 4.0


@pytest.mark.parametrize("dynamo", [False, True])
def test_custom_module_ending_in_a_peak_layer(tmp_path, dynamo):
    path = export_onnx(
        _Pipeline(), images(2, 12, 10), tmp_path / "p.onnx", dynamo=dynamo,
        input_name="image", metadata={"model": "demo"},
    )
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["points", "vals", "valid"]
    assert {p.key: p.value for p in model.metadata_props}["model"] == "demo"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images(3, 21, 8, seed=5)
    assert_same(run_session(sess, x), eager(_Pipeline(), x))


SCRIPTED_LAYERS = [("global", "drop"), ("local", "drop"), ("local", "merge"),
                   ("topk", "drop"), ("topk", "merge")]


@pytest.mark.parametrize("kind, flat_tops", SCRIPTED_LAYERS)
def test_torchscript_head_and_layer(tmp_path, kind, flat_tops):
    """A TorchScript head makes export_onnx script the whole model; the layers' scripted
    code then keeps only what a graph holds (packed booleans, loops and device tests of
    the scripted top-K and flat-top paths cannot be exported), and runs like eager."""
    model = nn.Sequential(torch.jit.script(dyadic_head()), make_layer(kind, flat_tops=flat_tops))
    path = export_onnx(model, images(2, 12, 10), tmp_path / "m.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not {"Loop", "If", "Scan"} & ops
    assert ("NonZero" in ops) == (kind == "local")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (images(1, 9, 14, seed=3), images(3, 21, 17, seed=4)):
        assert_same(run_session(sess, x), eager(model, x))
    # The flag is the exporter's: the layer and a later scripting of it are as before.
    assert getattr(model[1], "for_graph", False) is False
    scripted = torch.jit.script(model[1])
    with torch.no_grad():
        cms = model[0](images(2, 15, 11, seed=5))
        assert_same(scripted(cms), model[1](cms))


@pytest.mark.parametrize("dynamo", [False, True])
def test_plain_head(tmp_path, dynamo):
    """A head alone exports too; its output is named confmaps and its input image."""
    head = dyadic_head()
    path = export_onnx(head, images(2, 12, 10), tmp_path / "head.onnx", dynamo=dynamo)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["confmaps"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (images(1, 5, 7, seed=1), images(3, 30, 17, seed=2)):
        assert_maps_same(run_session(sess, x), eager(head, x))


def test_example_of_size_one_stays_dynamic(tmp_path):
    path = export_onnx(make_layer("topk"), cases.noisy(1, CHANNELS, 1, 1), tmp_path / "a.onnx",
                       dynamo=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cms = cases.gaussians(2, CHANNELS, 11, 6, seed=3)
    assert_same(run_session(sess, cms), eager(make_layer("topk"), cms))


def test_opsets_at_both_ends(tmp_path):
    import onnxruntime as ort

    cms = cases.gaussians(2, CHANNELS, 13, 9, seed=12)
    for dynamo, opset in [(False, TORCHSCRIPT_OPSETS[0]), (False, TORCHSCRIPT_OPSETS[-1]),
                          (True, DYNAMO_OPSETS[0])]:
        path = export_onnx(make_layer("local"), cms[:1, :, :7, :5], tmp_path / f"{opset}.onnx",
                           dynamo=dynamo, opset=opset)
        model = onnx.load(str(path))
        assert {o.domain: o.version for o in model.opset_import}[""] == opset
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert_same(run_session(sess, cms), eager(make_layer("local"), cms))


def test_model_mode_is_restored(tmp_path):
    model = nn.Sequential(dyadic_head(), LocalPeaks()).train()
    export_onnx(model, images(2, 8, 8), tmp_path / "m.onnx")
    assert all(m.training for m in model.modules())


# -- bad input --------------------------------------------------------------------------


def test_bad_opset(tmp_path):
    cms = cases.noisy(2, CHANNELS, 8, 8)
    with pytest.raises(ValueError, match="opset 15 is not supported with dynamo=False"):
        export_onnx(GlobalPeaks(), cms, tmp_path / "x.onnx", opset=15)
    with pytest.raises(ValueError, match="opset 99 is not supported with dynamo=True"):
        export_onnx(GlobalPeaks(), cms, tmp_path / "x.onnx", opset=99, dynamo=True)
    with pytest.raises(ValueError, match="opset 17 is not supported with dynamo=True"):
        export_onnx(GlobalPeaks(), cms, tmp_path / "x.onnx", opset=17, dynamo=True)
    with pytest.raises(TypeError, match="opset must be an int"):
        export_onnx(GlobalPeaks(), cms, tmp_path / "x.onnx", opset="17")
    assert not (tmp_path / "x.onnx").exists()


def test_bad_example(tmp_path):
    with pytest.raises(TypeError, match="example must have a floating-point dtype"):
        export_onnx(GlobalPeaks(), torch.ones(2, 3, 8, 8, dtype=torch.int64), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="example must be a 4-D tensor"):
        export_onnx(GlobalPeaks(), torch.rand(3, 8, 8), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="example must be a torch.Tensor"):
        export_onnx(GlobalPeaks(), np.zeros((2, 3, 8, 8), np.float32), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="example must not be empty"):
        export_onnx(GlobalPeaks(), torch.rand(0, 3, 8, 8), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="example must have a floating-point dtype"):
        import peaklayers

        peaklayers.export_program(GlobalPeaks(), torch.ones(2, 3, 8, 8, dtype=torch.int32))


def test_bad_model(tmp_path):
    x = images(2, 8, 8)
    flat = nn.Sequential(dyadic_head(), nn.Flatten())
    message = r"model must end with a peak layer .*output is \(Tensor\[2, 192\]\)"
    with pytest.raises(ValueError, match=message):
        export_onnx(flat, x, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="model must end with a peak layer"):
        export_onnx(_AfterPeaks(), cases.noisy(2, CHANNELS, 8, 8), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export_onnx(lambda t: t, x, tmp_path / "x.onnx")


def test_bad_names_and_metadata(tmp_path):
    cms = cases.noisy(2, CHANNELS, 8, 8)
    with pytest.raises(ValueError, match="output_names must name 3 outputs"):
        export_onnx(TopKPeaks(2), cms, tmp_path / "x.onnx", output_names=("a", "b"))
    with pytest.raises(ValueError, match="input and output names must all differ"):
        export_onnx(GlobalPeaks(), cms, tmp_path / "x.onnx", output_names=("confmaps", "v"))
    with pytest.raises(TypeError, match="metadata must be a dict of str to str"):
        export_onnx(GlobalPeaks(), cms, tmp_path / "x.onnx", metadata={"a": 1})


def test_layer_errors_reach_the_user(tmp_path):
    """A map the layer refuses (3-D) is refused at export, with the layer's own message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="must be a 4-D tensor"):
            export_onnx(nn.Sequential(nn.Flatten(2), GlobalPeaks()), images(2, 4, 4),
                        tmp_path / "x.onnx")
