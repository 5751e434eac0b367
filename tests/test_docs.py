"""Every Python code block of README.md and docs/*.md runs, so the docs cannot rot.

Blocks of one file run in order in one namespace. A block preceded by the line
``<!-- skip-test -->`` is skipped (for code that needs a GPU, many processes or minutes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```", re.S)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = "\n" + path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        if m.group("before").strip() == "<!-- skip-test -->":
            continue
        line = text[: m.start("code")].count("\n")
        blocks.append((line, m.group("code")))
    return blocks


DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_code_blocks_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no Python blocks")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_test__"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as err:  # report which block failed
            raise AssertionError(f"{path.name}, block at line {line} failed: {err!r}") from err


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install ".[examples]" && python -m funcnn demo' in text
    assert "<!-- test-command -->" in text
