"""The gradient examples: their claims checked, and each script run in --quick mode."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["vanishing_gradients", "initialization", "backprop_graph"]


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Run the three examples side by side, each in its own interpreter."""
    pytest.importorskip("matplotlib")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    runs = {}
    for name in EXAMPLES:
        out = tmp_path_factory.mktemp(name)
        cmd = [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(out)]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        runs[name] = (proc, out)
    results = {}
    for name, (proc, out) in runs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[name] = (proc.returncode, stdout, stderr, out)
    return results


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_quick_and_writes_pngs(quick_runs, name):
    code, stdout, stderr, out = quick_runs[name]
    assert code == 0, stderr[-2000:]
    assert str(out) in stdout.splitlines()[-1]
    pngs = sorted(out.glob("*.png"))
    assert pngs, f"{name} wrote no PNG in {out}"
    for png in pngs:
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_backprop_graph_prints_the_classic_numbers(quick_runs):
    _, stdout, _, _ = quick_runs["backprop_graph"]
    classic = stdout.split("logistic regression")[0]
    rows = {line.split()[0]: line.split() for line in classic.splitlines() if line.strip()}
    assert rows["w0"][-2:] == ["2.0000", "-0.1966"]
    assert rows["x1"][-1] == "-0.5898"
    assert rows["div_0"][-2:] == ["0.7311", "1.0000"]


# -------------------------------------------------------------------- vanishing gradients


@pytest.fixture(scope="module")
def vanishing():
    return _load("vanishing_gradients")


def test_deep_sigmoid_gradients_vanish_and_residuals_keep_them(vanishing):
    x, y = vanishing.toy_data(128)
    sigmoid = vanishing.layer_norms("sigmoid", x, y)
    residual = vanishing.layer_norms("residual", x, y)
    assert len(sigmoid) == 20 and len(residual) == 20
    assert vanishing.first_to_last(sigmoid) < 1e-3
    assert vanishing.first_to_last(residual) > 1e-1
    # the norms shrink steadily towards the input in the sigmoid net
    norms = np.array(list(sigmoid.values()))
    assert np.all(norms[:10] < norms[10:19].min())


# ------------------------------------------------------------------------ initialization


@pytest.fixture(scope="module")
def init_example():
    return _load("initialization")


def test_equal_initial_weights_never_break_symmetry(init_example):
    inits = init_example.SYMMETRY_INITS
    trained = {name: init_example.train_symmetric(inits[name], epochs=3) for name in inits}
    for name in ("zeros", "constant 0.5"):
        assert init_example.unit_spread(trained[name]) < 1e-6, name
    assert init_example.unit_spread(trained["Xavier (random)"]) > 1e-2
    trained = trained["constant 0.5"]
    start = jax.tree_util.tree_map(lambda p: np.full(p.shape, 0.5), trained)
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(*map(jax.tree_util.tree_leaves, (trained, start)))
    )
    assert moved > 1e-3  # it did train: the units moved, all together


def test_activation_scale_per_initialization(init_example):
    stats = {
        name: init_example.activation_stats(init, width=64, n=256)
        for name, init in init_example.SCALE_INITS.items()
    }
    _, var_small, _ = stats["N(0, 0.01²)"]
    _, var_big, sat_big = stats["N(0, 1)"]
    assert var_small[-1] < 1e-12  # collapses towards 0
    assert sat_big[-1] > 0.5  # most tanh units saturated at ±1
    for name in ("N(0, 1/fan_in)", "Xavier"):
        _, var, sat = stats[name]
        assert var[-1] / var[0] > 0.05 and sat[-1] < 0.05, name
