"""``python -m export run`` on pipeline graphs: a video made here, end to end.

Top-down and multi-class top-down graphs are exported with the tool from TorchScript heads,
then run by the tool on a lossless (FFV1) video of frames with known animals, on the same
frames as uint8 ``.npy`` and PNG, and on the sleap-nn format's folder. The oracle: the
graph run once on all frames by ONNX Runtime directly, turned into instances in plain
Python from the SPEC (valid slots only, NaN as null), identities by a brute-force
assignment over ``class_probs``; and the known animals (centres, which one is brighter).
"""

import contextlib
import csv
import io
import itertools
import json
import math
import sys
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from export.__main__ import main  # noqa: E402
from export.frames_in import as_graph_input  # noqa: E402
from export.png import write_png  # noqa: E402
from export_helpers import one_error  # noqa: E402
from peaklayers import MultiClassTopDownPipeline  # noqa: E402
from peaklayers.exporting.sleap_nn import export_sleap_nn  # noqa: E402
from pipeline_heads import Blur, Parts, frames  # noqa: E402

NODES = ["head", "left", "right"]
HEIGHT, WIDTH = 72, 96  # the video's frame size; the graphs are exported at 64 x 80
# Per frame: the animals' centres, brightest first (amplitudes 1.0, 0.85: pipeline_heads).
ANIMALS = ([[(20.3, 18.6), (70.7, 50.2)], [(30.5, 40.4), (75.2, 20.8)],
            [(15.6, 55.1), (50.4, 30.3)], [(60.2, 15.7), (25.8, 45.5)],
            [(80.1, 55.6), (40.3, 20.2)], [(45.5, 50.5), (20.2, 22.7)],
            [(65.6, 35.3), (30.1, 60.2)], [(22.4, 30.6), (72.3, 42.1)],
            [(55.3, 58.2), (35.6, 15.4)], [(48.2, 36.6)], []])


class CentreClasses(Parts):
    """Part maps and two class probabilities from the crop's centre pixel ``c`` (the
    animal's brightness): ``softmax(4 * [c, 1 - c])``. Both animals prefer class 0, so only
    an assignment over the frame gives the dimmer one class 1."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = torch.nn.functional.conv2d(x.mean(dim=1, keepdim=True), self.kernel, padding=6)
        c = x[:, :, x.shape[2] // 2, x.shape[3] // 2].mean(dim=1)
        return {"maps": maps, "classes": torch.softmax(torch.stack([c, 1 - c], dim=1) * 4, 1)}


def _tool(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _write_video(path: Path, clip: np.ndarray) -> None:
    """``clip (S, 1, H, W) uint8`` as a lossless FFV1 grey video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = clip.shape[3], clip.shape[2], "gray"
        for frame in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame[0], format="gray")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("run_pipeline")
    torch.jit.script(Blur().eval()).save(str(folder / "centroid.pt"))
    torch.jit.script(Parts().eval()).save(str(folder / "instance.pt"))
    torch.jit.script(CentreClasses().eval()).save(str(folder / "classes.pt"))
    common = ["--crop-size", "16,16", "--max-instances", "3", "--input-shape", "1,64,80",
              "--node-names", ",".join(NODES), "--provider", "cpu"]
    for kind, head, extra in (("top-down", "instance.pt", []),
                              ("multiclass-top-down", "classes.pt",
                               ["--instance-output", "maps", "--class-output", "classes",
                                "--class-names", "bright,dim"])):
        code, _, err = _tool("pipeline", kind, str(folder / "centroid.pt"), str(folder / head),
                             *common, *extra, "--out", str(folder / kind))
        assert code == 0, err
    clip = frames(len(ANIMALS), HEIGHT, WIDTH, ANIMALS, seed=2).numpy()
    _write_video(folder / "clip.mkv", clip)
    np.save(folder / "clip.npy", clip)
    return {"folder": folder, "clip": clip, "top-down": folder / "top-down" / "model.onnx",
            "multiclass": folder / "multiclass-top-down" / "model.onnx"}


# ---------------------------------------------------------------------------- oracle


