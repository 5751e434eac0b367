"""The benchmark harness is correct: every contender computes the same loss after a step.

Runs ``benchmarks/run.py --tiny`` (no timing): the contenders that are installed (funcnn
and hand-written JAX always; Flax, Equinox and PyTorch when present) must agree to 1e-4 —
with BatchNorm (the ResNet workload), on the running statistics after the step too.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest


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


def test_resnet_contenders_agree_on_loss_and_running_statistics(root):
    """With BatchNorm, every installed contender's loss after one step and its running
    statistics after it (mean and variance, each library's convention checked against
    hand-written JAX computing that convention) agree to 1e-4; stax, with no running
    statistics, is left out without failing."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--tiny", "--workloads", "resnet"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    losses = {ln.split()[1] for ln in lines if "loss after one step" in ln}
    stats = {ln.split()[1] for ln in lines if "running statistics after one step" in ln}
    expected = {"funcnn", "raw_jax"} | {
        name
        for name, module in (("flax_linen", "flax"), ("equinox", "equinox"), ("torch", "torch"))
        if importlib.util.find_spec(module) is not None
    }
    assert expected <= losses and losses == stats, proc.stdout
    assert all(ln.rstrip().endswith("ok") for ln in lines if "after one step" in ln), proc.stdout
    conventions = {ln.split()[1]: ln for ln in lines if "running statistics" in ln}
    assert "(mean, unbiased)" in conventions["funcnn"], proc.stdout
    if "flax_linen" in conventions:
        assert "(mean, biased)" in conventions["flax_linen"], proc.stdout
    assert "resnet   stax           no BatchNorm with running statistics" in proc.stdout


