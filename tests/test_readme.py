"""Every Python example in README.md and docs/*.md runs, in order, as a user would paste them."""

import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# A block right after this comment needs something a test machine lacks (a Triton server).
NOT_RUN = "<!-- not run: "


def _blocks(page: Path) -> list[str]:
    found = re.findall(r"(<!-- [^>]*-->\n)?```python\n(.*?)```", page.read_text(encoding="utf-8"),
                       re.S)
    return [block for comment, block in found if not comment.startswith(NOT_RUN)]


def test_readme_has_examples():
    assert len(_blocks(ROOT / "README.md")) >= 5


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write their .onnx files here
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number, block in enumerate(_blocks(page)):
            try:
                exec(compile(block, f"{page.name} python block {number}", "exec"), namespace)
            except Exception as error:
                message = f"{page.name} python block {number} failed:\n{block}"
                raise AssertionError(message) from error
