"""The example script the README points to runs and finds the blobs it draws."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "local peaks: 4 found" in done.stdout, done.stdout
