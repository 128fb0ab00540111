"""``python -m export pipeline`` with ONNX heads: the stages joined with the heads by
``onnx.compose``, for every pipeline kind, and one clear error for each bad head.

The heads are the synthetic heads of ``tests/pipeline_heads.py`` exported to ONNX here
(at opsets 13, 17 and 21, so the join converts heads or stages up to one opset).
Each written graph runs in ONNX Runtime on frames of another size than the export's and
is compared with two references: the pipeline run in stages (PyTorch stages, the same
ONNX heads in ONNX Runtime), and an independent one, the pipeline built around the
TorchScript-compiled PyTorch heads the ONNX files came from. Centroids are also checked
against the animals drawn in the frames.
"""

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import version_converter
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pipeline_heads as ph  # noqa: E402
from export.__main__ import main  # noqa: E402
from peaklayers import (  # noqa: E402
    CentroidPipeline,
    MultiClassBottomUpPipeline,
    MultiClassTopDownPipeline,
    SingleInstancePipeline,
    TopDownPipeline,
)
from peaklayers.exporting.compose import compose_pipeline  # noqa: E402
from peaklayers.exporting.onnx_head import OnnxHead  # noqa: E402

POINT_TOL = 1e-5  # px


def _tool(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def _to_onnx(module: nn.Module, path: Path, outputs=("maps",), opset: int = 17,
             example: torch.Tensor | None = None, axes: dict | None = None,
             inputs=("x",)) -> Path:
    example = torch.rand(2, 1, 40, 48) if example is None else example
    if axes is None:
        axes = {"x": {0: "batch", 2: "height", 3: "width"},
                **{o: {0: "batch"} for o in outputs}}
    args = example if isinstance(example, tuple) else (example,)
    torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=opset,
                      input_names=list(inputs), output_names=list(outputs), dynamic_axes=axes)
    return path


class _TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class _Uint8Blur(ph.Blur):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float() / 255.0)


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx_heads")
    files = {
        "centroid": _to_onnx(ph.Blur(), folder / "centroid.onnx", opset=13),
        "parts": _to_onnx(ph.Parts(), folder / "parts.onnx"),
        "tuple": _to_onnx(ph.PartsTuple(), folder / "tuple.onnx", outputs=("half", "maps")),
        "classes": _to_onnx(ph.PartsClasses(), folder / "classes.onnx",
                            outputs=("maps", "classes")),
        "bottomup": _to_onnx(ph.PartsClassMapsTuple(stride=2, class_stride=4),
                             folder / "bottomup.onnx", outputs=("maps", "class_maps")),
        "two_inputs": _to_onnx(_TwoInputs(), folder / "two_inputs.onnx",
                               example=(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)),
                               inputs=("x", "y"), axes={}),
        "fixed": _to_onnx(ph.Blur(), folder / "fixed.onnx",
                          axes={"x": {0: "batch"}, "maps": {0: "batch"}}),
        "fixed_crop": _to_onnx(ph.Parts(), folder / "fixed_crop.onnx",
                               example=torch.rand(2, 1, 20, 20),
                               axes={"x": {0: "batch"}, "maps": {0: "batch"}}),
        "uint8": _to_onnx(_Uint8Blur(), folder / "uint8.onnx",
                          example=torch.randint(0, 255, (2, 1, 40, 48), dtype=torch.uint8)),
    }
    # Newer than the TorchScript-based exporter writes: the stages are converted up to it.
    files["tuple21"] = folder / "tuple21.onnx"
    onnx.save(version_converter.convert_version(onnx.load(str(files["tuple"])), 21),
              str(files["tuple21"]))
    torch.jit.script(ph.Blur().eval()).save(str(folder / "centroid.pt"))
    files["centroid_ts"] = folder / "centroid.pt"
    (folder / "garbage.onnx").write_bytes(b"not a model at all")
    files["garbage"] = folder / "garbage.onnx"
    return files


def _scripted(module: nn.Module) -> torch.jit.ScriptModule:
    return torch.jit.script(module.eval())


