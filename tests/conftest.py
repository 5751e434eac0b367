"""Shared fixtures: float64 on demand, keys, and the repository root."""

from __future__ import annotations

import threading
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


@pytest.fixture(scope="module")
def server():
    """The playground's HTTP server on a free loopback port, for the module's tests."""
    from funcnn.playground.server import make_server

    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
