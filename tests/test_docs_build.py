"""The documentation site builds with ``mkdocs build --strict`` and without a single warning.

``--strict`` turns mkdocs' own warnings (a broken link, a page missing from the nav, an image
that is not there) into a failure; the API reference's docstring warnings are caught by reading
the log as well.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None
    or importlib.util.find_spec("mkdocstrings_handlers.python") is None,
    reason="building the docs needs the docs extra: pip install '.[docs]'",
)


def test_mkdocs_build_strict_without_warnings(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # the theme's notice, not a warning
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert not warnings, "\n".join(warnings)
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ["funcnn.core.serial", "funcnn.train.fit", "funcnn.losses.mse", "funcnn.plot"]:
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    for page in ["guide/logistic-regression", "guide/classify2d", "comparison"]:
        assert (site / page / "index.html").exists(), page


def test_docs_pictures_exist_and_are_small():
    pictures = sorted((ROOT / "docs" / "img").rglob("*.png"))
    assert pictures, "docs/img holds the examples' pictures"
    for png in pictures:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
        assert len(data) < 150_000, f"{png} is {len(data)} bytes; keep docs pictures small"
