"""The tool under hostile or broken use: nothing the user owns is lost, one clear line.

Output folders (replaced only when this tool wrote them, staged, swapped in atomically,
cleaned up after SIGTERM and after a killed run), overlapping outputs, values JSON cannot
hold, empty frames, absurd sizes, Ctrl-C at start-up, and a bug that keeps its traceback.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export import folders  # noqa: E402
from export.__main__ import main  # noqa: E402
from peaklayers import LocalPeaks, export_onnx  # noqa: E402


def run_tool(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def one_line_error(code: int, err: str, expected_code: int = 1) -> str:
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: error: "), err
    return lines[0]


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "export", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def staging_folders(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# -- output folders ---------------------------------------------------------------------


def test_folder_with_someone_elses_metadata_is_not_replaced(tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "metadata.json").write_text('{"name": "my labelled frames"}')
    (data / "frames.npy").write_bytes(b"precious")
    line = one_line_error(*run_tool("demo", "--out", str(data))[::2])
    assert "not a previous export" in line
    assert sorted(p.name for p in data.iterdir()) == ["frames.npy", "metadata.json"]
    assert (data / "frames.npy").read_bytes() == b"precious"


def test_own_output_is_replaced_by_a_swap(tmp_path):
    final, staging = tmp_path / "out", tmp_path / ".out.partial-1-x"
    for folder, name in ((final, "old.txt"), (staging, "new.txt")):
        folder.mkdir()
        (folder / name).write_text(name)
        (folder / "metadata.json").write_text(json.dumps({"created_by": folders.CREATED_BY}))
    folders._move_into_place(staging, final)
    assert (final / "new.txt").exists() and not (final / "old.txt").exists()
    assert not staging.exists() or (staging / "old.txt").exists()


def test_staging_folders_of_ended_runs_are_removed(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True, timeout=60)
    dead = tmp_path / f".out.partial-{ended.stdout.strip()}-abcd1234"
    alive = tmp_path / f".out.partial-{os.getpid()}-abcd1234"
    unrelated = tmp_path / ".out.partial-notapid"
    for folder in (dead, alive, unrelated):
        folder.mkdir()
    with folders.staged_folder(tmp_path / "out") as stage:
        (stage / "metadata.json").write_text(json.dumps({"created_by": folders.CREATED_BY}))
    assert not dead.exists() and alive.exists() and unrelated.exists()
    assert (tmp_path / "out" / "metadata.json").exists()


def test_sigterm_leaves_no_staging_folder_and_no_output(tmp_path):
    out = tmp_path / "out"
    process = spawn("demo", "--out", str(out), "--provider", "cpu")
    deadline = time.monotonic() + 120
    while not staging_folders(tmp_path) and process.poll() is None:
        assert time.monotonic() < deadline, "the demo never started writing"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines() == ["export: error: terminated; nothing was left half-written"]
    assert staging_folders(tmp_path) == [] and not out.exists()


def test_ctrl_c_at_start_up_is_one_line(tmp_path):
    process = spawn("demo", "--out", str(tmp_path / "out"))
    time.sleep(0.5)  # still importing torch
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    # Exit status 130, or death by SIGINT itself (a shell reports both as 130) when the
    # signal lands inside torch's import machinery after the message was written.
    assert process.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, repr(err)


def test_dangling_symlink_out_is_refused_before_any_work(tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere")
    line = one_line_error(*run_tool("demo", "--out", str(link))[::2])
    assert "symbolic link" in line and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("triton", ["out", "out/triton"])
def test_triton_repository_overlapping_out_is_refused(tmp_path, triton):
    line = one_line_error(*run_tool("demo", "--out", str(tmp_path / "out"),
                                    "--triton", str(tmp_path / triton))[::2])
    assert "overlap" in line and not (tmp_path / "out").exists()


def test_out_inside_triton_repository_is_refused(tmp_path):
    line = one_line_error(*run_tool("demo", "--out", str(tmp_path / "repo" / "out"),
                                    "--triton", str(tmp_path / "repo"))[::2])
    assert "overlap" in line and not (tmp_path / "repo").exists()


# -- absurd arguments -------------------------------------------------------------------


def test_absurd_stride_is_one_line(tmp_path):
    line = one_line_error(*run_tool("demo", "--out", str(tmp_path / "o"), "--stride", "1e300")[::2])
    assert "--stride" in line


def test_huge_input_shape_is_refused_before_allocating(tmp_path):
    head = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Sigmoid()))
    head.save(str(tmp_path / "head.pt"))
    line = one_line_error(*run_tool("model", str(tmp_path / "head.pt"), "--input-shape",
                                    "3,100000,100000", "--out", str(tmp_path / "o"))[::2])
    assert "--input-shape" in line and not (tmp_path / "o").exists()


# -- running exported graphs ------------------------------------------------------------


@pytest.fixture(scope="module")
def local_graph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "local.onnx"
    export_onnx(LocalPeaks(refinement=None), torch.rand(1, 2, 8, 8), path)
    return path


def test_infinite_peak_values_are_null_in_json_and_empty_in_csv(tmp_path, local_graph):
    maps = np.zeros((1, 2, 8, 8), np.float32)
    maps[0, 0, 3, 4] = np.inf
    maps[0, 1, 5, 2] = 0.5
    np.save(tmp_path / "maps.npy", maps)
    for suffix in ("json", "csv"):
        code, _, err = run_tool("run", str(local_graph), str(tmp_path / "maps.npy"),
                                "--provider", "cpu", "--save", str(tmp_path / f"p.{suffix}"))
        assert code == 0, err
    peaks = json.loads((tmp_path / "p.json").read_text())["files"][0]["peaks"]
    assert [(p["x"], p["y"], p["value"]) for p in peaks] == [(4.0, 3.0, None), (2.0, 5.0, 0.5)]
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[1].split(",")[-1] == "" and rows[2].split(",")[-1] == "0.500000"


def test_empty_frame_is_refused_before_onnx_runtime(tmp_path, local_graph, capfd):
    np.save(tmp_path / "empty.npy", np.zeros((1, 2, 0, 8), np.float32))
    code, _, err = run_tool("run", str(local_graph), str(tmp_path / "empty.npy"))
    line = one_line_error(code, err)
    assert "height and width must not be 0" in line
    assert "onnxruntime" not in capfd.readouterr().err


# -- a bug keeps its traceback ----------------------------------------------------------


def test_a_bug_prints_its_traceback_and_asks_for_a_report(monkeypatch):
    from export import demo

    def broken(**_):
        return 1 // 0

    monkeypatch.setattr(demo, "run", broken)
    code, _, err = run_tool("demo", "--out", "unused")
    assert code == 70
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.strip().splitlines()[-1].startswith("export: error: this is a bug in peaklayers")


# -- what already held: kept that way ---------------------------------------------------


def test_pickled_npy_is_not_unpickled(tmp_path, local_graph):
    marker = tmp_path / "ran"
    payload = np.array([_Payload(str(marker))], dtype=object)
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    line = one_line_error(*run_tool("run", str(local_graph), str(tmp_path / "evil.npy"))[::2])
    assert "object" in line and not marker.exists()


class _Payload:
    """Unpickling this creates a file: it must never happen."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _onnx_head(path: Path, input_shape: list, external: str | None = None) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    if external is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", "24")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])],
        "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], 2,
                                                               *input_shape[2:]])],
        [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.ones(6, np.float32).tobytes())
    (tmp_path / "model").mkdir()
    _onnx_head(tmp_path / "model" / "head.onnx", ["b", 3, "h", "w"], external="../secret.bin")
    line = one_line_error(*run_tool("model", str(tmp_path / "model" / "head.onnx"),
                                    "--out", str(tmp_path / "o"))[::2])
    assert "points outside" in line and not (tmp_path / "o").exists()


def test_onnx_head_with_a_huge_fixed_input_is_refused_before_allocating(tmp_path):
    _onnx_head(tmp_path / "head.onnx", [1, 3, 20000, 20000])
    line = one_line_error(*run_tool("model", str(tmp_path / "head.onnx"),
                                    "--out", str(tmp_path / "o"))[::2])
    assert "(1, 3, 20000, 20000)" in line and not (tmp_path / "o").exists()
