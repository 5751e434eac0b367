"""GPU check: LeNet on digits and an AlexNet-size step, float32 and bfloat16, against the CPU.

    python benchmarks/gpu_check.py            # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --quick    # small shapes: seconds, also on a CPU alone

For each model and dtype it trains the same params on the same batches on the CPU and on
the GPU, compares the loss curves (float32: to ``1e-3``, run with
``jax.default_matmul_precision("highest")`` so that the GPU does not round to TF32;
bfloat16: to ``5e-2``, and the final accuracy to 5 points) and prints the median step time
of each. Without a GPU it runs the CPU reference, says that the GPU part was skipped and
exits with 0 (``--require-gpu`` makes that an error). The exit status is 1 when a check
fails.

LeNet-5 and AlexNet come from ``funcnn.models`` (``lenet5()``, ``alexnet(num_classes=1000)``)
and the digits from ``funcnn.data.digits()`` when those exist; otherwise the script uses
equivalent networks written here on ``lax.conv_general_dilated`` and scikit-learn's 8×8
digits. ``--quick`` always uses a narrow AlexNet on 67×67 inputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's funcnn

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

Spec = list[tuple]
# AlexNet repeats one batch: at LeNet's 0.05 the loss blows up within 5 steps (to 1e10, then
# NaN), and a comparison of diverging curves measures chaos, not the GPU
ALEXNET_LR = 1e-3


def _op(op: tuple, p: dict, x: jax.Array) -> jax.Array:
    kind = op[0]
    if kind == "conv":
        _, _, _, stride, padding = op
        y = lax.conv_general_dilated(
            x, p["w"], (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + p["b"]
    if kind in ("max", "avg"):
        _, window, stride = op
        dims, steps = (1, window, window, 1), (1, stride, stride, 1)
        if kind == "max":
            return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, dims, steps, "VALID")
        return lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, steps, "VALID") / (
            window * window
        )
    if kind == "dense":
        return x @ p["w"] + p["b"]
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    return {"relu": jax.nn.relu, "tanh": jnp.tanh}[kind](x)


def build(spec: Spec, key: jax.Array, input_shape: tuple[int, ...]) -> tuple[Callable, list]:
    """Params (Glorot-normal weights, zero biases) and ``apply(params, x)`` for ``spec``."""
    params, shape = [], (1, *input_shape[1:])
    for op in spec:
        key, sub = jax.random.split(key)
        p = {}
        if op[0] == "conv":
            k, c = op[1], op[2]
            w = jax.nn.initializers.glorot_normal()(sub, (k, k, shape[-1], c))
            p = {"w": w, "b": jnp.zeros(c)}
        elif op[0] == "dense":
            w = jax.nn.initializers.glorot_normal()(sub, (shape[-1], op[1]))
            p = {"w": w, "b": jnp.zeros(op[1])}
        params.append(p)
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        shape = jax.eval_shape(lambda x, op=op, p=p: _op(op, p, x), x).shape

    def apply(params, x):
        for op, p in zip(spec, params):
            x = _op(op, p, x)
        return x

    return apply, params


def lenet_spec(size: int) -> Spec:
    """LeNet-5's layout for ``size × size`` images: conv-tanh-pool twice, 120, 84, 10."""
    k2 = 5 if size // 2 >= 5 else 3
    return [
        ("conv", 5, 6, 1, "SAME"), ("tanh",), ("avg", 2, 2),
        ("conv", k2, 16, 1, "VALID"), ("tanh",), ("avg", 2, 2) if size >= 20 else ("tanh",),
        ("flatten",), ("dense", 120), ("tanh",), ("dense", 84), ("tanh",), ("dense", 10),
    ]  # fmt: skip


def alexnet_spec(width: float = 1.0, hidden: int = 4096, classes: int = 1000) -> Spec:
    """AlexNet's layers (single tower, no LRN): 62,378,344 params at width 1 on 227×227."""
    c = [max(1, int(n * width)) for n in (96, 256, 384, 384, 256)]
    return [
        ("conv", 11, c[0], 4, "VALID"), ("relu",), ("max", 3, 2),
        ("conv", 5, c[1], 1, ((2, 2), (2, 2))), ("relu",), ("max", 3, 2),
        ("conv", 3, c[2], 1, "SAME"), ("relu",),
        ("conv", 3, c[3], 1, "SAME"), ("relu",),
        ("conv", 3, c[4], 1, "SAME"), ("relu",), ("max", 3, 2),
        ("flatten",), ("dense", hidden), ("relu",), ("dense", hidden), ("relu",),
        ("dense", classes),
    ]  # fmt: skip


