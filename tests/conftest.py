"""Shared fixtures: float64 on demand, keys, and the repository root."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def x64():
    """Run a test with 64-bit floats enabled, restoring the default afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def root() -> Path:
    return ROOT
