"""``python -m export pipeline multiclass-bottom-up`` and ``run`` on its graph, end to end.

A TorchScript head with part maps and class maps (tests/pipeline_heads.py: class k is
the k-th vertical band of the frame) is exported by the tool; the graph runs in ONNX
Runtime at another frame size and batch and is compared with the eager pipeline; then
``run`` groups identities on the host. Oracles for ``run``: the graph's outputs grouped by
scipy per (frame, part) (tests/identity_oracle.py), written out as instances in plain
Python, and the known layout (the animal drawn in band k is instance k).
"""

import contextlib
import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import identity_oracle  # noqa: E402
from export.__main__ import main  # noqa: E402
from export_helpers import one_error  # noqa: E402
from peaklayers import MultiClassBottomUpPipeline  # noqa: E402
from pipeline_heads import PartsClassMapsTuple, frames  # noqa: E402

NODES = ["head", "left", "right"]
# Per frame: animals' centres. Frame 0 one per band, frame 1 both in band 0 (class 1 is
# left empty: the assigned peak is not its best class), frame 2 one, frame 3 none.
ANIMALS = [[(20.3, 30.6), (71.8, 35.2)], [(30.4, 20.2), (10.7, 44.9)], [(60.5, 40.2)], []]
SETTINGS = ["--max-peaks", "3", "--stride", "2", "--max-stride", "4"]


def _tool(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _head() -> PartsClassMapsTuple:
    return PartsClassMapsTuple(stride=2, class_stride=2).eval()


def _pipeline() -> MultiClassBottomUpPipeline:
    return MultiClassBottomUpPipeline(_head(), 3, stride=2, max_stride=4).eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("bottomup_tool")
    torch.jit.script(_head()).save(str(folder / "head.pt"))
    code, _, err = _tool("pipeline", "multiclass-bottom-up", str(folder / "head.pt"), *SETTINGS,
                         "--input-shape", "1,64,80", "--node-names", ",".join(NODES),
                         "--out", str(folder / "out"), "--provider", "cpu")
    assert code == 0, err
    clip = frames(len(ANIMALS), 72, 96, ANIMALS, seed=3, parts=False).numpy()
    np.save(folder / "clip.npy", clip)
    return {"folder": folder, "out": folder / "out", "clip": clip}


def test_export_writes_a_verified_graph(work):
    out = work["out"]
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json", "model.onnx", "model.torchscript.pt", "report.md"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["layer"]["pipeline"] == "multiclass-bottom-up"
    assert [o["name"] for o in meta["outputs"]] == list(_pipeline().output_names)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    image = work["clip"][:3]  # another batch and frame size than the export's
    got = session.run(None, {"image": image})
    with torch.no_grad():
        want = [t.numpy() for t in _pipeline()(torch.from_numpy(image))]
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        if w.dtype == np.bool_:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=0, equal_nan=True)


