"""The package as a user installs it: ``pip install .`` (not editable) into a fresh venv.

The fresh venv gets the already-installed dependencies (torch, onnx, onnxruntime, ...)
through a ``.pth`` line pointing at this interpreter's site-packages, so only peaklayers
itself is installed; everything then runs from a temporary folder outside the repository.
"""

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv with peaklayers installed from the repository."""
    home = tmp_path_factory.mktemp("install")
    env = home / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=home).stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = _run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(ROOT), cwd=home)
    assert done.returncode == 0, done.stderr
    return env / "bin"


def test_installed_command_runs_the_demo(installed: Path, tmp_path: Path) -> None:
    done = _run(str(installed / "peaklayers"), "demo", "--out", "demo", "--provider", "cpu",
                cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads((tmp_path / "demo" / "metadata.json").read_text())
    assert {"model.onnx", "model.torchscript.pt"} <= set(meta["files"])
    assert meta["verification"]["parity"][-1]["mismatches"] == []


def test_installed_package_is_a_copy_and_installs_no_export_package(installed: Path,
                                                                    tmp_path: Path) -> None:
    code = ("import importlib.util, json, peaklayers, peaklayers_tool; print(json.dumps("
            "[peaklayers.__file__, peaklayers_tool.__file__, "
            "importlib.util.find_spec('export') is not None]))")
    done = _run(str(installed / "python"), "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    library, tool, has_export = json.loads(done.stdout)
    venv_root = str(installed.parent)
    assert library.startswith(venv_root) and tool.startswith(venv_root)
    assert not has_export


def test_import_loads_no_onnx_onnxruntime_or_scipy(installed: Path, tmp_path: Path) -> None:
    code = ("import sys, peaklayers; "
            "print([m for m in ('onnx', 'onnxruntime', 'scipy') if m in sys.modules])")
    done = _run(str(installed / "python"), "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_in_place_import_loads_no_onnx_onnxruntime_or_scipy() -> None:
    code = ("import sys, peaklayers, peaklayers.functional; "
            "print([m for m in ('onnx', 'onnxruntime', 'scipy') if m in sys.modules])")
    done = _run(sys.executable, "-c", code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