def _graph_outputs(model: Path, clip: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": clip}), strict=True))


def _best_classes(probs: list[list[float]]) -> list[int]:
    """Brute force over every one-to-one assignment of instances to classes (n <= K)."""
    n, k = len(probs), len(probs[0]) if probs else 0
    best = max(itertools.permutations(range(k), n),
               key=lambda classes: sum(probs[i][c] for i, c in enumerate(classes)), default=())
    return list(best)


def _null(value: float):
    return float(value) if math.isfinite(value) else None


def _expected(outputs: dict[str, np.ndarray], node_names: list[str]) -> list[dict]:
    """Per frame, the valid slots in slot order, as the SPEC and the brief describe them."""
    probs = outputs.get("class_probs", outputs.get("class_logits"))
    records = []
    for s in range(outputs["instance_valid"].shape[0]):
        slots = [i for i in range(outputs["instance_valid"].shape[1])
                 if outputs["instance_valid"][s, i]]
        classes = _best_classes([probs[s, i].tolist() for i in slots]) if probs is not None \
            else []
        instances = []
        for j, i in enumerate(slots):
            inst = {"instance": i}
            if probs is not None:
                inst["class"] = classes[j]
                inst["class_prob"] = float(probs[s, i, classes[j]])
            cx, cy = outputs["centroids"][s, i]
            inst["centroid"] = {"x": _null(cx), "y": _null(cy),
                                "value": _null(outputs["centroid_vals"][s, i])}
            inst["nodes"] = []
            for n in range(outputs["peaks"].shape[2]):
                x, y = (float(v) for v in outputs["peaks"][s, i, n])
                inst["nodes"].append({"node": node_names[n], "x": _null(x), "y": _null(y),
                                      "value": _null(outputs["peak_vals"][s, i, n]),
                                      "valid": math.isfinite(x) and math.isfinite(y)})
            instances.append(inst)
        records.append({"frame": s, "instances": instances})
    return records


def _close(got, want, where: str = "") -> None:
    """Equal structures; floats to 1e-5 px (the CSV keeps 6 decimals)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (where, got, want)
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{n}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and abs(got - want) <= 1e-5, (where, got, want)
    else:
        assert got == want and type(got) is type(want), (where, got, want)


def _csv_expected(file: str, records: list[dict], classes: bool) -> list[dict]:
    rows = []
    for record in records:
        for inst in record["instances"]:
            for node in inst["nodes"]:
                row = {"file": file, "frame": record["frame"], "instance": inst["instance"]}
                if classes:
                    row.update({"class": inst["class"], "class_prob": inst["class_prob"]})
                row.update({"centroid_x": inst["centroid"]["x"],
                            "centroid_y": inst["centroid"]["y"],
                            "centroid_value": inst["centroid"]["value"], "node": node["node"],
                            "x": node["x"], "y": node["y"], "value": node["value"],
                            "valid": "true" if node["valid"] else "false"})
                rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict]:
    def cell(key: str, text: str):
        if key in ("file", "node", "valid"):
            return text
        if text == "":
            return None
        return int(text) if key in ("frame", "instance", "class") else float(text)

    with open(path, newline="") as handle:
        return [{k: cell(k, v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _near(point: dict, x: float, y: float, tolerance: float = 0.75) -> bool:
    """Within ``tolerance`` px of a true centre (the part blobs pull the refined peak)."""
    return math.hypot(point["x"] - x, point["y"] - y) <= tolerance


# ---------------------------------------------------------------------------- tests


def test_top_down_on_a_video_json_and_csv(work, tmp_path):
    video = str(work["folder"] / "clip.mkv")
    saved = tmp_path / "out.json"
    code, out, err = _tool("run", str(work["top-down"]), video, "--batch-size", "4",
                           "--save", str(saved), "--provider", "cpu")
    assert code == 0 and err == "", err  # stderr is no terminal: no progress bar
    assert "11 frames" in out and "ms/frame" in out
    got = json.loads(saved.read_text())
    expected = _expected(_graph_outputs(work["top-down"], work["clip"]), NODES)
    assert got["pipeline"] == "top-down" and got["node_names"] == NODES
    assert [f["file"] for f in got["files"]] == [video]
    _close(got["files"][0]["frames"], expected)

    # The known animals: one instance per animal, its centroid and centre part on it.
    for record, animals in zip(got["files"][0]["frames"], ANIMALS, strict=True):
        assert len(record["instances"]) == len(animals)
        for x, y in animals:
            assert any(_near(inst["centroid"], x, y) and _near(inst["nodes"][0], x, y)
                       for inst in record["instances"]), (record["frame"], x, y)

    table = tmp_path / "out.csv"
    code, _, err = _tool("run", str(work["top-down"]), video, "--batch-size", "4",
                         "--save", str(table), "--provider", "cpu")
    assert code == 0, err
    _close(_read_csv(table), _csv_expected(video, expected, classes=False))


def test_multiclass_identities_on_a_video(work, tmp_path):
    video = str(work["folder"] / "clip.mkv")
    saved = tmp_path / "ids.json"
    code, _, err = _tool("run", str(work["multiclass"]), video, "--batch-size", "3",
                         "--save", str(saved), "--provider", "cpu")
    assert code == 0, err
    got = json.loads(saved.read_text())
    assert got["class_names"] == ["bright", "dim"] and got["node_names"] == NODES
    outputs = _graph_outputs(work["multiclass"], work["clip"])
    expected = _expected(outputs, NODES)
    _close(got["files"][0]["frames"], expected)

    # From the layout: the brighter animal is class 0, the dimmer class 1, though both
    # have class 0 as their most likely class (a per-instance argmax would give 0, 0).
    for record, animals in zip(got["files"][0]["frames"], ANIMALS, strict=True):
        for rank, (x, y) in enumerate(animals):
            (inst,) = [i for i in record["instances"] if _near(i["centroid"], x, y)]
            assert inst["class"] == rank, (record["frame"], rank, inst)
    two = outputs["class_probs"][outputs["instance_valid"]]
    assert (np.argmax(two, axis=1) == 0).all()

    table = tmp_path / "ids.csv"
    code, _, err = _tool("run", str(work["multiclass"]), video, "--batch-size", "3",
                         "--save", str(table), "--provider", "cpu")
    assert code == 0, err
    _close(_read_csv(table), _csv_expected(video, expected, classes=True))


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_uint8_npy_in_batches(work, tmp_path, batch_size):
    array = str(work["folder"] / "clip.npy")
    saved = tmp_path / "npy.json"
    code, _, err = _tool("run", str(work["top-down"]), array, "--batch-size", str(batch_size),
                         "--save", str(saved), "--provider", "cpu")
    assert code == 0, err
    expected = _expected(_graph_outputs(work["top-down"], work["clip"]), NODES)
    _close(json.loads(saved.read_text())["files"][0]["frames"], expected)


def test_one_frame_npy_and_png(work, tmp_path):
    frame = work["clip"][4]
    np.save(tmp_path / "one.npy", frame)  # (C, H, W)
    write_png(tmp_path / "one.png", frame[0])
    saved = tmp_path / "one.json"
    code, _, err = _tool("run", str(work["top-down"]), str(tmp_path / "one.npy"),
                         str(tmp_path / "one.png"), "--save", str(saved), "--provider", "cpu")
    assert code == 0, err
    expected = _expected(_graph_outputs(work["top-down"], frame[None]), NODES)
    files = json.loads(saved.read_text())["files"]
    assert len(files) == 2
    for entry in files:
        _close(entry["frames"], expected)


def test_sleap_nn_folder(work, tmp_path):
    pipeline = MultiClassTopDownPipeline(
        Blur(), CentreClasses(), (16, 16), 3, instance_output="maps",
        class_output="classes").eval()
    folder = export_sleap_nn(pipeline, torch.from_numpy(work["clip"][:1]), tmp_path / "sn",
                             node_names=["a", "b", "c"])
    saved = tmp_path / "sn.json"
    code, _, err = _tool("run", str(folder), str(work["folder"] / "clip.mkv"),
                         "--batch-size", "4", "--save", str(saved), "--provider", "cpu")
    assert code == 0, err
    got = json.loads(saved.read_text())
    assert got["format"] == "sleap-nn" and got["pipeline"] == "multiclass-top-down"
    assert got["node_names"] == ["a", "b", "c"]
    outputs = _graph_outputs(folder / "model.onnx", work["clip"])
    assert (outputs["centroids"][~outputs["instance_valid"]] == 0).all()  # zero-filled
    _close(got["files"][0]["frames"], _expected(outputs, ["a", "b", "c"]))


def test_float_graphs_get_frames_over_255():
    frames_u8 = np.arange(24, dtype=np.uint8).reshape(2, 1, 3, 4) * 10
    got = as_graph_input(frames_u8, np.dtype(np.float32))
    assert got.dtype == np.float32
    assert np.array_equal(got, frames_u8.astype(np.float32) / np.float32(255))
    assert np.array_equal(as_graph_input(frames_u8, np.dtype(np.uint8)), frames_u8)


def test_bad_inputs_are_one_clear_error(work, tmp_path, monkeypatch):
    model = str(work["top-down"])
    saved = tmp_path / "kept.json"
    saved.write_text("the user's file\n")
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    good = str(work["folder"] / "clip.mkv")

    # A video that cannot be decoded, after a good one: nothing runs, nothing is written.
    code, out, err = _tool("run", model, good, str(garbage), "--save", str(saved))
    one_error(code, err, str(garbage), "not a readable video")
    assert "frames" not in out
    assert saved.read_text() == "the user's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "kept.json"]

    np.save(tmp_path / "float.npy", work["clip"].astype(np.float32) / 255)
    code, _, err = _tool("run", model, str(tmp_path / "float.npy"))
    one_error(code, err, "float.npy", "uint8")

    code, _, err = _tool("run", model, good, "--max-pixels", "1000")
    one_error(code, err, "clip.mkv", "--max-pixels")

    code, _, err = _tool("run", model, good, "--batch-size", "0")
    one_error(code, err, "--batch-size")

    code, _, err = _tool("run", str(tmp_path), good)
    one_error(code, err, "model.onnx")

    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed: import fails
    code, _, err = _tool("run", model, good, "--save", str(saved))
    one_error(code, err, "PyAV", "peaklayers[video]")
    assert saved.read_text() == "the user's file\n"