def test_harness_notices_wrong_running_statistics(root):
    """BatchNorm's momentum in the other convention (0.9 for PyTorch's 0.1) leaves the loss
    after one step as it is, and the running statistics must catch it."""
    code = textwrap.dedent(
        """
        import sys
        sys.path[:0] = ["benchmarks", "."]
        import contenders, run

        def wrong(wl, x, y):
            return contenders._raw_runner(wl, x, y, momentum=0.9)

        run.BUILDERS["raw_jax_loop"] = wrong
        sys.exit(run.check(["resnet"], ["raw_jax", "raw_jax_loop"]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=root
    )
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    loss = [ln for ln in out.splitlines() if "raw_jax_loop" in ln and "loss after" in ln]
    stats = [ln for ln in out.splitlines() if "raw_jax_loop" in ln and "running statistics" in ln]
    assert loss[0].endswith("ok") and stats[0].endswith("MISMATCH"), out


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


def test_tiny_counts_a_contender_that_fails_and_names_unknown_ones(root):
    """--tiny fails when a contender cannot be built; raw JAX is the reference even if not
    listed; an unknown contender name is an error that names it."""
    code = textwrap.dedent(
        """
        import sys
        sys.path[:0] = ["benchmarks", "."]
        import contenders, run

        def broken(wl, x, y):
            raise RuntimeError("no such layer")

        run.BUILDERS["raw_jax_loop"] = broken
        print("BAD", run.check(["mlp"], ["raw_jax", "raw_jax_loop"]))
        print("ALONE", run.check(["mlp"], ["stax"]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "BAD 1" in out and "failed to build: RuntimeError: no such layer" in out, out
    assert "ALONE 0" in out and "mlp      stax" in out, out
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--tiny", "--contenders", "raw_jax,flx"],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown contenders ['flx']" in proc.stderr, proc.stderr


def test_fit_breakdown_refuses_gpu_without_one(root):
    """--device gpu must not quietly time the CPU."""
    import jax

    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present")
    proc = subprocess.run(
        [sys.executable, "benchmarks/fit_breakdown.py", "--device", "gpu", "--rounds", "1"],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert proc.returncode != 0 and "found no GPU" in proc.stderr, proc.stdout + proc.stderr


def test_gpu_check_names_an_accuracy_mismatch(root, capsys):
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(root / "benchmarks"))
    assert not gpu_check.check_accuracy("LeNet float32", 0.90, 0.80)  # |Δ| = 0.10 > 0.05
    assert gpu_check.check_accuracy("LeNet bfloat16", 0.90, 0.88)  # |Δ| = 0.02
    out = capsys.readouterr().out
    assert "LeNet float32: accuracy cpu 0.900, gpu 0.800" in out and "FAIL" in out, out


def test_gpu_suite_reports_failed_parts_and_keeps_going(root, tmp_path):
    """A stub interpreter fails part 1: every part still runs, the log lands in a relative
    OUT_DIR taken from the caller's directory, and the exit status and summary say so."""
    stub = tmp_path / "stub-python"
    stub.write_text('#!/usr/bin/env bash\necho "ran $*"\ncase "$*" in *--tiny*) exit 3;; esac\n')
    stub.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_suite.sh"), "results"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHON": str(stub)},
    )  # fmt: skip
    log = (tmp_path / "results" / "gpu-log.txt").read_text()
    assert proc.returncode != 0, proc.stdout + proc.stderr
    for part in ("1.", "2. float32", "2. tf32", "2. bfloat16", "3.", "4.", "5."):
        assert f"== {part}" in log, log
    assert "ran benchmarks/gpu_check.py --require-gpu" in log, log
    assert "FAILED: 1. harness check on the GPU (float32) (exit 3)" in log, log


def test_fit_overhead_quick_prints_the_table_and_agreeing_losses(root):
    """fit_overhead.py --quick on the spiral: fit and the hand-written loop run the same
    shuffles and steps (their losses agree), and the table of ms per epoch comes out."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/fit_overhead.py", "--quick", "--workloads", "spiral",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    agreement = [ln for ln in out.splitlines() if "loss agreement" in ln]
    assert len(agreement) == 6 and all(ln.endswith(": ok") for ln in agreement), out
    assert any("loss agreement, fit, validation yes" in ln for ln in agreement), out
    header = next(ln for ln in out.splitlines() if ln.startswith("workload"))
    assert "hand loop" in header and "fit" in header and "÷ loop" in header, out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("spiral ")]
    assert [r[1] for r in rows] == ["no", "yes"], out
    assert all(float(v) > 0 for r in rows for v in r[2:]), out


def test_torch_best_tiny_on_the_cpu_reports_failures_and_mismatches(root):
    """torch_best.py on tiny LeNet batches: the rows that apply agree with funcnn after one
    step, cuDNN is skipped on the CPU, a torch.compile that fails at its first call is a row
    saying so (not a crash), and a PyTorch model with other weights is a MISMATCH."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed")
    code = textwrap.dedent(
        """
        import sys
        sys.path[:0] = ["benchmarks", "."]
        import torch
        import contenders, torch_best

        def broken(model, **options):
            def run(*args):
                raise RuntimeError("no C++ compiler")
            return run

        torch.compile = broken
        args = ["--device", "cpu", "--tiny", "--workloads", "lenet"]
        rc = torch_best.main(args + ["--variants", "eager,compile,autocast_bf16,cudnn_benchmark"])
        print("RC", rc)
        model = contenders._torch_model

        def other_weights(wl):
            m = model(wl)
            with torch.no_grad():
                m[0].weight.mul_(1.5)
            return m

        contenders._torch_model = other_weights
        print("RC", torch_best.main(args + ["--variants", "eager"]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    first, second = out.split("RC 0")[0], out.split("RC 0")[1]
    rows = {ln.split()[1]: ln for ln in first.splitlines() if ln.startswith("  torch ")}
    assert "failed (RuntimeError: no C++ compiler)" in rows["compile"], out
    assert "skipped (CUDA only)" in rows["cudnn_benchmark"], out
    for name in ("eager", "autocast_bf16"):
        assert " ok  " in rows[name], out
    assert all(f"funcnn {p}" in first for p in ("f32", "bf16")), out
    assert "MISMATCH" in second and second.rstrip().endswith("RC 1"), out


def test_gpu_suite_runs_fit_overhead_and_torch_best_on_the_gpu(root, tmp_path):
    """Parts 6 and 7 call the two scripts on the GPU; PARTS runs only the parts it names."""
    stub = tmp_path / "stub-python"
    stub.write_text('#!/usr/bin/env bash\necho "ran $*"\n')
    stub.chmod(0o755)
    for parts, out in (("", "all"), ("6 7", "new")):
        proc = subprocess.run(
            ["bash", str(root / "benchmarks" / "gpu_suite.sh"), out],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, "PYTHON": str(stub), "PARTS": parts},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        log = (tmp_path / out / "gpu-log.txt").read_text()
        assert "ran benchmarks/fit_overhead.py --rounds 5 --device gpu" in log, log
        assert "ran benchmarks/torch_best.py --device cuda --quick" in log, log
        assert ("== 1." in log) == (not parts) and "all parts succeeded" in log, log


def test_streaming_quick_reports_memory_speed_and_identical_runs(root, tmp_path):
    """streaming.py --quick (a 40 MiB file, 2 rounds): the memory run's peak against the
    budget, the ratio streaming ÷ in memory, the two LeNet runs equal bit for bit, and no
    data left behind in the folder it wrote to."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/streaming.py", "--quick", "--device", "cpu",
         "--tmp-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    memory = [ln for ln in lines if ln.startswith("memory result: peak RSS ")]
    speed = [ln for ln in lines if ln.startswith("speed result: in memory ")]
    assert len(memory) == 1 and "(VmHWM) against a budget of 512 MiB" in memory[0], out
    assert memory[0].endswith("ok, under the budget"), out
    assert len(speed) == 1 and "streaming ÷ in memory" in speed[0], out
    assert "identical params and history, in memory and streaming: yes" in out, out
    assert "examples/s" in out and list(tmp_path.iterdir()) == [], out
