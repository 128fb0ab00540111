"""export_onnx beyond one input and the peak layer's outputs: extra outputs (a
ClassMapLookup's class_probs), several inputs, and heads loaded from a torch.export
program (.pt2) or a TorchScript archive.

Each graph is exported once and run under ONNX Runtime at sizes other than the export
size; the outputs must equal eager (points within 1e-5 px, everything else exact).
"""

import warnings

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import cases
import class_graphs
from class_graphs import CLASSES, class_maps
from export_helpers import (
    CHANNELS,
    EXPORTERS,
    THRESHOLD,
    K,
    assert_maps_same,
    assert_same,
    count_valid,
    dyadic_head,
    eager,
    image_cases,
    images,
    run_session,
)
from peaklayers import ClassMapLookup, GlobalPeaks, LocalPeaks, TopKPeaks, export_onnx

CLASS_KINDS = ("local", "topk")


def _quiet_export(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(*args, **kwargs)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_same_with_classes(actual, expected):
    """The peak outputs as in assert_same; class_probs exact, NaN where eager has NaN."""
    assert_same(actual[:-1], expected[:-1])
    a, e = actual[-1], expected[-1]
    assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, e.dtype, a.shape, e.shape)
    assert torch.equal(a.isnan(), e.isnan())
    assert torch.equal(a.nan_to_num(), e.nan_to_num())


HEAD_CASES = [*image_cases(), ("images-zero-peaks", torch.zeros(2, 2, 7, 9))]
PAIR_CASES = [
    ("3x32x32", (cases.gaussians(3, CHANNELS, 32, 32, seed=2), class_maps(3, 32, 32, 1))),
    ("class-maps-of-another-size",
     (cases.gaussians(1, CHANNELS, 17, 23, sigma=1.7, seed=1), class_maps(1, 9, 12, 2))),
    ("noisy-2x13x11", (cases.noisy(2, CHANNELS, 13, 11, seed=10), class_maps(2, 13, 11, 3))),
    ("borders", (cases.borders(), class_maps(2, 7, 8, 4))),
    ("zero-peaks", (torch.zeros(2, CHANNELS, 6, 7), class_maps(2, 6, 7, 5))),
]


def _run_pair(sess, cms, cls):
    return tuple(torch.from_numpy(o) for o in sess.run(
        None, {"confmaps": cms.numpy(), "class_maps": cls.numpy()}))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", CLASS_KINDS)
def test_head_layer_and_lookup_match_eager(kind, exporter):
    sess = class_graphs.session(kind, exporter, "head")
    model = class_graphs.make_model(kind, "head")
    found = {}
    for name, x in HEAD_CASES:
        expected = eager(model, x)
        assert_same_with_classes(run_session(sess, x), expected)
        found[name] = count_valid(expected, kind)
    assert found["images-zero-peaks"] == 0 and sum(found.values()) > 20, found


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", CLASS_KINDS)
def test_two_input_graph_matches_eager(kind, exporter):
    sess = class_graphs.session(kind, exporter, "two_inputs")
    model = class_graphs.make_model(kind, "two_inputs")
    found = {}
    for name, (cms, cls) in PAIR_CASES:
        with torch.no_grad():
            expected = model(cms, cls)
        assert_same_with_classes(_run_pair(sess, cms, cls), expected)
        found[name] = count_valid(expected, kind)
    assert found["zero-peaks"] == 0 and sum(found.values()) > 20, found


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("form", class_graphs.FORMS)
@pytest.mark.parametrize("kind", CLASS_KINDS)
def test_class_graph_names_and_declared_shapes(kind, form, exporter):
    model = onnx.load(str(class_graphs.exported(kind, exporter, form)))
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    names = {"local": ["points", "vals", "sample_inds", "channel_inds"],
             "topk": ["points", "vals", "valid"]}[kind] + ["class_probs"]
    assert [o.name for o in inferred.graph.output] == names
    probs = [d.dim_param or d.dim_value
             for d in inferred.graph.output[-1].type.tensor_type.shape.dim]
    assert probs == (["peaks", CLASSES] if kind == "local" else ["batch", CHANNELS, K, CLASSES])

    inputs = inferred.graph.input
    assert [i.name for i in inputs] == (["image"] if form == "head" else
                                        ["confmaps", "class_maps"])
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs]
    for d in dims:  # batch, height and width dynamic; channels fixed
        assert [isinstance(x, str) for x in d] == [True, False, True, True], dims
    if form == "two_inputs":
        assert dims[0][0] == dims[1][0]  # one batch
        assert dims[0][2:] != dims[1][2:]  # but each its own height and width
        assert dims[1][1] == CLASSES
    props = {p.key: p.value for p in model.metadata_props}
    assert props["peaklayers.layer"].startswith({"local": "LocalPeaks(",
                                                 "topk": "TopKPeaks("}[kind])


