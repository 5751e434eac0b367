"""Every Python code block of README.md and docs/*.md runs, so the docs cannot rot.

Blocks of one file run in order in one namespace. A block preceded by the line
``<!-- skip-test: <reason> -->`` is skipped (for code that needs a GPU, many processes or
minutes), and the reason must say why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```", re.S)
SKIP = re.compile(r"<!-- skip-test(?P<reason>.*?)-->")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = "\n" + path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        skip = SKIP.fullmatch(m.group("before").strip())
        if skip:
            reason = skip.group("reason").strip().removeprefix(":").strip()
            line = text[: m.start("code")].count("\n")
            assert reason, f"{path.name}:{line}: say why it is skipped: <!-- skip-test: why -->"
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


def test_a_skipped_block_must_say_why(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- skip-test: needs a GPU -->\n```python\n1 / 0\n```\n")
    assert python_blocks(page) == []
    page.write_text("<!-- skip-test -->\n```python\n1 / 0\n```\n")
    with pytest.raises(AssertionError, match="say why"):
        python_blocks(page)
