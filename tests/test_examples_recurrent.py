"""The recurrent example: its task generator, its claim about the gradient that reaches each
step, and the script run in --quick mode."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from funcnn import data

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_delayed_recall_marks_and_labels_the_first_symbol():
    x, y = data.delayed_recall(200, 30, symbols=5, key=3)
    assert x.shape == (200, 30, 6) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 0, :5].argmax(1), y)
    np.testing.assert_array_equal(x[..., :5].sum(-1), 1.0)  # one symbol per step
    np.testing.assert_array_equal(x[..., 5], np.broadcast_to(np.arange(30) == 0, (200, 30)))
    assert np.bincount(y).tolist() == [40] * 5
    later = x[:, 1:, :5].argmax(-1)
    assert 0.15 < np.mean(later == y[:, None]) < 0.25  # the rest is noise, 1/5 by chance
    again, _ = data.delayed_recall(200, 30, symbols=5, key=3)
    np.testing.assert_array_equal(again, x)
    with pytest.raises(ValueError, match="delayed_recall: length"):
        data.delayed_recall(10, 0)
    with pytest.raises(ValueError, match="delayed_recall: symbols"):
        data.delayed_recall(10, 5, symbols=1)


def test_the_gradient_vanishes_through_the_rnn_not_the_lstm():
    example = _load("rnn_vs_lstm")
    norms = example.init_gradients((10, 60), seed=0)
    rnn, lstm = norms["rnn", 60], norms["lstm", 60]
    assert rnn.shape == lstm.shape == (60,)
    assert rnn[0] / rnn[-1] < 1e-4 and lstm[0] / lstm[-1] > 0.1
    assert norms["rnn", 10][0] / norms["rnn", 10][-1] > 1e-3  # short enough to learn from
    # the plain RNN's norm falls by a steady factor per step: a straight line in log scale
    t, log_norm = np.arange(60), np.log(rnn)
    assert np.polyfit(t, log_norm, 1)[0] > 0.1 and np.corrcoef(t, log_norm)[0, 1] > 0.99


def test_example_runs_quick_and_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "rnn_vs_lstm.py"),
        "--quick",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert str(tmp_path) in lines[-1]
    assert any(line.startswith("SimpleRNN (tanh)") for line in lines)
    assert any("validation accuracy" in line for line in lines)
    for name in ("grad_per_step.png", "accuracy.png"):
        png = tmp_path / name
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
