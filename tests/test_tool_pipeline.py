"""``python -m export pipeline``: pipelines around TorchScript heads, end to end.

The tool runs in a subprocess with a timeout (a hang fails the test instead of stalling
CI). The written graphs are run independently under ONNX Runtime on frames of another size
and compared with the eager pipeline module built from the same heads, or with a
plain-Python composition of the functional API; ``--format sleap-nn`` directories are
checked against SPEC §5.5 (tests/sleap_nn_reference.py).
"""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.__main__ import main  # noqa: E402
from peaklayers import TopDownPipeline  # noqa: E402
from peaklayers.functional import find_global_peaks  # noqa: E402
from sleap_nn_reference import check_directory  # noqa: E402

TOOL_TIMEOUT = 300  # seconds; an export and its verification take well under a minute


class Blur(nn.Module):
    """A head whose maps are the blurred image, channels chosen by a fixed 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.mix = nn.Conv2d(1, channels, 1, bias=False)
        nn.init.constant_(self.mix.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.pool(x))


def _tool_process(*args: str) -> None:
    """Run ``python -m export ARGS`` in a subprocess; fails on an error or a hang."""
    done = subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert done.returncode == 0, done.stderr


def _tool(*args: str) -> tuple[int, str]:
    """In-process, for arguments refused before any export."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("heads")
    torch.manual_seed(0)
    for name, channels in (("centroid", 1), ("instance", 2)):
        torch.jit.script(Blur(channels).eval()).save(str(folder / f"{name}.pt"))
    return folder / "centroid.pt", folder / "instance.pt"


def _frames(shape: tuple[int, ...], seed: int, spots=(2,)) -> np.ndarray:
    """uint8 frames with a bright 3x3 spot per animal; frame s holds spots[s % len(spots)]."""
    rng = np.random.default_rng(seed)
    frames = np.zeros(shape, np.uint8)
    for s in range(shape[0]):
        for _ in range(spots[s % len(spots)]):
            y, x = rng.integers(8, shape[2] - 8), rng.integers(8, shape[3] - 8)
            frames[s, 0, y - 1:y + 2, x - 1:x + 2] = 120
            frames[s, 0, y, x] = 255
    return frames


def test_top_down_pipeline_end_to_end(tmp_path, heads):
    out = tmp_path / "out"
    _tool_process("pipeline", "top-down", str(heads[0]), str(heads[1]), "--crop-size",
                  "16,16", "--max-instances", "2", "--input-shape", "1,64,80",
                  "--out", str(out), "--provider", "cpu")
    model = out / "model.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    frames = _frames((3, 1, 72, 90), seed=1)
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {session.get_inputs()[0].name: frames}), strict=True))
    pipeline = TopDownPipeline(torch.jit.load(str(heads[0])), torch.jit.load(str(heads[1])),
                               crop_size=(16, 16), max_instances=2).eval()
    with torch.no_grad():
        expected = pipeline(torch.from_numpy(frames))
    names = [o.name for o in session.get_outputs()]
    assert names[:2] == ["centroids", "centroid_vals"] and "instance_valid" in names
    valid = expected[-1].numpy() if isinstance(expected, tuple) else None
    assert valid is not None and np.array_equal(got["instance_valid"], valid)
    assert valid.any()
    np.testing.assert_allclose(got["centroids"], expected[0].numpy(), atol=1e-5,
                               equal_nan=True)
    assert json.loads((out / "metadata.json").read_text())["layer"]["format"] == "peaklayers"


def _zero_filled(t: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """SPEC §5.5: every value of an invalid slot is 0 (not NaN)."""
    return np.where(valid.reshape(valid.shape + (1,) * (t.ndim - valid.ndim)), t, 0.0)


def test_sleap_nn_top_down_from_the_tool(tmp_path, heads):
    out = tmp_path / "out"
    _tool_process("pipeline", "top-down", str(heads[0]), str(heads[1]), "--crop-size",
                  "16,16", "--max-instances", "3", "--input-shape", "1,64,80",
                  "--node-names", "nose,tail", "--format", "sleap-nn", "--out", str(out),
                  "--provider", "cpu")
    session, metadata = check_directory(out, "topdown", channels=1)
    assert metadata["crop_size"] == [16, 16] and metadata["max_instances"] == 3
    assert metadata["node_names"] == ["nose", "tail"] and metadata["n_nodes"] == 2
    assert metadata["input_scale"] == 1.0 and metadata["peak_threshold"] == 0.2

    # Another frame size and batch; 2, 0 and 1 animals: empty slots in every frame.
    frames = _frames((3, 1, 70, 94), seed=2, spots=(2, 0, 1))
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {"image": frames}), strict=True))
    pipeline = TopDownPipeline(torch.jit.load(str(heads[0])), torch.jit.load(str(heads[1])),
                               crop_size=(16, 16), max_instances=3).eval()
    with torch.no_grad():
        centroids, centroid_vals, peaks, peak_vals, valid = (
            t.numpy() for t in pipeline(torch.from_numpy(frames)))
    assert valid.sum(axis=1).tolist() == [2, 0, 1]
    np.testing.assert_array_equal(got["instance_valid"], valid)
    for name, want in (("centroids", centroids), ("centroid_vals", centroid_vals),
                       ("peaks", peaks), ("peak_vals", peak_vals)):
        assert got[name].dtype == np.float32, name
        assert (got[name][~valid] == 0).all(), name
        np.testing.assert_allclose(got[name], _zero_filled(want, valid), atol=1e-5, rtol=0,
                                   err_msg=name)


