"""The benchmark harness is correct: every contender computes the same loss after a step.

Runs ``benchmarks/run.py --tiny`` (no timing): the contenders that are installed (funcnn
and hand-written JAX always; Flax, Equinox and PyTorch when present) must agree to 1e-4.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap


def test_every_contender_agrees_after_one_step(root):
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--tiny", "--workloads", "mlp,lenet,epoch"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if "loss after one step" in ln]
    contenders = {(ln.split()[0], ln.split()[1]) for ln in lines}
    for workload in ("mlp", "lenet", "epoch"):
        assert (workload, "funcnn") in contenders and (workload, "raw_jax") in contenders
    assert all(ln.rstrip().endswith("ok") for ln in lines), proc.stdout


def test_harness_notices_a_mismatch(root):
    """A check that cannot fail is no check: different weights must be caught."""
    code = textwrap.dedent(
        """
        import sys
        sys.path[:0] = ["benchmarks", "."]
        import contenders, run

        def broken(wl, x, y):  # the same network with one weight matrix scaled: must differ
            wl.params[0] = {**wl.params[0], "w": wl.params[0]["w"] * 1.5}
            return contenders.build_raw_jax(wl, x, y)

        run.BUILDERS["raw_jax_loop"] = broken
        sys.exit(run.check(["mlp"], ["raw_jax", "raw_jax_loop"]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root
    )
    assert proc.returncode != 0 and "MISMATCH" in proc.stdout, proc.stdout + proc.stderr


def test_bfloat16_contenders_agree_and_tf32_needs_a_gpu(root):
    """--dtype reaches every contender: in bfloat16 they agree to 2e-2 after one step."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--tiny", "--dtype", "bfloat16", "--device", "cpu",
         "--workloads", "mlp,lenet", "--contenders", "funcnn,raw_jax,stax,flax_nnx"],
        capture_output=True, text=True, timeout=600, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if "loss after one step" in ln]
    assert {ln.split()[1] for ln in lines} == {"funcnn", "raw_jax", "stax"}, proc.stdout
    assert all(ln.rstrip().endswith("ok") for ln in lines), proc.stdout
    flax = importlib.util.find_spec("flax") is not None
    note = "float32 only in this harness" if flax else "not installed"
    assert f"flax_nnx       {note}" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--tiny", "--dtype", "tf32", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert proc.returncode != 0 and "tf32 needs a GPU" in proc.stderr
