"""``python -m export pipeline``: a top-down pipeline around two TorchScript heads, end to end.

The written graphs are run independently under ONNX Runtime on frames of another size and
compared with the eager pipeline module built from the same heads.
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.__main__ import main  # noqa: E402
from peaklayers import TopDownPipeline  # noqa: E402


class Blur(nn.Module):
    """A head whose maps are the blurred image, channels chosen by a fixed 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.mix = nn.Conv2d(1, channels, 1, bias=False)
        nn.init.constant_(self.mix.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.pool(x))


def _tool(*args: str) -> tuple[int, str]:
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


def _frames(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.zeros(shape, np.uint8)
    for s in range(shape[0]):
        for _ in range(2):
            y, x = rng.integers(8, shape[2] - 8), rng.integers(8, shape[3] - 8)
            frames[s, 0, y - 1:y + 2, x - 1:x + 2] = 120
            frames[s, 0, y, x] = 255
    return frames


@pytest.mark.parametrize("form", ["peaklayers"])
def test_top_down_pipeline_end_to_end(tmp_path, heads, form):
    out = tmp_path / "out"
    code, err = _tool("pipeline", "top-down", str(heads[0]), str(heads[1]), "--crop-size",
                      "16,16", "--max-instances", "2", "--input-shape", "1,64,80",
                      "--format", form, "--out", str(out), "--provider", "cpu")
    assert code == 0, err
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
    exp_centroids = expected[0].numpy()
    if form == "sleap-nn":
        assert json.loads((out / "export_metadata.json").read_text())["model_type"] == "topdown"
        exp_centroids = np.where(valid[..., None], exp_centroids, 0.0)
    np.testing.assert_allclose(got["centroids"], exp_centroids, atol=1e-5, equal_nan=True)


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
    assert not (tmp_path / "o").exists()