def test_sleap_nn_single_instance_from_the_tool(tmp_path, heads):
    out = tmp_path / "out"
    _tool_process("pipeline", "single-instance", str(heads[1]), "--input-shape", "1,64,80",
                  "--max-stride", "8", "--format", "sleap-nn", "--out", str(out),
                  "--provider", "cpu")
    session, metadata = check_directory(out, "single_instance", channels=1)
    assert metadata["node_names"] == ["node_0", "node_1"] and metadata["crop_size"] is None
    assert metadata["max_instances"] is None and metadata["output_stride"] == 1

    # Oracle: the functional API on the padded frames; the empty frame drops every part.
    frames = _frames((3, 1, 70, 94), seed=3, spots=(1, 1, 0))
    x = torch.from_numpy(frames).float() / 255
    x = F.pad(x, (0, -x.shape[3] % 8, 0, -x.shape[2] % 8))
    with torch.no_grad():
        points, vals = find_global_peaks(torch.jit.load(str(heads[1]))(x), 0.2, "integral")
    peaks, peak_vals = session.run(None, {"image": frames})
    assert peaks.dtype == peak_vals.dtype == np.float32
    assert np.isnan(peaks[2]).all() and (peak_vals[2] == 0).all()
    assert not np.isnan(peaks[:2]).any()
    np.testing.assert_allclose(peaks, points.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(peak_vals, vals.numpy(), atol=1e-6, rtol=0)


def test_bad_pipeline_arguments_are_one_line(tmp_path, heads):
    for extra in (["--max-instances", "0", "--crop-size", "16,16"],
                  ["--max-instances", "2", "--crop-size", "0,16"]):
        code, err = _tool("pipeline", "top-down", str(heads[0]), str(heads[1]), *extra,
                          "--input-shape", "1,64,80", "--out", str(tmp_path / "o"))
        assert code in (1, 2), err
        assert len(err.strip().splitlines()) == 1 and "export: error:" in err, err
    code, err = _tool("pipeline", "centroid", str(heads[1]), "--max-instances", "2",
                      "--input-shape", "1,64,80", "--out", str(tmp_path / "o"))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    # A bad setting is named first, even where --input-shape is missing too.
    code, err = _tool("pipeline", "centroid", str(heads[0]), "--max-instances", "0",
                      "--out", str(tmp_path / "o"))
    assert code == 1 and "max_instances must be at least 1" in err, err
    code, err = _tool("pipeline", "top-down", str(heads[0]), str(heads[1]), "--max-instances",
                      "2", "--crop-size", "16", "--instance-output", "3", "--input-shape",
                      "1,64,80", "--out", str(tmp_path / "o"))
    assert code == 1 and "instance_output=3 does not index" in err, err
    for names, message in ((["--node-names", "a,b,c"], "--node-names must give 2 different"),
                           (["--node-names", "a,a"], "--node-names must give 2 different"),
                           (["--class-names", "a,b"], "--class-names: this pipeline has no")):
        code, err = _tool("pipeline", "top-down", str(heads[0]), str(heads[1]),
                          "--max-instances", "2", "--crop-size", "16", *names,
                          "--input-shape", "1,64,80", "--out", str(tmp_path / "o"))
        assert code == 1 and message in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, float_input", [([], False), (["--uint8"], False),
                                                (["--float-input"], True)])
def test_frame_dtype_flags(flags, float_input):
    from export.__main__ import build_parser

    args = build_parser().parse_args(["pipeline", "centroid", "c.pt", "--out", "o", *flags])
    assert args.float_input is float_input
