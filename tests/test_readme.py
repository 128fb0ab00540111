"""Every Python example in README.md runs, in order, as a user would paste them."""

import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)  # examples write their .onnx files here
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number, block in enumerate(blocks):
            try:
                exec(compile(block, f"README.md python block {number}", "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"README python block {number} failed:\n{block}") from error
