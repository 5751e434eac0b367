"""The package builds: an sdist and a wheel that ``twine check`` accepts, with the typing
marker and the playground's files inside, and one version everywhere."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import funcnn

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once():
    """pyproject.toml reads the version from funcnn.__version__ (setuptools' ``attr:``)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "funcnn.__version__"}
    try:
        installed = importlib.metadata.version("funcnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("funcnn is not installed, so it has no metadata to compare")
    assert installed == funcnn.__version__


def _no_isolation() -> list[str]:
    """Build with the setuptools at hand when it is recent enough (no download, faster)."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return []
    return ["--no-isolation"] if major >= 77 else []


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    for tool in ("build", "twine"):
        if importlib.util.find_spec(tool) is None:
            pytest.skip(f"needs {tool}: pip install '.[test]'")
    out = tmp_path_factory.mktemp("dist")
    # without --sdist/--wheel: the sdist first, then the wheel built from it
    command = [sys.executable, "-m", "build", *_no_isolation(), "--outdir", str(out), str(ROOT)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_twine_accepts_the_sdist_and_the_wheel(dist):
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_the_wheel_holds_the_package_and_its_version(dist):
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"funcnn-{funcnn.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"funcnn-{funcnn.__version__}.dist-info/METADATA").decode()
    for name in [
        "funcnn/py.typed",
        "funcnn/__init__.py",
        "funcnn/interop/__init__.py",
        "funcnn/playground/static/index.html",
        "funcnn/playground/static/app.js",
    ]:
        assert name in names, name
    assert f"\nVersion: {funcnn.__version__}\n" in metadata
    assert "Provides-Extra: torch" in metadata and "Provides-Extra: safetensors" in metadata
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        top = f"funcnn-{funcnn.__version__}"
        members = set(tf.getnames())
    assert {f"{top}/pyproject.toml", f"{top}/README.md", f"{top}/funcnn/py.typed"} <= members