# kind, head files, tool flags, the pipeline with ONNX heads, the pipeline with TorchScript
# heads (same settings), float input?
CASES = {
    "single-instance": (
        ["tuple21"], ["--instance-output", "maps", "--input-scale", "0.5", "--max-stride", "8"],
        lambda f: SingleInstancePipeline(OnnxHead(f["tuple21"], outputs="maps"), input_scale=0.5,
                                         max_stride=8),
        lambda: SingleInstancePipeline(_scripted(ph.PartsTuple()), input_scale=0.5,
                                       max_stride=8, head_output=1),
        True),
    "centroid": (
        ["centroid"], ["--max-instances", "3"],
        lambda f: CentroidPipeline(OnnxHead(f["centroid"]), 3),
        lambda: CentroidPipeline(_scripted(ph.Blur()), 3),
        False),
    "top-down": (
        ["centroid", "tuple"], ["--instance-output", "1", "--input-scale", "0.5",
                                "--crop-size", "16,16", "--max-instances", "3"],
        lambda f: TopDownPipeline(OnnxHead(f["centroid"]), OnnxHead(f["tuple"], outputs=1),
                                  (16, 16), 3, input_scale=0.5),
        lambda: TopDownPipeline(_scripted(ph.Blur()), _scripted(ph.PartsTuple()), (16, 16), 3,
                                input_scale=0.5, instance_output=1),
        False),
    "multiclass-top-down": (
        ["centroid", "classes"], ["--crop-size", "16,16", "--max-instances", "3"],
        lambda f: MultiClassTopDownPipeline(OnnxHead(f["centroid"]),
                                            OnnxHead(f["classes"], outputs=(0, 1)), 16, 3),
        lambda: MultiClassTopDownPipeline(_scripted(ph.Blur()), _scripted(ph.PartsClasses()),
                                          16, 3, instance_output="maps",
                                          class_output="classes"),
        False),
    "multiclass-bottom-up": (
        ["bottomup"], ["--max-peaks", "3", "--stride", "2", "--class-stride", "4",
                       "--max-stride", "4"],
        lambda f: MultiClassBottomUpPipeline(OnnxHead(f["bottomup"], outputs=(0, 1)), 3,
                                             stride=2, class_stride=4, max_stride=4),
        lambda: MultiClassBottomUpPipeline(
            _scripted(ph.PartsClassMapsTuple(stride=2, class_stride=4)), 3, stride=2,
            class_stride=4, max_stride=4),
        False),
}


def _compare(got: list[np.ndarray], expected, names: tuple[str, ...], what: str) -> None:
    assert len(got) == len(names)
    for name, out, ref in zip(names, got, expected, strict=True):
        ref = ref.numpy()
        assert out.shape == ref.shape and out.dtype == ref.dtype, (what, name)
        if ref.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=f"{what} {name}")
            np.testing.assert_allclose(out, ref, atol=POINT_TOL, rtol=0, equal_nan=True,
                                       err_msg=f"{what} {name}")
        else:
            np.testing.assert_array_equal(out, ref, err_msg=f"{what} {name}")


