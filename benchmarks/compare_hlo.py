"""Does funcnn's abstraction cost anything once compiled? Count the operations of the compiled
gradient programs of funcnn and hand-written JAX for each workload, both compiled with the XLA
options funcnn uses (``fn.jit``).

    python benchmarks/compare_hlo.py [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from contenders import _float32_loss, _funcnn_params, _jax_params, funcnn_model, raw_apply  # noqa: E402,I001
from workloads import batch, make  # noqa: E402

import funcnn as fn  # noqa: E402

KINDS = ("convolution", "dot", "transpose", "reduce-window", "fusion", "copy", "select", "convert")


def op_counts(f, *args) -> dict[str, int]:
    text = f.lower(*args).compile().as_text()
    counts = collections.Counter(re.findall(r"= \S+ (\w[\w-]*)\(", text))
    return {k: counts.get(k, 0) for k in KINDS}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = ap.parse_args(argv)
    ce = _float32_loss(optax.losses.softmax_cross_entropy_with_integer_labels)
    loss_fn_ce = _float32_loss(fn.losses.softmax_cross_entropy)
    for name in ("mlp", "lenet", "alexnet"):
        wl = make(name, tiny=True, dtype=args.dtype)
        x, y = batch(wl)
        x = jnp.asarray(x, jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
        model = funcnn_model(wl.ops)
        p_fn = _funcnn_params(model, wl)
        p_raw = _jax_params(wl, wl.params)
        apply_raw = raw_apply(wl.ops)

        def loss_fn(p, x=x, y=y, model=model):
            return loss_fn_ce(model.apply(p, x), y)

        def loss_raw(p, x=x, y=y, apply_raw=apply_raw):
            return ce(apply_raw(p, x), y).mean()

        # both with the XLA options funcnn compiles with, so only the code can differ
        g_fn, g_raw = fn.jit(jax.grad(loss_fn)), fn.jit(jax.grad(loss_raw))
        print(f"{name:8s} funcnn  {op_counts(g_fn, p_fn)}")
        print(f"{name:8s} raw JAX {op_counts(g_raw, p_raw)}")


if __name__ == "__main__":
    main()