def digits() -> tuple[np.ndarray, np.ndarray, str]:
    """Digit images NHWC in [0, 1] and labels: funcnn's set if present, else scikit-learn's."""
    try:
        from funcnn import data

        out = data.digits()
        x, y = out if not isinstance(out[0], tuple) else out[0]
        x = np.asarray(x, np.float32)
        return (x if x.ndim == 4 else x[..., None]), np.asarray(y), "funcnn.data.digits()"
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        print(f"  funcnn.data.digits() not available ({type(e).__name__}): scikit-learn's digits")
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[..., None] / 16.0).astype(np.float32), d.target, "sklearn load_digits"


def lenet(x: np.ndarray) -> tuple[Callable, list, str]:
    """``apply, params, source``: funcnn.models.lenet5() when it fits ``x``, else inline."""
    key = jax.random.key(0)
    try:
        from funcnn import models

        small = x.shape[1] < 28  # the 8×8 digits: SAME padding, as the demo's CNN
        model = models.lenet5(padding="SAME") if small else models.lenet5()
        _, params = model.init(key, (-1, *x.shape[1:]))
        model.apply(params, jnp.asarray(x[:2]), train=False)
        return (lambda p, xb: model.apply(p, xb, train=False)), params, "funcnn.models.lenet5()"
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        print(f"  funcnn.models.lenet5() not usable here ({type(e).__name__}): inline LeNet")
    apply, params = build(lenet_spec(x.shape[1]), key, x.shape)
    return apply, params, "inline LeNet-5"


def alexnet(quick: bool, size: int) -> tuple[Callable, list, str]:
    """``apply, params, source`` for a 1000-class AlexNet (narrow in ``--quick``)."""
    key = jax.random.key(1)
    if not quick:
        try:
            from funcnn import models

            model = models.alexnet(num_classes=1000)
            _, params = model.init(key, (-1, size, size, 3))
            return (lambda p, xb: model.apply(p, xb, train=False)), params, "funcnn.models.alexnet"
        except (ImportError, AttributeError, TypeError, ValueError) as e:
            print(f"  funcnn.models.alexnet() not usable ({type(e).__name__}): inline AlexNet")
    spec = alexnet_spec(0.125, 256) if quick else alexnet_spec()
    apply, params = build(spec, key, (1, size, size, 3))
    return apply, params, "inline AlexNet" + (" (1/8 width)" if quick else "")


def make_step(
    apply: Callable, dtype, lr: float = 0.05
) -> tuple[Callable, optax.GradientTransformation]:
    """One SGD-momentum step on ``L = mean CE(apply(θ, x), y)``; logits in float32."""
    opt = optax.sgd(lr, momentum=0.9)

    def loss_fn(p, x, y):
        logits = apply(p, x.astype(dtype)).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, o, x, y):
        value, g = jax.value_and_grad(loss_fn)(p, x, y)
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), o, value

    return step, opt


def run(apply, params, batches, dtype, device, lr: float = 0.05) -> dict:
    """Train on ``batches`` on ``device``: loss per step, median step time, final params."""
    step, opt = make_step(apply, dtype, lr)
    p = jax.device_put(jax.tree.map(lambda a: jnp.asarray(a, dtype), params), device)
    o = jax.device_put(opt.init(p), device)
    losses, times = [], []
    for x, y in batches:
        x, y = jax.block_until_ready(jax.device_put((x, y), device))  # the copy is not timed
        start = time.perf_counter()
        p, o, value = step(p, o, x, y)
        value.block_until_ready()
        times.append(time.perf_counter() - start)
        losses.append(float(value))
    step_time = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return {"loss": np.array(losses), "time": step_time, "params": p}


