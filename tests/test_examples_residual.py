"""The residual-networks example: its claim checked at full depth, and the script run in
--quick mode, its printed tables and accuracies read back."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "residual_networks.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("sklearn")  # the bundled digits
    spec = importlib.util.spec_from_file_location("example_residual_networks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("residual_networks")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout, out


def test_quick_run_prints_both_tables_and_saves_both_pictures(quick_run):
    stdout, out = quick_run
    lines = stdout.splitlines()
    assert str(out) in lines[-1]
    rows = [
        line.split() for line in lines if re.match(r"(stem|stage_\d_block_\d/[ab]|output) ", line)
    ]
    assert [r[0] for r in rows[:2]] == ["stem", "stage_0_block_0/a"] and rows[-1][0] == "output"
    assert len(rows) == 14  # --quick: 2 blocks per stage, 6·2 + 2 layers
    norms = np.array([[float(v) for v in row[1:]] for row in rows])
    assert norms.shape == (14, 2) and np.all(np.isfinite(norms) & (norms > 0))
    for kind in ("plain, no BatchNorm", "residual + BatchNorm"):
        summary = next(line for line in lines if line.startswith(kind))
        ratio, scale = map(float, summary.split()[-2:])  # first / last, logits' RMS
        assert ratio > 0 and scale > 0, kind
    for png in ("grad_norms.png", "training_curves.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, png


def test_quick_run_trains_the_residual_network_and_not_the_plain_one(quick_run):
    stdout, _ = quick_run
    found = dict(re.findall(r"^(plain|residual).*val accuracy ([0-9.]+)$", stdout, re.M))
    assert set(found) == {"plain", "residual"}
    plain, residual = float(found["plain"]), float(found["residual"])
    assert residual > 0.8  # two epochs suffice with shortcuts and BatchNorm
    assert plain < residual - 0.3


def test_deep_plain_gradients_vanish_and_residual_ones_stay_level(example):
    (x, y), _ = example.digits_split()
    x, y = x[:256], y[:256]
    plain = example.layer_norms("plain", x, y, blocks=8)
    residual = example.layer_norms("residual", x, y, blocks=8)
    assert list(plain) == list(residual) and len(plain) == 50  # the same layers, 6·8 + 2
    # orders of magnitude less of the gradient reaches the plain network's first layer
    assert example.first_to_last(plain) < 3e-3
    assert example.first_to_last(plain) < 1e-2 * example.first_to_last(residual)
    # and it falls layer by layer through the 16 convolutions on 2×2 maps
    stage_2 = np.array(list(plain.values()))[-17:-1]
    assert stage_2[-1] / stage_2[0] > 30 and np.mean(np.diff(np.log(stage_2)) > 0) > 0.8
    # with shortcuts and BatchNorm every convolution gets a gradient of the same order
    convolutions = np.array(list(residual.values()))[:-1]
    assert convolutions.max() / convolutions.min() < 10


def test_deep_plain_network_starts_with_almost_no_signal_at_the_top(example):
    (x, _), _ = example.digits_split()
    assert example.logit_scale("plain", x[:256], blocks=8) < 1e-3
    assert example.logit_scale("residual", x[:256], blocks=8) > 0.1
