"""Every Python example in README.md and docs/*.md runs, in order, as a user would paste them.

A shell block marked ``<!-- run -->`` runs too, in its place: each ``peaklayers`` command
in it (backslash continuations joined) runs as ``python -m peaklayers_tool`` and must
succeed.
"""

import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# A block right after this comment needs something a test machine lacks (a Triton server).
NOT_RUN = "<!-- not run: "
RUN_SHELL = "<!-- run -->"


def _blocks(page: Path) -> list[tuple[str, str]]:
    """The page's runnable blocks in order, as ``(language, text)``."""
    found = re.findall(r"(<!-- [^>]*-->\n)?```(python|bash)\n(.*?)```",
                       page.read_text(encoding="utf-8"), re.S)
    return [(language, block) for comment, language, block in found
            if (language == "python" and not comment.startswith(NOT_RUN))
            or (language == "bash" and comment.strip() == RUN_SHELL)]


def _commands(block: str) -> list[list[str]]:
    """The ``peaklayers`` commands of a shell block, as argument lists."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "peaklayers", f"only peaklayers commands run here: {line}"
            commands.append([sys.executable, "-m", "peaklayers_tool", *words[1:]])
    return commands


def test_readme_has_examples():
    assert sum(language == "python" for language, _ in _blocks(ROOT / "README.md")) >= 5


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write their files here
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number, (language, block) in enumerate(_blocks(page)):
            where = f"{page.name} {language} block {number}"
            if language == "bash":
                for command in _commands(block):
                    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
                    assert done.returncode == 0, f"{where} failed: {shlex.join(command[2:])}\n" + (
                        done.stderr[-3000:])
                continue
            try:
                exec(compile(block, where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{where} failed:\n{block}") from error
