"""Side-by-side speed of funcnn against hand-written JAX, Flax, Equinox and PyTorch.

    python benchmarks/run.py            # full run (several minutes)
    python benchmarks/run.py --quick    # fewer rounds, no torch.compile (under 3 minutes)
    python benchmarks/run.py --tiny     # correctness of the harness only: same loss after a step
    python benchmarks/run.py --device gpu --dtype bfloat16 --workloads lenet,alexnet

On a GPU, ``--dtype float32`` is exact float32 arithmetic in every contender (JAX's matmul
precision "highest", PyTorch's TF32 switched off), ``tf32`` lets both use TF32 matrix units,
``bfloat16`` holds params, inputs and activations in bfloat16 (the loss on float32 logits).

All contenders of a workload get the same weights, batch, loss (softmax cross-entropy) and
optimizer (SGD, momentum 0.9, lr 0.01). Timing interleaves the contenders round by round and
reports the median time of one unit (a step, or an epoch for workload (c)), its ratio to funcnn
(> 1: slower than funcnn) and the first call's time (compile included). Competitors are optional:
those not installed are listed as missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the workloads, and this checkout's funcnn

import numpy as np  # noqa: E402
from contenders import BUILDERS, FLOAT32_ONLY, STATELESS_ONLY, available  # noqa: E402
from workloads import DTYPES, batch, make  # noqa: E402

ALL_WORKLOADS = ["mlp", "lenet", "epoch", "alexnet", "resnet"]


# loss after one step, relative: TF32 rounds operands to 10 mantissa bits, bfloat16 to 7
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "bfloat16": 2e-2}


def matmul_ceiling(n: int = 2048, reps: int = 10, dtype: str = "float32") -> float:
    """GFLOP/s of a jitted n×n matmul in ``dtype``: the machine's ceiling for dense work."""
    import jax
    import jax.numpy as jnp

    dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    a = jax.random.normal(jax.random.key(0), (n, n), dt)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def contenders_for(workload: str, selected: list[str]) -> list[str]:
    names = [c for c in selected if c in BUILDERS]
    if workload != "epoch":
        names = [c for c in names if c not in ("raw_jax_loop", "raw_jax_shuffled")]
    return names


def build_all(wl, names):
    x, y = batch(wl)
    runners, notes = {}, {}
    for name in names:
        if not available(name):
            notes[name] = "not installed"
            continue
        if wl.dtype == "bfloat16" and name in FLOAT32_ONLY:
            notes[name] = "float32 only in this harness"
            continue
        if wl.stateful and name in STATELESS_ONLY:
            notes[name] = "no BatchNorm with running statistics"
            continue
        try:
            runners[name] = BUILDERS[name](wl, x, y)
        except Exception as err:  # a contender that cannot run is reported, not fatal
            notes[name] = f"failed to build: {type(err).__name__}: {err}"[:160]
    return runners, notes


def stats_mismatch(stats: dict, ref: dict) -> tuple[float, list[str]]:
    """The largest ``|s − r| / max(1, |r|)`` over the running statistics both report (the
    mean, and the variance under the contender's convention), and their names."""
    keys = [k for k in stats if k in ref]
    if "mean" not in keys or len(keys) < 2:  # none reported, or a variance of no known convention
        return float("inf"), keys
    worst = max(
        float(np.max(np.abs(stats[k] - ref[k]) / np.maximum(1.0, np.abs(ref[k])))) for k in keys
    )
    return worst, keys


def check(workloads, names, dtype: str = "float32", device: str = "cpu") -> int:
    """Every contender's loss after one step equals raw JAX's (1e-4 relative; bf16: 2e-2),
    and with BatchNorm so do its running statistics after that step (mean, and the variance
    under the library's convention: PyTorch's unbiased or Flax's and Equinox's biased one).

    Returns the number of contenders that disagree, or that could not be built or run:
    only those not installed, float32-only in bfloat16, or without a stateful BatchNorm on
    a workload that has one, are left out without failing.
    """
    bad = 0
    names = ["raw_jax"] + [c for c in names if c != "raw_jax"]  # the reference, always
    for w in workloads:
        wl = make(w, tiny=True, dtype=dtype, device=device)
        runners, notes = build_all(wl, names)
        if "raw_jax" not in runners:
            raise SystemExit(f"{w}: the reference, raw_jax, {notes['raw_jax']}")
        ref = runners["raw_jax"].loss_after_one_step()
        for name, r in list(runners.items()):
            try:
                value = r.loss_after_one_step()
            except Exception as err:  # e.g. an op a library lacks in bfloat16 on this device
                if name in ("funcnn", "raw_jax"):
                    raise
                notes[name] = f"failed to run: {type(err).__name__}: {err}"[:160]
                continue
            ok = abs(value - ref) <= TOLERANCE[dtype] * max(1.0, abs(ref))
            bad += not ok
            print(
                f"{w:8s} {name:14s} loss after one step {value:.6f} "
                f"(raw JAX {ref:.6f}) {'ok' if ok else 'MISMATCH'}"
            )
            if wl.stateful:
                stats = r.stats_after_one_step() if r.stats_after_one_step else {}
                worst, keys = stats_mismatch(stats, runners["raw_jax"].stats_after_one_step())
                ok = worst <= TOLERANCE[dtype]
                bad += not ok
                print(
                    f"{w:8s} {name:14s} running statistics after one step ({', '.join(keys)}): "
                    f"largest relative difference {worst:.1e} {'ok' if ok else 'MISMATCH'}"
                )
        for name, note in notes.items():
            failed = note.startswith("failed")
            bad += failed
            print(f"{w:8s} {name:14s} {note}{' FAILED' if failed else ''}")
    return bad