# -- heads loaded from files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded_program(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "head.pt2"
    dims = {0: torch.export.Dim("b"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    program = torch.export.export(dyadic_head(), (images(2, 12, 10),), dynamic_shapes=(dims,))
    torch.export.save(program, str(path))
    return torch.export.load(str(path))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_loaded_program_head(tmp_path, loaded_program, exporter):
    """A .pt2 head refuses train()/eval(); export_onnx leaves its mode alone."""
    head = loaded_program.module()
    with pytest.raises(NotImplementedError):
        head.eval()
    model = nn.Sequential(head, TopKPeaks(K, THRESHOLD))  # the Sequential is in train mode
    path = _quiet_export(model, images(2, 12, 10), tmp_path / "m.onnx", input_name="image",
                         dynamo=exporter == "dynamo")
    assert model.training and model[1].training  # modes restored
    sess = _session(path)
    for _, x in image_cases()[:4]:
        assert_same(run_session(sess, x), eager(model, x))


def test_exported_program_as_model(tmp_path, loaded_program):
    """An ExportedProgram itself: a plain head (output confmaps, input image)."""
    path = _quiet_export(loaded_program, images(2, 12, 10), tmp_path / "head.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["confmaps"]
    sess = _session(path)
    for x in (images(1, 5, 7, seed=1), images(3, 30, 17, seed=2)):
        assert_maps_same(run_session(sess, x), eager(loaded_program.module(), x))


@pytest.fixture(scope="module")
def loaded_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("ts") / "head.pt"
    torch.jit.script(dyadic_head()).save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))


@pytest.mark.parametrize("kind", ["local", "topk"])
def test_loaded_torchscript_head(tmp_path, loaded_script, kind):
    """The tracer cannot enter a ScriptModule inside a Python module ("not part of the
    active trace"); export_onnx scripts the whole model and exports that."""
    layer = LocalPeaks(THRESHOLD) if kind == "local" else TopKPeaks(K, THRESHOLD)
    model = nn.Sequential(loaded_script, layer).eval()
    path = _quiet_export(model, images(2, 12, 10), tmp_path / "m.onnx", input_name="image")
    assert [o.name for o in onnx.load(str(path)).graph.output][:2] == ["points", "vals"]
    sess = _session(path)
    for _, x in HEAD_CASES:
        assert_same(run_session(sess, x), eager(model, x))


class _Unscriptable(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head, self.layer = head, GlobalPeaks()

    def forward(self, x):
        return self.layer(*[self.head(x)])


def test_torchscript_head_errors(tmp_path, loaded_script):
    model = nn.Sequential(loaded_script, LocalPeaks()).eval()
    with pytest.raises(ValueError, match=r"TorchScript module \('0'\).*dynamo=False"):
        export_onnx(model, images(2, 8, 8), tmp_path / "x.onnx", dynamo=True)
    with pytest.raises(ValueError, match="scripts the whole model, and torch.jit.script failed"):
        _quiet_export(_Unscriptable(loaded_script), images(2, 8, 8), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# -- other extra outputs, inputs that must match, bad names --------------------------------


class _WithMaxima(nn.Module):
    """Peaks plus each map's maximum: an extra output no default name fits."""

    def __init__(self):
        super().__init__()
        self.peaks = GlobalPeaks(THRESHOLD, refinement=None)

    def forward(self, cms):
        return (*self.peaks(cms), cms.amax(dim=(2, 3)))


class _Product(nn.Module):
    """Two inputs whose sizes must be equal (multiplied pixel by pixel)."""

    def __init__(self):
        super().__init__()
        self.peaks = GlobalPeaks(THRESHOLD, refinement=None)

    def forward(self, a, b):
        return self.peaks(a * b)


def test_named_extra_output(tmp_path):
    cms = cases.gaussians(2, CHANNELS, 9, 8, seed=1)
    with pytest.raises(ValueError, match=r"model output 2 \(Tensor\[2, 3\]\) comes from neither"
                                         r".*pass output_names with all 3 names"):
        export_onnx(_WithMaxima(), cms, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"output_names must name 3 outputs \('points', "
                                         r"'vals', '\?'\), got 2"):
        export_onnx(_WithMaxima(), cms, tmp_path / "x.onnx", output_names=["p", "v"])
    path = _quiet_export(_WithMaxima(), cms, tmp_path / "m.onnx",
                         output_names=["points", "vals", "maxima"])
    sess = _session(path)
    x = cases.gaussians(5, CHANNELS, 17, 12, seed=2)
    assert_same(run_session(sess, x), eager(_WithMaxima(), x), refined=False)


def test_inputs_that_must_match_share_sizes_with_dynamo(tmp_path):
    example = (cases.gaussians(2, CHANNELS, 9, 8, seed=1), cases.gaussians(2, CHANNELS, 9, 8))
    path = _quiet_export(_Product(), example, tmp_path / "m.onnx", dynamo=True,
                         input_name=["a", "b"])
    graph = onnx.load(str(path)).graph
    dims = [[d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert dims[0] == dims[1] and all(dims[0][i] for i in (0, 2, 3))
    sess = _session(path)
    a, b = cases.gaussians(3, CHANNELS, 14, 21, seed=3), cases.gaussians(3, CHANNELS, 14, 21)
    got = tuple(torch.from_numpy(o) for o in sess.run(None, {"a": a.numpy(), "b": b.numpy()}))
    assert_same(got, _Product()(a, b), refined=False)


def test_bad_inputs_and_names(tmp_path):
    model = class_graphs.make_model("topk", "two_inputs")
    cms, cls = cases.noisy(2, CHANNELS, 8, 8), class_maps(2, 8, 8)
    x = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match=r"input_name must name 2 input\(s\), one per example "
                                         r"tensor, got 1"):
        export_onnx(model, (cms, cls), x, input_name=["confmaps"])
    with pytest.raises(ValueError, match="output_names must name 4 outputs"):
        export_onnx(model, (cms, cls), x, output_names=["points", "vals", "valid"])
    with pytest.raises(ValueError, match="input and output names must all differ"):
        export_onnx(model, (cms, cls), x, input_name=["maps", "maps"])
    with pytest.raises(ValueError, match="input and output names must all differ"):
        export_onnx(model, (cms, cls), x, input_name="class_probs")
    with pytest.raises(TypeError, match="input_name must be a non-empty str or a sequence"):
        export_onnx(model, (cms, cls), x, input_name=["confmaps", ""])
    with pytest.raises(ValueError, match="example tensors must have the same batch size"):
        export_onnx(model, (cms, cls[:1]), x)
    with pytest.raises(TypeError, match=r"example\[1\] must have a floating-point dtype"):
        export_onnx(model, (cms, cls.to(torch.int64)), x)
    with pytest.raises(ValueError, match="example must hold at least one tensor"):
        export_onnx(model, (), x)

    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.peaks, self.lookup = GlobalPeaks(), ClassMapLookup()

        def forward(self, a, b, c):
            return self.peaks(a + b + c)

    with pytest.raises(ValueError, match="input_name must be a sequence of 3 names"):
        export_onnx(Three(), (cms, cms, cms), x)
    assert not x.exists()
