"""End-to-end tests of the export tool (``python -m export``), each in a temporary folder.

They assert on the written files and on the parity numbers the tool records, and check
the exported graphs independently of the tool where that is cheap.
"""

import contextlib
import io
import json
import pickle
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export import demo_net  # noqa: E402
from export.__main__ import main  # noqa: E402
from export.common import ToolError  # noqa: E402
from export.png import PART_COLOURS, read_png, write_png  # noqa: E402
from export.triton import model_config_class, parse_config  # noqa: E402
from peaklayers import LocalPeaks, TopKPeaks  # noqa: E402


def tool(*args: str) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def ok(*args: str) -> str:
    """The same, in this process (faster: no new torch import); returns stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def ok_subprocess(*args: str) -> str:
    result = tool(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def onnx_metadata(path: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["peaklayers.metadata"])


def check_parity(meta: dict, backends: set[str], shapes: int) -> None:
    parity = {p["backend"]: p for p in meta["verification"]["parity"]}
    assert set(parity) == {"eager"} | backends
    for name in backends:
        assert parity[name]["mismatches"] == []
        assert 0.0 <= parity[name]["max_abs_diff"] <= 1e-3
        assert len({tuple(s) for s in parity[name]["inputs"]}) == shapes
        assert parity[name]["latency_ms"] > 0


# ---------------------------------------------------------------------------------- demo


@pytest.mark.parametrize("layer", ["global", "local", "topk"])
def test_demo_every_layer(tmp_path, layer):
    out, repo = tmp_path / "demo", tmp_path / "triton"
    stdout = ok_subprocess("demo", "--out", str(out), "--layer", layer, "--k", "4",
                           "--triton", str(repo))
    assert "ONNX ✓" in stdout and "TorchScript ✓" in stdout and "Verify ✓" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.json", "demo.png", "frame.npy", "metadata.json", "model.onnx",
        "model.torchscript.pt", "report.md"]
    assert leftovers(tmp_path) == []
    config = parse_config((repo / "peaklayers" / "config.pbtxt").read_text())
    if layer == "local":  # no batch axis on variable-length outputs: no Triton batching
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
        assert list(config.input[0].dims) == [-1, 3, -1, -1]
        assert [list(o.dims) for o in config.output] == [[-1, 2], [-1], [-1], [-1]]
    else:
        assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
        assert list(config.input[0].dims) == [3, -1, -1]
        assert list(config.output[0].dims) == ([3, 2] if layer == "global" else [3, 4, 2])

    meta = json.loads((out / "metadata.json").read_text())
    assert meta["layer"]["layer"] == layer and meta["stride"] == 2.0 and meta["opset"] == 17
    assert meta["versions"]["torch"] == torch.__version__
    names = {"global": ["points", "vals"], "local": ["points", "vals", "sample_inds",
                                                     "channel_inds"],
             "topk": ["points", "vals", "valid"]}[layer]
    assert [o["name"] for o in meta["outputs"]] == names
    check_parity(meta, {"TorchScript", "ONNX Runtime"}, shapes=3)
    embedded = onnx_metadata(out / "model.onnx")
    assert embedded["layer"] == meta["layer"] and embedded["outputs"] == meta["outputs"]
    assert [o.name for o in onnx.load(str(out / "model.onnx")).graph.output] == names

    accuracy = json.loads((out / "accuracy.json").read_text())
    # Two animals x three parts x three frames; the global layer keeps one peak per part.
    assert accuracy["found"] == (9 if layer == "global" else 18)
    assert accuracy["mean_error_px"] < 0.5 and accuracy["max_error_px"] < 1.0

    picture = read_png(out / "demo.png")
    assert picture.shape == (96 * 4, 128 * 4, 3)
    for colour in PART_COLOURS[:3]:  # every part drawn
        assert np.all(picture == colour, axis=2).any()
    report = (out / "report.md").read_text()
    assert "| ONNX Runtime | CPUExecutionProvider |" in report

    # Independently of the tool: the ONNX file at a size it was not exported or verified at.
    frame, keypoints, _ = demo_net.render_frame(80, 112, seed=7)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = dict(zip(names, session.run(None, {"images": frame[None]}), strict=True))
    points = outputs["points"].reshape(-1, 2)
    points = points[~np.isnan(points).any(axis=1)]
    nearest = np.min(np.hypot(*(keypoints.reshape(-1, 1, 2) - points[None]).transpose(2, 0, 1)),
                     axis=1)
    assert np.sum(nearest < 1.0) == (3 if layer == "global" else 6)


def test_demo_class_maps_and_triton(tmp_path):
    out, repo = tmp_path / "demo", tmp_path / "triton"
    ok("demo", "--out", str(out), "--layer", "topk", "--k", "4", "--class-maps",
       "--triton", str(repo), "--max-batch-size", "16", "--triton-instances", "2")
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert accuracy["identities_correct"] == accuracy["animals"] == 3 * 2
    meta = json.loads((out / "metadata.json").read_text())
    check_parity(meta, {"TorchScript", "ONNX Runtime"}, shapes=3)
    assert meta["outputs"][-1] == {"name": "class_probs", "shape": ["batch", 3, 4, 2],
                                   "dtype": "float32"}

    config = parse_config((repo / "peaklayers" / "config.pbtxt").read_text())
    assert isinstance(config, model_config_class())
    assert config.backend == "onnxruntime" and config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [3, -1, -1])]
    assert [(o.name, list(o.dims)) for o in config.output] == [
        ("points", [3, 4, 2]), ("vals", [3, 4]), ("valid", [3, 4]), ("class_probs", [3, 4, 2])]
    dtype = model_config_class().DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
        "data_type"].enum_type.values_by_number
    assert [dtype[o.data_type].name for o in config.output] == [
        "TYPE_FP32", "TYPE_FP32", "TYPE_BOOL", "TYPE_FP32"]
    assert config.instance_group[0].count == 2
    served = repo / "peaklayers" / "1" / "model.onnx"
    assert served.read_bytes() == (out / "model.onnx").read_bytes()


def test_triton_config_that_breaks_the_schema_is_refused():
    from export.common import ToolError

    with pytest.raises(ToolError, match="ModelConfig"):
        parse_config('name: "x"\nmax_batch_size: 8\nbatching_please: true\n')


# --------------------------------------------------------------------------------- model


class Head(nn.Module):
    """A small confidence-map head: smooth maps in (0, 1), output stride 1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mix = nn.Conv2d(3, 4, 1)
        self.blur = nn.Conv2d(4, 4, 7, padding=3, groups=4, bias=False)
        with torch.no_grad():
            self.blur.weight.fill_(1.0 / 49)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(8.0 * self.blur(self.mix(x)))