def measure(wl, runners, rounds: int, min_time: float, notes: dict):
    compile_s = {}
    for name, r in list(runners.items()):
        t = time.perf_counter()
        try:
            r.unit()
        except Exception as err:  # reported like a contender that cannot be built
            if name == "funcnn":
                raise
            notes[name] = f"failed to run: {type(err).__name__}: {err}"[:160]
            del runners[name]
            continue
        compile_s[name] = time.perf_counter() - t
    per_unit = {n: [] for n in runners}
    # repetitions per round so one measurement lasts about min_time
    reps = {}
    for name, r in runners.items():
        t = time.perf_counter()
        r.unit()
        reps[name] = max(1, int(min_time / max(time.perf_counter() - t, 1e-6)))
    order = list(runners)
    for k in range(rounds):
        rotated = order[k % len(order) :] + order[: k % len(order)]
        for name in rotated:
            t = time.perf_counter()
            for _ in range(reps[name]):
                runners[name].unit()
            per_unit[name].append(
                (time.perf_counter() - t) / reps[name] / runners[name].units_per_call
            )
    return {n: statistics.median(v) for n, v in per_unit.items()}, compile_s


def setup_device(device: str, dtype: str) -> str:
    """Pick JAX's platform and matmul precision; return where PyTorch runs (cpu or cuda)."""
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    gpu = jax.default_backend() == "gpu"
    if device == "gpu" and not gpu:
        raise SystemExit(f"--device gpu: JAX found no GPU (backend {jax.default_backend()!r})")
    if dtype == "tf32" and not gpu:
        raise SystemExit("--dtype tf32 needs a GPU: a CPU computes float32 exactly")
    if not gpu:
        return "cpu"
    # exact float32 unless TF32 (or bfloat16) is asked for, in both JAX and PyTorch
    jax.config.update("jax_default_matmul_precision", "highest" if dtype == "float32" else None)
    if available("torch"):
        import torch

        if torch.cuda.is_available():
            tf32 = dtype == "tf32"
            if hasattr(torch.backends.cudnn, "conv"):  # PyTorch ≥ 2.9: convolutions default to TF32
                torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
                torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
            else:
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            return "cuda"
        print(
            "warning: JAX runs on the GPU but this PyTorch has no CUDA: PyTorch runs on the CPU",
            file=sys.stderr,
        )
    return "cpu"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, skip torch.compile")
    ap.add_argument("--tiny", action="store_true", help="only check that the losses agree")
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    ap.add_argument("--contenders", default=",".join(BUILDERS))
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--dtype", choices=DTYPES, default="float32")
    ap.add_argument(
        "--device", choices=("auto", "cpu", "gpu"), default="auto", help="auto: a GPU if found"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    names = [c for c in args.contenders.split(",") if c]
    unknown = [w for w in workloads if w not in ALL_WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose from {ALL_WORKLOADS}")
    unknown = [c for c in names if c not in BUILDERS]
    if unknown:
        ap.error(f"unknown contenders {unknown}; choose from {list(BUILDERS)}")
    device = setup_device(args.device, args.dtype)
    if args.tiny:
        names = [c for c in names if c != "torch_compile"]
        return 1 if check(workloads, names, args.dtype, device) else 0
    if args.quick:
        names = [c for c in names if c != "torch_compile"]
    rounds = args.rounds or (5 if args.quick else 15)
    min_time = 0.2 if args.quick else 0.5

    import jax

    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
        f"PyTorch on {device}; {args.dtype}; {rounds} interleaved rounds, medians"
    )
    n = 8192 if jax.default_backend() == "gpu" else 2048  # JAX's device, not PyTorch's
    ceiling = matmul_ceiling(n, dtype=args.dtype)
    print(f"(e) jitted {n}×{n} {args.dtype} matmul: {ceiling:.1f} GFLOP/s\n")
    results = {
        "ceiling_gflops": ceiling,
        "device": jax.devices()[0].device_kind,
        "dtype": args.dtype,
        "workloads": {},
    }
    for w in workloads:
        wl = make(w, quick=args.quick, dtype=args.dtype, device=device)
        runners, notes = build_all(wl, contenders_for(w, names))
        times, compile_s = measure(wl, runners, rounds, min_time, notes)
        base = times.get("funcnn")
        print(wl.title)
        print(
            f"  {'contender':14s} {'median ms':>10s} {'÷ funcnn':>9s} {'compile s':>10s} "
            f"{'% ceiling':>10s}"
        )
        rows = {}
        for name in sorted(times, key=times.get):
            t = times[name]
            ratio = t / base if base else float("nan")
            frac = wl.flops_per_step * wl.steps / t / 1e9 / ceiling * 100
            print(f"  {name:14s} {t * 1e3:10.2f} {ratio:9.2f} {compile_s[name]:10.2f} {frac:9.0f}%")
            rows[name] = {
                "ms": t * 1e3,
                "ratio_to_funcnn": ratio,
                "compile_s": compile_s[name],
                "percent_of_ceiling": frac,
            }
        for name, note in notes.items():
            print(f"  {name:14s} {note}")
        print()
        results["workloads"][w] = {"title": wl.title, "rows": rows, "notes": notes}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
