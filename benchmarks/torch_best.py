"""PyTorch at its best, not its defaults, against funcnn's ``train_step``: LeNet-5 and AlexNet.

    python benchmarks/torch_best.py --device cuda [--rounds 7] [--workloads lenet,alexnet]
    python benchmarks/torch_best.py --device cpu --quick    # 3 rounds
    python benchmarks/torch_best.py --device cpu --tiny     # tiny batches, 1 round: the harness

The training steps of ``workloads.py`` (LeNet-5 at batch 128 on 28×28×1, AlexNet at batch 8
on 227×227×3), the same weights, batch, softmax cross-entropy and SGD (momentum 0.9, lr 0.01)
as ``run.py``, with PyTorch's model from ``contenders.py``, in these variants:

* ``eager``: the model as it comes (float32, the default ``foreach`` SGD);
* ``compile``: ``torch.compile(model)`` (forward and backward compiled by Inductor);
* ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark = True`` (CUDA only);
* ``channels_last``: model and batch in ``torch.channels_last`` memory format;
* ``autocast_bf16``: the forward pass under ``torch.autocast(dtype=torch.bfloat16)``, the loss
  on float32 logits, float32 master weights;
* ``fused_sgd``: ``torch.optim.SGD(..., fused=True)``;
* ``best_f32``: all of the float32 ones together (compile, cudnn.benchmark, channels_last,
  fused SGD);
* ``best_bf16``: ``best_f32`` under autocast bfloat16;
* ``best_bf16_cudagraphs`` (CUDA only): ``best_bf16`` compiled with ``mode="reduce-overhead"``,
  CUDA graphs.

and funcnn's ``train_step(..., donate=True)`` in float32 and with ``precision="bfloat16"`` (the
same policy as autocast: float32 params and optimizer state, the model in bfloat16, the loss
in float32). float32 is exact float32 on both sides on a GPU (TF32 off, JAX's matmul precision
"highest"), unless ``--tf32`` lets both use TF32.

Each row's loss on the batch before and after one step is checked against funcnn's in the
same precision: float32 rows against funcnn float32 (1e-4 relative; TF32 5e-3), autocast rows
against funcnn bfloat16 (5e-2: the bfloat16 policies round in different places, and AlexNet's
one step, which takes its loss from 8.96 to 2.53, moves the results 2% apart). A row that computes
something else says MISMATCH and makes the exit status 1. A variant that does not apply here
is listed as skipped; one that fails to build, compile or run (``torch.compile`` needs a C++
compiler on the CPU) is listed with its error and the others go on. Timing interleaves the
rows round by round, their order rotated, each measurement at least ``--min-time`` long; it
prints medians, the ratios to funcnn float32 and bfloat16 (> 1: slower than funcnn) and the
first call's time (compilation included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the workloads, and this checkout's funcnn

WORKLOADS = ("lenet", "alexnet")
# variant -> PyTorch settings
VARIANTS: dict[str, dict[str, Any]] = {
    "eager": {},
    "compile": {"compile": "default"},
    "cudnn_benchmark": {"cudnn_benchmark": True},
    "channels_last": {"channels_last": True},
    "autocast_bf16": {"autocast": True},
    "fused_sgd": {"fused": True},
    "best_f32": {"compile": "default", "cudnn_benchmark": True, "channels_last": True,
                 "fused": True},
    "best_bf16": {"compile": "default", "cudnn_benchmark": True, "channels_last": True,
                  "fused": True, "autocast": True},
    "best_bf16_cudagraphs": {"compile": "reduce-overhead", "cudnn_benchmark": True,
                             "channels_last": True, "fused": True, "autocast": True},
}  # fmt: skip
CUDA_ONLY = ("cudnn_benchmark", "best_bf16_cudagraphs")
# relative, on the losses before and after one step. AlexNet's step is large (its loss goes
# from 8.96 to 2.53 on the batch) and its bfloat16 result depends on where each policy rounds:
# funcnn's 2.429, autocast's 2.426, autocast compiled by Inductor 2.376
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "bfloat16": 5e-2}


@dataclass
class Row:
    """One contender: ``step()`` takes a training step and returns its loss (not read);
    ``wait()`` blocks until the steps taken so far are done."""

    name: str
    settings: str
    bf16: bool
    step: Callable[[], Any]
    wait: Callable[[Any], None]


def funcnn_row(wl, x, y, precision: str | None) -> Row:
    import jax
    import jax.numpy as jnp
    import optax
    from contenders import _funcnn_params, funcnn_model
    from workloads import LR, MOMENTUM

    import funcnn as fn

    model = funcnn_model(wl.ops)
    params = _funcnn_params(model, wl)
    opt = optax.sgd(LR, momentum=MOMENTUM)
    step = fn.train_step(
        model.apply, fn.losses.softmax_cross_entropy, opt, donate=True, precision=precision
    )
    carry = {"p": params, "o": opt.init(params)}
    batch = jnp.asarray(x), jnp.asarray(y)  # on the device once

    def one():
        carry["p"], carry["o"], logs = step(carry["p"], carry["o"], batch)
        return logs["loss"]

    name = "funcnn bf16" if precision else "funcnn f32"
    settings = f"train_step(donate=True{', precision=' + repr(precision) if precision else ''})"
    return Row(name, settings, bool(precision), one, jax.block_until_ready)


def torch_row(wl, x, y, name: str, options: dict, device: str) -> Row:
    """PyTorch's step with ``options``; the settings it could not use are named in the row."""
    import torch
    from contenders import _torch_model
    from workloads import LR, MOMENTUM

    torch.manual_seed(0)
    cuda = device == "cuda"
    model = _torch_model(wl).to(device)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)
    yt = torch.from_numpy(y).long().to(device)
    used = []
    if options.get("compile"):
        mode = options["compile"]
        used.append("torch.compile" + (f"(mode={mode!r})" if mode != "default" else ""))
    benchmark = bool(options.get("cudnn_benchmark")) and cuda
    if benchmark:
        used.append("cudnn.benchmark")
    if options.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
        used.append("channels_last")
    sgd = {"lr": LR, "momentum": MOMENTUM}
    if options.get("fused"):
        try:
            opt = torch.optim.SGD(model.parameters(), fused=True, **sgd)
            used.append("fused SGD")
        except (RuntimeError, ValueError) as err:  # no fused kernel on this device
            opt = torch.optim.SGD(model.parameters(), **sgd)
            used.append(f"foreach SGD (fused: {type(err).__name__})")
    else:
        opt = torch.optim.SGD(model.parameters(), **sgd)
    autocast = bool(options.get("autocast"))
    if autocast:
        used.append("autocast bf16")
    graphs = options.get("compile") == "reduce-overhead"
    fwd = torch.compile(model, mode=options["compile"]) if options.get("compile") else model
    loss_fn = torch.nn.CrossEntropyLoss()
    device_type = "cuda" if cuda else "cpu"

    def one():
        if cuda:
            torch.backends.cudnn.benchmark = benchmark  # a global switch: set for each row
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            out = fwd(xt)
        loss = loss_fn(out.float(), yt)  # the loss on float32 logits, as funcnn's policy
        loss.backward()
        opt.step()
        return loss.detach()

    def wait(_):
        if cuda:
            torch.cuda.synchronize()

    return Row(f"torch {name}", ", ".join(used) or "defaults", autocast, one, wait)


