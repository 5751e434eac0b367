"""Every public function carries a runnable example, and every example runs.

The docs require of each public function and layer a docstring with its formula, its
arguments with shapes and a short ``>>>`` example; of each public class, a docstring that
describes its fields. The first tests check that the examples are there; the last one runs
them, module by module, with :mod:`doctest`.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import tempfile

import pytest

import funcnn

# Type aliases have no docstring of their own: the module docstring describes them.
ALIASES = {"funcnn.core.Shape", "funcnn.core.Params", "funcnn.initializers.Initializer"}

# Command-line entry points and a blocking server: an example would parse a real command
# line, start processes, serve until interrupted or train for minutes. Their modules'
# doctests still run below; these functions are the only ones allowed no ``>>>`` example.
ENTRY_POINTS = {
    "funcnn.__main__.main",
    "funcnn.demos.demo",
    "funcnn.demos.cnn_demo",
    "funcnn.demos.classify2d",
    "funcnn.distributed.launch.launch",
    "funcnn.distributed.launch.main",
    "funcnn.playground.serve",
    "funcnn.playground.server.serve",
}

MODULE_NAMES = sorted(
    {"funcnn"} | {m.name for m in pkgutil.walk_packages(funcnn.__path__, prefix="funcnn.")}
)
MODULES = [importlib.import_module(name) for name in MODULE_NAMES]


def public_objects():
    """``(qualified name, object)`` for every name in every funcnn module's ``__all__``."""
    for module in MODULES:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or f"{module.__name__}.{name}" in ALIASES:
                continue
            yield f"{module.__name__}.{name}", obj


def own_class_doc(cls: type) -> str:
    """The class's own docstring; not one inherited, nor the signature that
    ``dataclass`` and ``NamedTuple`` write when there is none."""
    doc = (vars(cls).get("__doc__") or "").strip()
    return "" if re.fullmatch(rf"{re.escape(cls.__name__)}\(.*\)", doc, re.S) else doc


def test_the_modules_are_all_found():
    assert {"funcnn.playground.server", "funcnn.__main__", "funcnn.distributed.launch"} <= set(
        MODULE_NAMES
    )
    assert len(MODULE_NAMES) >= 20, MODULE_NAMES


def test_every_public_function_has_an_example():
    missing = [
        name
        for name, obj in public_objects()
        if callable(obj)
        and not inspect.isclass(obj)
        and name not in ENTRY_POINTS
        and ">>>" not in (obj.__doc__ or "")
    ]
    assert not missing, f"public functions without a >>> example: {missing}"


def test_every_public_class_has_a_docstring():
    classes = [(name, obj) for name, obj in public_objects() if inspect.isclass(obj)]
    assert len(classes) >= 10
    missing = [name for name, cls in classes if not own_class_doc(cls)]
    assert not missing, f"public classes without a docstring: {missing}"


def test_the_checks_catch_a_missing_example():
    def undocumented(x):
        """Twice ``x``, without an example."""

    class Record:
        pass

    assert ">>>" not in undocumented.__doc__
    assert own_class_doc(Record) == ""
    assert own_class_doc(funcnn.FitResult)
    from collections import namedtuple

    assert own_class_doc(namedtuple("Bare", "a b")) == ""


@pytest.mark.parametrize("module", MODULES, ids=MODULE_NAMES)
def test_doctests(module, tmp_path, monkeypatch):
    """Run the module's doctests; a failure shows doctest's own report."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp() lands in tmp_path
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    tests = [t for t in tests if t.examples]
    if not tests:
        pytest.skip(f"{module.__name__} has no doctests")
    report: list[str] = []
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.append)
        test.globs.clear()
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted > 0
