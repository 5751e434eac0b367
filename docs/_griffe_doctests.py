"""Render the docstrings' doctests and simple tables as code in the API reference.

funcnn's docstrings keep their examples as bare ``>>>`` doctests and their tables in
reStructuredText's simple form; Markdown would read ``>>>`` as nested quotes and the
``===`` rules as headings. This griffe extension wraps both in fenced blocks before the
docstrings are parsed. It is used only by ``mkdocs build`` (see ``mkdocs.yml``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")


def fence_docstring(text: str) -> str:
    """Wrap every run of doctest lines (``>>>`` and the output after it) and every simple
    reStructuredText table (three ``=== ===`` rules) in a fenced code block."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        indent = line[: len(line) - len(line.lstrip())]
        if line.lstrip().startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            continue
        if _RULE.match(line):
            rules = [j for j in range(i, len(lines)) if _RULE.match(lines[j])][:3]
            if len(rules) == 3:
                out += [f"{indent}```text", *lines[i : rules[2] + 1], f"{indent}```"]
                i = rules[2] + 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence doctests and simple tables in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_docstring(obj.docstring.value)
