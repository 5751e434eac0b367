"""`python -m funcnn demo`: the 2-D demo's promises."""

from __future__ import annotations

import subprocess
import sys

from funcnn.__main__ import demo


def test_demo_linear_far_below_tanh_network(tmp_path):
    result = demo(tmp_path, seed=0)
    acc = result["accuracies"]
    linear = acc["linear classifier"]
    tanh = next(v for k, v in acc.items() if "tanh" in k)
    assert tanh >= 0.95
    assert linear < 0.75 and tanh - linear > 0.2
    png = result["picture"]
    assert png.exists() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_command_line_quick(tmp_path, root):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "funcnn", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy" in proc.stdout
    assert (out / "decision_regions.png").stat().st_size > 0