@pytest.mark.parametrize("kind", list(CASES))
def test_onnx_heads_pipeline_matches_references(tmp_path, heads, kind):
    files, flags, with_onnx, with_torch, float_input = CASES[kind]
    out = tmp_path / "out"
    code, err = _tool("pipeline", kind, *(str(heads[f]) for f in files), *flags,
                      "--input-shape", "1,48,56", "--out", str(out), "--provider", "cpu",
                      *(["--float-input"] if float_input else []))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.onnx", "report.md"]

    report = json.loads((out / "metadata.json").read_text())["verification"]["parity"]
    assert [p["backend"] for p in report] == ["eager", "ONNX Runtime"]
    assert report[1]["mismatches"] == [] and report[1]["max_abs_diff"] <= POINT_TOL
    assert [s[2:] for s in report[1]["inputs"]] == [[48, 56], [80, 104]]

    model = onnx.load(str(out / "model.onnx"))
    # One opset: the heads' newest, and at least 16 (the stages' lowest).
    newest = max(onnx.load(str(heads[f])).opset_import[0].version for f in files)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", max(newest, 16))]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    animals = ph.animals_for(3, 67, 83, 2, seed=5)
    frames = ph.frames(3, 67, 83, animals, seed=5, parts=kind != "centroid")
    if float_input:
        frames = frames.to(torch.float32) / 255.0
    got = session.run(None, {"image": frames.numpy()})

    staged, oracle = with_onnx(heads).eval(), with_torch().eval()
    assert [o.name for o in session.get_outputs()] == list(staged.output_names)
    with torch.no_grad():
        _compare(got, staged(frames), staged.output_names, "stages run separately")
        _compare(got, oracle(frames), oracle.output_names, "TorchScript heads")

    # Ground truth from the drawing, loosely: the integral over a 5 x 5 patch of a blurred
    # blob (zero-padded near borders) is biased by up to about a pixel.
    if kind not in ("single-instance", "multiclass-bottom-up"):
        centroids, valid = got[0], got[staged.output_names.index("instance_valid")]
        assert valid.sum(axis=1).tolist() == [2, 2, 2]
        for s, centres in enumerate(animals):
            for cx, cy in centres:
                near = [math.hypot(x - cx, y - cy) for x, y in centroids[s][valid[s]]]
                assert min(near) < 1.5, (s, cx, cy, centroids[s])


def test_compose_needs_onnx_heads(heads):
    pipeline = CentroidPipeline(ph.Blur(), 2)
    with pytest.raises(TypeError, match="OnnxHead"):
        compose_pipeline(pipeline, torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def _error(tmp_path, *args: str) -> str:
    code, err = _tool("pipeline", *args, "--out", str(tmp_path / "o"), "--provider", "cpu")
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: error:"), err
    assert not (tmp_path / "o").exists()
    return lines[0]


def test_bad_onnx_heads_are_one_clear_error(tmp_path, heads):
    f = {k: str(v) for k, v in heads.items()}
    top_down = ["--crop-size", "16,16", "--max-instances", "2", "--input-shape", "1,48,56"]
    cases = [
        (["centroid", f["two_inputs"], "--max-instances", "2"],
         [f["two_inputs"], "one input", "2"]),
        (["centroid", f["uint8"], "--max-instances", "2"], [f["uint8"], "uint8"]),
        (["centroid", f["garbage"], "--max-instances", "2"],
         [f["garbage"], "not a readable ONNX model"]),
        (["centroid", f["fixed"], "--max-instances", "2"],
         [f["fixed"], "fixed input height/width"]),
        (["single-instance", f["tuple"], "--instance-output", "5", "--input-shape", "1,48,56"],
         ["--instance-output", f["tuple"], "no output index 5", "'half', 'maps'"]),
        (["top-down", f["centroid"], f["tuple"], "--instance-output", "peaks", *top_down],
         ["--instance-output", f["tuple"], "no output 'peaks'"]),
        (["multiclass-top-down", f["centroid"], f["parts"], *top_down],
         ["--instance-output/--class-output", f["parts"], "no output index 1"]),
        (["multiclass-top-down", f["centroid"], f["classes"], "--class-output", "probs",
          *top_down], ["--class-output", f["classes"], "no output 'probs'"]),
        (["multiclass-bottom-up", f["parts"], "--max-peaks", "2", "--input-shape", "1,48,56"],
         ["--instance-output/--class-output", f["parts"], "no output index 1"]),
        (["top-down", f["centroid"], f["fixed_crop"], *top_down],
         [f["fixed_crop"], "20, 20", "16, 16"]),
        (["top-down", f["parts"], f["parts"], *top_down], ["one channel"]),
        (["top-down", f["centroid_ts"], f["parts"], *top_down], ["same form", "centroid.pt"]),
        (["centroid", f["centroid"], "--max-instances", "2", "--opset", "18",
          "--input-shape", "1,48,56"], ["--opset"]),
    ]
    for args, words in cases:
        line = _error(tmp_path, *args)
        for word in words:
            assert word in line, (args, line)