def _save_head(kind: str, path: Path) -> None:
    head = Head().eval()
    if kind == "torchscript":
        torch.jit.script(head).save(str(path))
    elif kind == "pt2":
        dims = {0: torch.export.Dim("b"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
        program = torch.export.export(head, (torch.rand(2, 3, 40, 48),), dynamic_shapes=(dims,))
        torch.export.save(program, str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(head, (torch.rand(1, 3, 40, 48),), str(path), input_names=["x"],
                              output_names=["maps"], opset_version=17, dynamo=False,
                              dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})


@pytest.mark.parametrize(("kind", "suffix", "files", "backends"), [
    ("torchscript", ".pt", ["model.onnx", "model.torchscript.pt"], {"TorchScript", "ONNX Runtime"}),
    ("pt2", ".pt2", ["model.onnx", "model.pt2"], {"torch.export", "ONNX Runtime"}),
    ("onnx", ".onnx", ["model.onnx"], {"ONNX Runtime"}),
])
def test_model(tmp_path, kind, suffix, files, backends):
    model, out = tmp_path / f"head{suffix}", tmp_path / "out"
    _save_head(kind, model)
    args = ["model", str(model), "--out", str(out), "--layer", "local", "--threshold", "0.4"]
    if kind == "torchscript":
        args += ["--input-shape", "3,40,48"]
    ok(*args)
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "metadata.json", "report.md"])
    meta = json.loads((out / "metadata.json").read_text())
    check_parity(meta, backends, shapes=2)
    assert meta["channels"] == 4 and meta["layer"]["threshold"] == 0.4

    # Independently: the exported ONNX graph equals head + LocalPeaks in eager PyTorch.
    graph = onnx.load(str(out / "model.onnx"))
    input_name = graph.graph.input[0].name
    assert input_name == ("x" if kind == "onnx" else "images")
    assert [o.name for o in graph.graph.output] == ["points", "vals", "sample_inds",
                                                     "channel_inds"]
    assert onnx_metadata(out / "model.onnx")["layer"]["layer"] == "local"
    x = torch.rand(2, 3, 56, 72, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = LocalPeaks(threshold=0.4)(Head().eval()(x))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {input_name: x.numpy()})
    assert got[0].shape == tuple(expected[0].shape) and got[0].shape[0] > 0
    np.testing.assert_allclose(got[0], expected[0].numpy(), atol=1e-4)
    np.testing.assert_array_equal(got[3], expected[3].numpy())