def _value(loss) -> float:
    return float(loss.float().item()) if hasattr(loss, "detach") else float(loss)


def measure(rows: list[Row], rounds: int, min_time: float, notes: dict):
    """First call's seconds, the losses before and after one step, and the median seconds
    of a step.

    A row that fails on its first calls (a compiler error, an op missing in bfloat16) moves
    to ``notes`` with its error."""
    first, losses = {}, {}
    for r in list(rows):
        try:
            t = time.perf_counter()
            before = r.step()
            r.wait(before)
            first[r.name] = time.perf_counter() - t
            # the loss on the batch before the first step, and after it
            losses[r.name] = (_value(before), _value(r.step()))
        except Exception as err:  # reported as a row, the others go on
            if r.name == "funcnn f32":
                raise
            notes[r.name] = (r.settings, f"failed ({type(err).__name__}: {err})"[:200])
            rows.remove(r)
    reps = {}
    for r in rows:  # steps per measurement so that one lasts about min_time
        t = time.perf_counter()
        r.wait(r.step())
        reps[r.name] = max(1, int(min_time / max(time.perf_counter() - t, 1e-6)))
    per_step = {r.name: [] for r in rows}
    for k in range(rounds):
        for r in rows[k % len(rows) :] + rows[: k % len(rows)]:
            t = time.perf_counter()
            for _ in range(reps[r.name]):
                loss = r.step()
            r.wait(loss)
            per_step[r.name].append((time.perf_counter() - t) / reps[r.name])
    return {n: statistics.median(v) for n, v in per_step.items()}, first, losses


