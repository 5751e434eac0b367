"""The house rules of the package, checked on its source: short functions, small modules,
no module reaching into another's private names, one module of argument checks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "funcnn"
MAX_FUNCTION_LINES = 60  # code lines, the docstring aside
MAX_MODULE_LINES = 500
ONE_PIECE = "one piece:"  # a comment in a longer function that says why it is one piece


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):
            body = body[1:]
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def _where(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent)) if path.is_relative_to(PACKAGE) else path.name


def _long_functions(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = _code_lines(node)
            text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            if n > MAX_FUNCTION_LINES and ONE_PIECE not in text:
                found.append(f"{_where(path)}:{node.lineno} {node.name} ({n})")
    return found


def test_the_length_count_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    long = tmp_path / "long.py"
    long.write_text(f'def f():\n    """Doc."""\n{body}\n')
    (found,) = _long_functions(long)
    assert found.endswith(f"f ({MAX_FUNCTION_LINES + 1})")
    short = tmp_path / "short.py"
    short.write_text(f'def g():\n    """Doc\n\n    more."""\n{body[: body.rindex(chr(10))]}\n')
    assert _long_functions(short) == []


def test_no_function_is_longer_than_a_screen():
    found = [f for p in _modules() for f in _long_functions(p)]
    assert found == [], f"functions over {MAX_FUNCTION_LINES} lines of code: {found}"


def test_no_module_needs_a_scroll_bar_of_its_own():
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines: {big}"


def _funcnn_aliases(tree: ast.Module, path: Path) -> dict[str, str]:
    """Local names bound to funcnn modules: ``from . import functional as F`` gives
    ``{"F": "functional"}``."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("funcnn")
        ):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("funcnn"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name
    return aliases


def _private_reaches(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    where = str(path.relative_to(PACKAGE.parent))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("funcnn")
        ):
            package_module = node.level and node.module is None  # from . import _cpu
            for a in node.names:
                private = a.name.startswith("_") and not a.name.startswith("__")
                if private and not package_module:
                    found.append(f"{where}:{node.lineno} imports {a.name}")
    aliases = _funcnn_aliases(tree, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if private and node.value.id in aliases:
                found.append(f"{where}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_the_private_name_check_sees_a_reach(tmp_path):
    bad = PACKAGE / "_probe_for_house_test.py"
    try:
        bad.write_text("from . import functional as F\nfrom .core import _child_key\nF._pair\n")
        found = _private_reaches(bad)
    finally:
        bad.unlink()
    assert len(found) == 2, found


def test_no_module_reaches_into_another_modules_private_names():
    found = [f for p in _modules() for f in _private_reaches(p)]
    assert found == [], found


@pytest.mark.parametrize(
    "pattern",
    [
        "must be a positive int, got",  # the count check, now checks.positive_int
        "must be an int >= 1 or a pair of them",  # checks.int_tuple
        "path must be a str or os.PathLike",  # checks.path
    ],
)
def test_each_argument_rule_is_written_once(pattern):
    """A check's message lives in funcnn/checks.py; other modules call the check."""
    holders = [str(p.relative_to(PACKAGE.parent)) for p in _modules() if pattern in p.read_text()]
    assert holders == ["funcnn/checks.py"], holders