class HeadWithClasses(Head):
    """Confidence maps and class maps (softmax over 2 classes) from one head."""

    def forward(self, x: torch.Tensor):
        maps = super().forward(x)
        return maps[:, :2], torch.softmax(maps[:, 2:], dim=1)


def test_model_pt2_with_class_maps(tmp_path):
    """A loaded .pt2 head (which refuses eval()) with --class-maps: ONNX straight from the
    library's export_onnx, no head-then-append step."""
    model, out = tmp_path / "head.pt2", tmp_path / "out"
    dims = {0: torch.export.Dim("b"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    torch.export.save(torch.export.export(HeadWithClasses().eval(), (torch.rand(2, 3, 40, 48),),
                                          dynamic_shapes=(dims,)), str(model))
    ok("model", str(model), "--out", str(out), "--layer", "topk", "--k", "3", "--class-maps")
    meta = json.loads((out / "metadata.json").read_text())
    check_parity(meta, {"torch.export", "ONNX Runtime"}, shapes=2)
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["points", "vals", "valid", "class_probs"]
    assert [d.dim_param or d.dim_value for d in graph.output[3].type.tensor_type.shape.dim] == [
        "batch", 2, 3, 2]


def test_model_random_head_with_near_ties(tmp_path):
    """A TorchScript head of random conv + sigmoid weights with threshold 0: thousands of
    local peaks, some on pixels that tie a neighbour to the last bits, where TorchScript
    and ONNX Runtime maps differ. The export is accepted and the near-ties reported."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1),
                         nn.Sigmoid()).eval()
    model, out = tmp_path / "random.pt", tmp_path / "out"
    torch.jit.script(head).save(str(model))
    ok("model", str(model), "--out", str(out), "--input-shape", "3,64,64", "--threshold", "0")
    parity = {p["backend"]: p for p in json.loads((out / "metadata.json").read_text())[
        "verification"]["parity"]}
    assert sum(p["near_ties"] for p in parity.values()) >= 1  # the case this test is for
    assert all(not p["mismatches"] and p["max_abs_diff"] <= 1e-3 for p in parity.values())
    assert "Near-ties" in (out / "report.md").read_text()


def test_model_onnx_with_topk(tmp_path):
    model, out = tmp_path / "head.onnx", tmp_path / "out"
    _save_head("onnx", model)
    ok("model", str(model), "--out", str(out), "--layer", "topk", "--k", "3")
    x = np.random.default_rng(0).random((3, 3, 24, 32), dtype=np.float32)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    points, vals, valid = session.run(None, {"x": x})
    with torch.no_grad():
        expected = TopKPeaks(3)(Head().eval()(torch.from_numpy(x)))
    np.testing.assert_array_equal(valid, expected[2].numpy())
    np.testing.assert_allclose(vals, expected[1].numpy(), atol=1e-5)


def test_model_with_fixed_sizes_is_served_without_batching(tmp_path):
    model, out, repo = tmp_path / "fixed.onnx", tmp_path / "out", tmp_path / "triton"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Head().eval(), (torch.rand(1, 3, 24, 32),), str(model),
                          input_names=["x"], output_names=["maps"], opset_version=17,
                          dynamo=False)
    ok("model", str(model), "--out", str(out), "--layer", "topk", "--triton", str(repo))
    meta = json.loads((out / "metadata.json").read_text())
    check_parity(meta, {"ONNX Runtime"}, shapes=1)
    assert "fixed at (1, 3, 24, 32)" in (out / "report.md").read_text()
    config = parse_config((repo / "peaklayers" / "config.pbtxt").read_text())
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 3, 24, 32]


# ----------------------------------------------------------------------------------- run


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    ok("demo", "--out", str(root / "local_cm"), "--class-maps")
    ok("demo", "--out", str(root / "topk"), "--layer", "topk", "--k", "2")
    frame, keypoints, classes = demo_net.render_frame(88, 120, seed=11)
    np.save(root / "frame.npy", frame)
    write_png(root / "frame.png", (frame.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    return root, keypoints, classes


def test_run_json_with_identities(demo_models):
    root, keypoints, classes = demo_models
    stdout = ok("run", str(root / "local_cm" / "model.onnx"), str(root / "frame.npy"),
                str(root / "frame.png"), "--provider", "cpu", "--save", str(root / "peaks.json"))
    assert "provider CPUExecutionProvider" in stdout
    result = json.loads((root / "peaks.json").read_text())
    assert result["provider"] == "CPUExecutionProvider" and result["layer"] == "local"
    assert len(result["files"]) == 2
    for entry in result["files"]:
        assert len(entry["peaks"]) == 6
        identities = entry["instances"][0]
        assert [i["class"] for i in identities] == [0, 1]
        for animal, cls in enumerate(classes):  # each identity holds its own animal's parts
            points = np.array(identities[cls]["points"])
            assert np.all(np.hypot(*(points - keypoints[animal]).T) < 1.5)


def test_run_csv_and_print(demo_models):
    root, keypoints, _ = demo_models
    ok("run", str(root / "topk" / "model.onnx"), str(root / "frame.png"), "--save",
       str(root / "peaks.csv"))
    lines = (root / "peaks.csv").read_text().splitlines()
    assert lines[0] == "file,sample,channel,slot,x,y,value"
    assert len(lines) == 1 + 6
    xy = np.array([[float(v) for v in line.split(",")[4:6]] for line in lines[1:]])
    nearest = np.min(np.hypot(*(keypoints.reshape(-1, 1, 2) - xy[None]).transpose(2, 0, 1)),
                     axis=1)
    assert np.all(nearest < 1.5)
    printed = ok("run", str(root / "topk" / "model.onnx"), str(root / "frame.npy"))
    assert printed.count("thorax") == 2


def _png(width: int, height: int, raw_bytes: int, colour_type: int = 0) -> bytes:
    """An 8-bit PNG declaring ``width`` × ``height`` whose IDAT inflates to ``raw_bytes``
    zero bytes (rows of filter 0 and black pixels when the sizes agree), written by hand so
    that the declared size and the stream can disagree."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (len(data).to_bytes(4, "big") + body
                + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big"))

    packer = zlib.compressobj(9)
    block = bytes(1 << 20)
    idat = b"".join(packer.compress(block[:min(len(block), raw_bytes - done)])
                    for done in range(0, raw_bytes, len(block))) + packer.flush()
    header = (width.to_bytes(4, "big") + height.to_bytes(4, "big")
              + bytes([8, colour_type, 0, 0, 0]))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def test_run_refuses_png_bombs_before_decoding(demo_models, tmp_path, capsys):
    root = demo_models[0]
    model = str(root / "topk" / "model.onnx")
    bomb = tmp_path / "bomb.png"  # 60 MB of black pixels in about 60 kB
    bomb.write_bytes(_png(10_000, 6_000, 6_000 * 10_001))
    assert bomb.stat().st_size < 200_000
    err = _fails(capsys, "run", model, str(bomb), "--provider", "cpu")
    assert "10000×6000" in err and "--max-pixels" in err
    # The check comes before decoding: a declared size alone (pixel data cut short) is enough.
    claim = tmp_path / "claim.png"
    claim.write_bytes(_png(200_000, 200_000, 1000))
    assert "--max-pixels" in _fails(capsys, "run", model, str(claim), "--provider", "cpu")
    # --max-pixels sets the budget both ways.
    small = tmp_path / "small.png"
    write_png(small, np.zeros((88, 120, 3), np.uint8))
    assert "over the budget of 10,000" in _fails(capsys, "run", model, str(small), "--provider",
                                                 "cpu", "--max-pixels", "10000")
    ok("run", model, str(small), "--provider", "cpu", "--max-pixels", str(88 * 120))


def test_png_with_a_small_size_and_a_huge_stream_is_not_inflated(tmp_path):
    """A 16 × 16 picture whose stream inflates to 256 MB: reading it stops after the
    declared pixels (peak memory of the reading process stays far below the stream)."""
    bomb = tmp_path / "stream.png"
    bomb.write_bytes(_png(16, 16, 256 << 20))
    # VmHWM: the peak resident size of this process image (ru_maxrss would include the
    # forking test process's own).
    code = ("import re; from pathlib import Path; from export.png import read_png; "
            f"image = read_png({str(bomb)!r}); print(image.shape, image.max(), re.search("
            r"r'VmHWM:\s*(\d+)', Path('/proc/self/status').read_text()).group(1))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    shape, peak_kb = result.stdout.rsplit(" ", 1)
    assert shape == "(16, 16, 1) 0"
    assert int(peak_kb) < 150_000, f"{int(peak_kb) // 1024} MB peak for a 16 x 16 picture"


def test_png_colour_types(tmp_path):
    """Grey, palette, RGBA and grey+alpha pictures (written by Pillow) read as the values
    drawn; 16-bit ones are refused with one clear error."""
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_png(tmp_path / "rgb.png"), rgb)
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 9, np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_png(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_png(tmp_path / "grey.png"), rgb[:, :, :1])
    Image.fromarray(rgb[:, :, 0]).convert("LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_png(tmp_path / "la.png"), rgb[:, :, :1])
    palette = Image.fromarray(rgb).quantize(8)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_png(tmp_path / "palette.png"),
                                  np.asarray(palette.convert("RGB")))
    Image.fromarray(np.full((4, 4), 40_000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ToolError, match="8-bit"):
        read_png(tmp_path / "deep.png")
    (tmp_path / "fake.png").write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(ToolError, match="not a readable PNG"):
        read_png(tmp_path / "fake.png")


def _claimed_npy(path: Path, shape: tuple[int, ...]) -> None:
    """A ``.npy`` header declaring ``shape`` (float32) followed by 64 bytes of data."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
        handle.write(bytes(64))


def _npz_named_npy(path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, frame=np.zeros((3, 8, 8), np.float32))


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: np.save(p, np.ones((3, 88, 120), np.complex64) * 1j), "complex"),
    (lambda p: np.save(p, np.zeros((3, 8, 8), "datetime64[s]")), "date/time"),
    (lambda p: np.save(p, np.zeros((3, 8, 8), "timedelta64[ms]")), "time-delta"),
    (lambda p: np.save(p, np.full((3, 8, 8), "0.5")), "text"),
    (lambda p: np.save(p, np.zeros((3, 8, 8), [("x", "f4"), ("y", "f4")])), "structured"),
    (lambda p: np.save(p, np.zeros((3, 8, 8), object), allow_pickle=True), "Python object"),
    (_npz_named_npy, ".npz"),
    # 1 × 3 × 4,000,000 × 2,500,000 float32: 109 TiB declared in a 200-byte file.
    (lambda p: _claimed_npy(p, (1, 3, 4_000_000, 2_500_000)), "over the budget"),
    (lambda p: _claimed_npy(p, (3, 88, 120)), "not a readable .npy"),  # data cut short
    (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00" + bytes(20)), "not a readable .npy"),
    (lambda p: np.save(p, np.zeros((88, 120), np.float32)), "(S, C, H, W)"),
])
def test_run_refuses_npy_that_is_not_a_real_image_array(demo_models, tmp_path, capsys, make,
                                                         expected):
    path = tmp_path / "input.npy"
    make(path)
    err = _fails(capsys, "run", str(demo_models[0] / "topk" / "model.onnx"), str(path),
                 "--provider", "cpu")
    assert expected in err and str(path) in err


def test_run_reads_integer_and_fortran_npy(demo_models, tmp_path):
    """uint8 (scaled by 1/255), float32, and float32 stored in Fortran order give the same
    peaks (the header checks leave ordinary arrays alone)."""
    root = demo_models[0]
    frame = np.load(root / "frame.npy")
    grey = (frame * 255).round().astype(np.uint8)
    np.save(tmp_path / "u8.npy", grey)
    np.save(tmp_path / "f32.npy", grey / np.float32(255))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(grey / np.float32(255)))
    model = str(root / "topk" / "model.onnx")
    ok("run", model, *(str(tmp_path / n) for n in ("u8.npy", "f32.npy", "fortran.npy")),
       "--provider", "cpu", "--save", str(tmp_path / "peaks.json"))
    files = json.loads((tmp_path / "peaks.json").read_text())["files"]
    assert files[0]["peaks"] and files[0]["peaks"] == files[1]["peaks"] == files[2]["peaks"]


def test_run_cuda_is_used_or_refused_clearly(demo_models):
    root, _, _ = demo_models
    result = tool("run", str(root / "topk" / "model.onnx"), str(root / "frame.npy"),
                  "--provider", "cuda")
    if result.returncode == 0:  # a machine where CUDA loads
        assert "provider CUDAExecutionProvider" in result.stdout
    else:
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "CUDAExecutionProvider" in result.stderr


# ----------------------------------------------------------------------------- bad input


def _fails(capsys, *args: str, code: int = 1) -> str:
    with pytest.raises(SystemExit) if code == 2 else _nothing():
        assert main(list(args)) == code
    err = capsys.readouterr().err
    assert err.startswith("export: error: ") and err.count("\n") == 1, err
    return err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_bad_model_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert "does not exist" in _fails(capsys, "model", str(tmp_path / "missing.onnx"),
                                      "--out", str(out))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not really an onnx model" * 10)
    assert "not a valid ONNX model" in _fails(capsys, "model", str(corrupt), "--out", str(out))
    truncated = tmp_path / "head.pt2"
    _save_head("pt2", truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    assert "not a valid" in _fails(capsys, "model", str(truncated), "--out", str(out))
    static = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(Head().eval(), (torch.rand(1, 3, 16, 16),)), static)
    assert "dynamic" in _fails(capsys, "model", str(static), "--out", str(out))
    pickled = tmp_path / "pickled.pt"
    torch.save(Head(), pickled)
    assert "does not unpickle" in _fails(capsys, "model", str(pickled), "--out", str(out))
    assert not out.exists() and leftovers(tmp_path) == []


class _Payload:
    """Unpickling this object runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _rewrite_pt2(source: Path, target: Path, change) -> None:
    """Copy the archive ``source`` to ``target``, ``change(members)`` editing the dict of
    member name (without the archive's root folder) to bytes."""
    with zipfile.ZipFile(source) as archive:
        root = archive.namelist()[0].split("/")[0]
        members = {n.split("/", 1)[1]: archive.read(n) for n in archive.namelist()}
    change(members)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{root}/{name}", data)


def _pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _edit_json(members: dict, name: str, edit) -> None:
    data = json.loads(members[name])
    edit(data)
    members[name] = json.dumps(data).encode()


def _first_expr(node, payload: str) -> bool:
    """Replace the first symbolic size expression in a model's JSON by ``payload``."""
    if isinstance(node, dict):
        if isinstance(node.get("expr_str"), str):
            node["expr_str"] = payload
            return True
        return any(_first_expr(v, payload) for v in node.values())
    if isinstance(node, list):
        return any(_first_expr(v, payload) for v in node)
    return False


def _hostile(kind: str, marker: Path):
    """An edit of a .pt2 archive's members that makes loading or running it create
    ``marker``, through each place torch.export.load unpickles or evaluates text."""
    touch = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def change(members: dict) -> None:
        if kind == "sample inputs":
            members["data/sample_inputs/model.pt"] = _pickled(_Payload(marker))
        elif kind == "pickled weight":
            def edit(config):
                config["config"]["mix.weight"]["use_pickle"] = True
            _edit_json(members, "data/weights/model_weights_config.json", edit)
            name = json.loads(members["data/weights/model_weights_config.json"])["config"][
                "mix.weight"]["path_name"]
            members[f"data/weights/{name}"] = _pickled(_Payload(marker))
        elif kind == "opaque constant":
            def edit(config):
                config["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False,
                                            "use_pickle": True, "tensor_meta": None}
            _edit_json(members, "data/constants/model_constants_config.json", edit)
            members["data/constants/opaque_obj_0"] = pickle.dumps(_Payload(marker))
        elif kind == "guard code":
            def edit(model):
                model["guards_code"] = [f"{touch} is None"]
            _edit_json(members, "models/model.json", edit)
        elif kind == "size expression":
            _edit_json(members, "models/model.json", lambda model: _first_expr(
                model, f"({touch} or 1) * Symbol('s0', positive=True, integer=True)"))
    return change


@pytest.mark.parametrize("kind", ["sample inputs", "pickled weight", "opaque constant",
                                  "guard code", "size expression"])
def test_hostile_pt2_runs_no_code(tmp_path, capsys, kind):
    good, evil, marker = tmp_path / "head.pt2", tmp_path / "evil.pt2", tmp_path / "pwned"
    _save_head("pt2", good)
    _rewrite_pt2(good, evil, _hostile(kind, marker))
    code = main(["model", str(evil), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert not marker.exists(), "the archive's payload ran"
    assert code == 1 and err.startswith("export: error: ") and err.count("\n") == 1, err
    assert "refus" in err or "cannot load" in err, err
    assert not (tmp_path / "out").exists()


def test_hostile_pt2_renamed_onnx_runs_no_code(tmp_path):
    good, evil, marker = tmp_path / "head.pt2", tmp_path / "evil.onnx", tmp_path / "pwned"
    _save_head("pt2", good)
    _rewrite_pt2(good, evil, _hostile("sample inputs", marker))
    result = tool("model", str(evil), "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and not marker.exists()
    assert result.stderr.startswith("export: error: ") and result.stderr.count("\n") == 1, (
        result.stderr)


def test_rewritten_pt2_still_loads(tmp_path):
    """The archive rewriting used above keeps a good archive good (the hostile tests fail
    for their payload, not for the copying)."""
    from export.loaders import load_program

    good, copy = tmp_path / "head.pt2", tmp_path / "copy.pt2"
    _save_head("pt2", good)
    _rewrite_pt2(good, copy, lambda members: None)
    program, shape = load_program(copy)
    x = torch.rand(1, 3, 24, 32)
    torch.testing.assert_close(program.module()(x), Head().eval()(x))
    assert shape == (2, 3, 40, 48)


class _SizeArithmetic(nn.Module):
    """A head whose graph computes with its input's sizes: the archive holds size
    expressions and guard code that the safety checks must accept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = nn.functional.interpolate(x, scale_factor=0.5)
        y = y.reshape(b, c, -1).softmax(-1).reshape(b, c, h // 2, w // 2)
        return torch.cat([y, y[:, :1] * (h % 3)], 1)


def test_pt2_with_size_guards_loads(tmp_path):
    from export.loaders import load_program

    dims = {0: torch.export.Dim("b"), 2: 2 * torch.export.Dim("h", min=4, max=2000),
            3: 2 * torch.export.Dim("w", min=4)}
    path = tmp_path / "sizes.pt2"
    torch.export.save(torch.export.export(_SizeArithmetic(), (torch.rand(2, 3, 40, 48),),
                                          dynamic_shapes=(dims,)), path)
    with zipfile.ZipFile(path) as archive:
        model = json.loads(archive.read(next(n for n in archive.namelist()
                                             if n.endswith("models/model.json"))))
    assert model["guards_code"]  # the case this test is for
    program, shape = load_program(path)
    x = torch.rand(1, 3, 20, 30)
    torch.testing.assert_close(program.module()(x), _SizeArithmetic()(x))
    assert shape == (2, 3, 40, 48)


def test_onnx_output_not_4d(tmp_path, capsys):
    class Flat(nn.Module):
        def forward(self, x):
            return x.mean(dim=1)

    path = tmp_path / "flat.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Flat(), (torch.rand(1, 3, 16, 16),), str(path), input_names=["x"],
                          output_names=["y"], dynamo=False, opset_version=17)
    err = _fails(capsys, "model", str(path), "--out", str(tmp_path / "out"))
    assert "'y' is 3-D" in err and "4-D" in err
    assert not (tmp_path / "out").exists()


def test_threshold_outside_unit_interval(tmp_path, capsys):
    err = _fails(capsys, "demo", "--out", str(tmp_path / "out"), "--threshold", "1.5")
    assert "--threshold" in err and "--force" in err
    assert main(["demo", "--out", str(tmp_path / "out"), "--threshold", "1.5", "--force"]) == 0
    accuracy = json.loads((tmp_path / "out" / "accuracy.json").read_text())
    assert accuracy["peaks"] == 0  # nothing above 1.5 in maps that peak near 0.9


def test_unknown_provider(tmp_path, capsys):
    err = _fails(capsys, "demo", "--out", str(tmp_path / "out"), "--provider", "tpu", code=2)
    assert "'tpu'" in err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    err = _fails(capsys, "demo", "--out", str(blocker / "out"))
    assert "cannot write to output folder" in err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "not a previous export" in _fails(capsys, "demo", "--out", str(foreign))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_failure_midway_leaves_nothing(tmp_path, capsys):
    # TorchScript is written first, then the ONNX export refuses opset 12.
    out = tmp_path / "out"
    assert "opset 12" in _fails(capsys, "demo", "--out", str(out), "--opset", "12")
    assert not out.exists() and leftovers(tmp_path) == []
    # A previous complete export stays as it was.
    ok("demo", "--out", str(out))
    before = (out / "metadata.json").read_text()
    _fails(capsys, "demo", "--out", str(out), "--opset", "12")
    assert (out / "metadata.json").read_text() == before and leftovers(tmp_path) == []
