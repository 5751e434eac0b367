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
