"""The core examples run end to end in ``--quick`` mode and keep the promises they print.

Each runs in a subprocess as a user would run it (``python examples/NAME.py``), with the
repository root first on ``PYTHONPATH`` so that a checkout works without installing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, out: Path, *extra: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, f"examples/{name}.py", "--quick", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert str(out) in proc.stdout, "the example must print where its pictures are"
    return proc.stdout


def assert_pngs(out: Path, names: list[str]) -> None:
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, f"{name} is not a PNG"
        assert len(data) > 5_000, f"{name} is suspiciously small ({len(data)} bytes)"


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no line matching {pattern!r} in:\n{text}"
    return float(match.group(1))


def test_logistic_regression(tmp_path):
    out = tmp_path / "lr"
    stdout = run_example("logistic_regression", out)
    assert_pngs(out, ["boundary.png", "loss.png"])
    # jax.grad agrees with the hand-derived (1/n) Xᵀ(σ(Xw + b) − y)
    assert number(r"max \|jax\.grad .*\| = (\S+)", stdout) < 1e-6
    # gradient descent separated the two blobs (they overlap only a little)
    assert number(r"accuracy (\d\.\d+)", stdout) > 0.9


def test_classify2d_hidden_layer_beats_the_line(tmp_path):
    out = tmp_path / "c2"
    stdout = run_example("classify2d", out, "--data", "spirals")
    assert_pngs(out, ["decision_regions.png"])
    linear = number(r"linear classifier: validation accuracy (\S+)", stdout)
    tanh = number(r"tanh\): validation accuracy (\S+)", stdout)
    assert linear < 0.7  # a line cannot separate two spirals
    assert tanh > linear + 0.2


def test_optimizers_all_lower_the_loss(tmp_path):
    out = tmp_path / "opt"
    stdout = run_example("optimizers", out)
    assert_pngs(out, ["optimizers.png"])
    runs = re.findall(r"^\s+(.+?): (\S+) -> (\S+) in (\S+) s$", stdout, re.M)
    names = [name for name, *_ in runs]
    assert len(runs) == 6, stdout
    for word in ["gradient descent", "SGD (m = 1)", "minibatch", "Momentum", "RMSProp", "Adam"]:
        assert any(word in n for n in names), f"{word} missing from {names}"
    starts = {float(start) for _, start, _, _ in runs}
    assert len(starts) == 1, "every optimizer must start from the same params"
    for name, start, end, _ in runs:
        assert float(end) < 0.8 * float(start), f"{name} did not learn: {start} -> {end}"


def test_overfitting_large_network_overfits_and_dropout_helps(tmp_path):
    out = tmp_path / "of"
    stdout = run_example("overfitting", out)
    assert_pngs(out, ["curves.png", "regions.png"])

    def losses(prefix: str) -> tuple[float, float, float]:
        m = re.search(
            rf"^{re.escape(prefix)}: final train loss (\S+), final validation loss (\S+), "
            r"best validation loss (\S+)",
            stdout,
            re.M,
        )
        assert m, f"no line for {prefix!r} in:\n{stdout}"
        return tuple(float(v.rstrip(",")) for v in m.groups())

    small = losses("small: 3 tanh")
    large = losses("large: 256-256 ReLU")
    dropped = losses("large with dropout 0.5")
    assert large[0] < 0.1 * small[0], "the expressive network fits the training points"
    assert large[1] > 1.5 * large[2], "its validation loss turns up: overfitting"
    assert dropped[1] < large[1], "dropout slows the overfitting down"
    stop = re.search(r"stopped after epoch (\d+), kept epoch (\d+)", stdout)
    assert stop and int(stop.group(1)) - int(stop.group(2)) == 30  # the quick patience


@pytest.mark.parametrize("name", ["logistic_regression", "classify2d", "optimizers", "overfitting"])
def test_examples_explain_themselves(name):
    source = (ROOT / "examples" / f"{name}.py").read_text(encoding="utf-8")
    assert source.startswith('"""'), "a module docstring explaining the topic comes first"
    assert "def main(argv" in source and "--quick" in source and "--out" in source