def configure_torch_compiler() -> None:
    """Room in Dynamo's cache for every compiled row: they share ``Sequential.forward``, and
    past the limit Dynamo would quietly run the model eagerly."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):  # fmt: skip
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--device",
        choices=("cuda", "cpu", "auto"),
        default="auto",
        help="where PyTorch and JAX run; auto: CUDA if JAX and PyTorch both see it",
    )
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"PyTorch variants, of {', '.join(VARIANTS)}"
    )
    ap.add_argument("--rounds", type=int, default=None, help="default 7 (--quick 3, --tiny 1)")
    ap.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds a measurement lasts at least (default 0.5, --quick 0.2)",
    )
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="the workloads' tiny batches (8 and 2), 1 round: the harness only",
    )
    ap.add_argument("--tf32", action="store_true", help="let float32 use TF32 on a GPU")
    args = ap.parse_args(argv)  # fmt: skip
    workloads = [w for w in args.workloads.split(",") if w]
    variants = [v for v in args.variants.split(",") if v]
    for kind, given, known in (
        ("workloads", workloads, WORKLOADS),
        ("variants", variants, VARIANTS),
    ):
        unknown = [g for g in given if g not in known]
        if unknown:
            ap.error(f"unknown {kind} {unknown}; choose from {list(known)}")
    rounds = args.rounds or (1 if args.tiny else 3 if args.quick else 7)
    min_time = (
        args.min_time if args.min_time is not None else 0.0 if args.tiny else 0.2 if args.quick
        else 0.5
    )  # fmt: skip
    dtype = "tf32" if args.tf32 else "float32"
    try:
        import torch
    except ImportError:
        raise SystemExit("torch_best.py needs PyTorch: pip install torch") from None
    from run import setup_device
    from workloads import batch, make

    jax_device = {"cuda": "gpu", "cpu": "cpu", "auto": "auto"}[args.device]
    device = setup_device(jax_device, dtype)
    if args.device == "cuda" and device != "cuda":
        raise SystemExit("--device cuda: this PyTorch has no CUDA")
    configure_torch_compiler()
    import jax

    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on "
        f"{torch.cuda.get_device_name() if device == 'cuda' else 'the CPU'}; {dtype}; "
        f"{rounds} interleaved rounds, medians"
    )
    mismatches = 0
    for w in workloads:
        wl = make(w, tiny=args.tiny, device=device)
        x, y = batch(wl)
        rows = [funcnn_row(wl, x, y, None), funcnn_row(wl, x, y, "bfloat16")]
        notes: dict[str, tuple[str, str]] = {}
        for v in variants:
            if v in CUDA_ONLY and device != "cuda":
                notes[f"torch {v}"] = ("", "skipped (CUDA only)")
                continue
            try:
                rows.append(torch_row(wl, x, y, v, VARIANTS[v], device))
            except Exception as err:  # a variant that cannot be built is a row, not a crash
                notes[f"torch {v}"] = ("", f"failed ({type(err).__name__}: {err})"[:200])
        settings = {r.name: r.settings for r in rows}
        bf16 = {r.name: r.bf16 for r in rows}
        times, first, losses = measure(rows, rounds, min_time, notes)
        base32, base16 = times["funcnn f32"], times.get("funcnn bf16")
        # each row against funcnn in its precision (bfloat16 rows against funcnn bfloat16,
        # or float32 where that failed)
        refs = {False: losses["funcnn f32"], True: losses.get("funcnn bf16")}
        if refs[True] is None:
            refs[True] = refs[False]
        title = wl.title if not args.tiny else f"{wl.title.split(',')[0]}, batch {wl.batch}"
        print(f"\n{title}")
        print(
            f"  {'row':27s} {'median ms':>10s} {'÷ f32':>6s} {'÷ bf16':>6s} {'first s':>8s} "
            f"{'loss, step 0 → 1':>18s} {'check':>8s}  settings"
        )
        for name, t in times.items():
            ref, tol = refs[bf16[name]], TOLERANCE["bfloat16" if bf16[name] else dtype]
            ok = all(abs(a - b) <= tol * max(1.0, abs(b)) for a, b in zip(losses[name], ref))
            mismatches += not ok
            check = "ref" if name.startswith("funcnn") else "ok" if ok else "MISMATCH"
            r16 = f"{t / base16:6.2f}" if base16 else f"{'-':>6s}"
            print(
                f"  {name:27s} {t * 1e3:10.2f} {t / base32:6.2f} {r16} {first[name]:8.2f} "
                f"{losses[name][0]:8.4f} → {losses[name][1]:7.4f} {check:>8s}  {settings[name]}"
            )
        for name, (used, note) in notes.items():
            print(f"  {name:27s} {note}{'  ' + used if used else ''}")
        torch_times = {n: t for n, t in times.items() if n.startswith("torch")}
        if torch_times:
            best = min(torch_times, key=torch_times.get)
            which = "bf16" if bf16[best] and base16 else "f32"
            against = base16 if which == "bf16" else base32
            print(
                f"  fastest PyTorch: {best} ({settings[best]}), {torch_times[best] * 1e3:.2f} ms, "
                f"{torch_times[best] / against:.2f}× funcnn {which}"
            )
    if mismatches:
        print(f"\n{mismatches} rows computed different losses (MISMATCH)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