def _expected(model: Path, clip: np.ndarray) -> list[dict]:
    """The frames' instances from the SPEC, on the graph's own outputs."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    peaks, vals, valid, probs = session.run(None, {"image": clip})
    s, c, _ = np.nonzero(valid)
    points, point_vals, class_probs = identity_oracle.classify(
        peaks[valid], vals[valid], probs[valid], s, c, valid.shape[0], valid.shape[1])
    records = []
    for frame in range(clip.shape[0]):
        instances = []
        for k in range(points.shape[1]):
            kept = [n for n in range(len(NODES)) if not np.isnan(points[frame, k, n, 0])]
            if not kept:
                continue
            nodes = []
            for n, name in enumerate(NODES):
                x, y = points[frame, k, n]
                found = n in kept
                nodes.append({"node": name, "x": x if found else None,
                              "y": y if found else None,
                              "value": point_vals[frame, k, n] if found else None,
                              "valid": found,
                              "class_prob": class_probs[frame, k, n] if found else None})
            instances.append({"instance": k, "class": k,
                              "class_prob": float(np.mean(class_probs[frame, k, kept])),
                              "nodes": nodes})
        records.append({"frame": frame, "instances": instances})
    return records


def _close(got, want, where="") -> None:
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{i}]")
    elif isinstance(want, (float, np.floating)):
        assert math.isclose(got, float(want), abs_tol=1e-6), (where, got, want)
    else:
        assert got == want, where


def test_run_groups_identities(work, tmp_path):
    saved = tmp_path / "out.json"
    code, _, err = _tool("run", str(work["out"] / "model.onnx"), str(work["folder"] / "clip.npy"),
                         "--batch-size", "3", "--save", str(saved), "--provider", "cpu")
    assert code == 0, err
    got = json.loads(saved.read_text())
    assert got["pipeline"] == "multiclass-bottom-up" and got["node_names"] == NODES
    records = got["files"][0]["frames"]
    _close(records, _expected(work["out"] / "model.onnx", work["clip"]))

    # The layout: instance k is the animal drawn in band k (part 0 within 1.5 px: the
    # stride-2 maps put points at p * 2, the average-pooled pixel's corner).
    by_frame = {r["frame"]: {i["instance"]: i for i in r["instances"]} for r in records}
    layout = {0: {0: ANIMALS[0][0], 1: ANIMALS[0][1]}, 1: {0: ANIMALS[1][1]},
              2: {1: ANIMALS[2][0]}, 3: {}}
    for frame, instances in layout.items():
        assert sorted(by_frame[frame]) == sorted(instances), frame
        for k, (x, y) in instances.items():
            node = by_frame[frame][k]["nodes"][0]
            assert math.hypot(node["x"] - x, node["y"] - y) < 1.5, (frame, k, node)


def test_run_csv_has_a_row_per_instance_and_part(work, tmp_path):
    saved = tmp_path / "out.csv"
    code, _, err = _tool("run", str(work["out"] / "model.onnx"), str(work["folder"] / "clip.npy"),
                         "--save", str(saved), "--provider", "cpu")
    assert code == 0, err
    rows = list(csv.DictReader(saved.open()))
    assert list(rows[0]) == ["file", "frame", "instance", "class", "class_prob", "node", "x",
                             "y", "value", "valid"]
    expected = _expected(work["out"] / "model.onnx", work["clip"])
    want = [(r["frame"], i["instance"], n) for r in expected for i in r["instances"]
            for n in i["nodes"]]
    assert len(rows) == len(want)
    for row, (frame, k, node) in zip(rows, want, strict=True):
        assert (int(row["frame"]), int(row["instance"]), int(row["class"])) == (frame, k, k)
        assert row["node"] == node["node"]
        if node["valid"]:
            assert math.isclose(float(row["class_prob"]), node["class_prob"], abs_tol=1e-6)
            assert math.isclose(float(row["x"]), node["x"], abs_tol=1e-6)
        else:
            assert row["x"] == "" and row["valid"] == "false"


def test_bad_settings_are_one_clear_error(work, tmp_path):
    head = str(work["folder"] / "head.pt")
    out = str(tmp_path / "o")
    base = ("pipeline", "multiclass-bottom-up", head, "--input-shape", "1,64,80", "--out", out)
    one_error(*_tool(*base, "--max-peaks", "3", "--format", "sleap-nn")[::2],
               "--format sleap-nn", "multiclass-bottom-up", "--format peaklayers")
    one_error(*_tool(*base)[::2], "--max-peaks")
    one_error(*_tool(*base, "--max-peaks", "0")[::2], "max_peaks")
    one_error(*_tool(*base, "--max-peaks", "2", "--class-stride", "0")[::2], "class_stride")
    one_error(*_tool("pipeline", "multiclass-bottom-up", head, head, "--max-peaks", "2",
                      "--out", out)[::2], "1 head")
    one_error(*_tool(*base, "--max-peaks", "2", "--class-output", "probs")[::2],
               "maps_output and class_output")
    assert not Path(out).exists()