def accuracy(apply, params, x, y, dtype) -> float:
    """The share of ``argmax apply(params, x) == y``, on the CPU."""
    with jax.default_device(jax.devices("cpu")[0]):
        logits = jax.jit(apply)(jax.device_get(params), jnp.asarray(x, dtype))
    return float(np.mean(np.argmax(np.asarray(logits, np.float32), -1) == y))


def check(name: str, cpu: dict, gpu: dict, tol: float) -> bool:
    """Print and return whether the GPU losses match the CPU ones: ``max |Δ| ≤ tol·(1+|L|)``."""
    diff = np.abs(cpu["loss"] - gpu["loss"]) / (1 + np.abs(cpu["loss"]))
    ok = bool(np.all(diff <= tol))
    print(
        f"  {name}: max relative |Δloss| = {diff.max():.2e} (tol {tol:g}) {'OK' if ok else 'FAIL'}"
    )
    return ok


def check_accuracy(name: str, cpu: float, gpu: float, tol: float = 0.05) -> bool:
    """Print and return whether the final accuracies agree: ``|acc_cpu − acc_gpu| ≤ tol``."""
    ok = abs(cpu - gpu) <= tol
    print(f"  {name}: accuracy cpu {cpu:.3f}, gpu {gpu:.3f} (tol {tol:g}) {'OK' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds on a CPU)")
    parser.add_argument("--require-gpu", action="store_true", help="no GPU is an error")
    args = parser.parse_args(argv)
    cpu = jax.devices("cpu")[0]
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        gpu = None
    print(f"jax {jax.__version__}; CPU: {cpu}; GPU: {gpu or 'none'}")
    ok = True
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    tols = {"float32": 1e-3, "bfloat16": 5e-2}

    x, y, source = digits()
    apply, params, model_source = lenet(x)
    steps, batch = (20, 64) if args.quick else (300, 128)
    order = np.random.default_rng(0).integers(0, len(x), size=(steps, batch))
    batches = [(x[i], y[i]) for i in order]
    print(f"LeNet ({model_source}) on {source} {x.shape}: {steps} steps of {batch}")
    for name, dtype in dtypes.items():
        with jax.default_matmul_precision("highest"):
            ref = run(apply, params, batches, dtype, cpu)
            acc = accuracy(apply, jax.device_get(ref["params"]), x, y, dtype)
            print(f"  {name} cpu: {ref['time'] * 1e3:8.2f} ms/step, loss {ref['loss'][-1]:.4f}, "
                  f"accuracy {acc:.3f}")  # fmt: skip
            if gpu is not None:
                out = run(apply, params, batches, dtype, gpu)
                acc_gpu = accuracy(apply, jax.device_get(out["params"]), x, y, dtype)
                print(f"  {name} gpu: {out['time'] * 1e3:8.2f} ms/step, loss "
                      f"{out['loss'][-1]:.4f}, accuracy {acc_gpu:.3f}")  # fmt: skip
                ok &= check(f"LeNet {name}", ref, out, tols[name])
                ok &= check_accuracy(f"LeNet {name}", acc, acc_gpu)

    size, batch, steps = (67, 8, 3) if args.quick else (227, 32, 5)
    apply, params, model_source = alexnet(args.quick, size)
    n_params = sum(a.size for a in jax.tree.leaves(params))
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    ys = rng.integers(0, 1000, size=batch)
    print(f"AlexNet ({model_source}, {n_params:,} params), batch {batch} of {size}×{size}×3")
    for name, dtype in dtypes.items():
        with jax.default_matmul_precision("highest"):
            ref = run(apply, params, [(xs, ys)] * steps, dtype, cpu, ALEXNET_LR)
            print(f"  {name} cpu: {ref['time'] * 1e3:8.2f} ms/step")
            if gpu is not None:
                out = run(apply, params, [(xs, ys)] * steps, dtype, gpu, ALEXNET_LR)
                print(f"  {name} gpu: {out['time'] * 1e3:8.2f} ms/step")
                ok &= check(f"AlexNet {name}", ref, out, tols[name])

    if gpu is None:
        print("SKIPPED: no CUDA GPU found; ran the CPU reference only.")
        return 2 if args.require_gpu else 0
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
