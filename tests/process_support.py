"""Running a command in its own process group, for the tests that start several processes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_group(
    command: list[str], timeout: float, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """Run ``command`` from the project root in its own process group, with ``env``;
    kill the whole group on timeout or error. Its output is stdout and stderr together."""
    p = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return subprocess.CompletedProcess(command, p.returncode, out)


def run_cached(command: list[str], timeout: float, cache: Path) -> subprocess.CompletedProcess:
    """:func:`run_group` with the project on ``PYTHONPATH``, no ``XLA_FLAGS`` (the command
    sets its devices), and the compiled programs shared between runs through JAX's
    compilation cache in ``cache``."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("XLA_FLAGS", None)
    env |= {
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    return run_group(command, timeout, env)
