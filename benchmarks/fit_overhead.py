"""What ``fit`` costs per epoch against a hand-written JAX training loop.

    python benchmarks/fit_overhead.py [--rounds 9] [--workloads spiral,lenet] [--device cpu|gpu]
    python benchmarks/fit_overhead.py --quick   # 2 rounds, 3 and 2 epochs: the harness only

Two workloads, each with and without validation data:

* ``spiral``: ``models.mlp([16, 2], "tanh")`` (2-16-2) on 256 spiral points, batch 32,
  Adam (lr 0.01), validation on 256 other points; 50 epochs a call;
* ``lenet``: the LeNet of ``examples/cnn_digits.py`` (``models.lenet5`` with ReLU, max pooling,
  "SAME" padding, 16 and 32 filters of 3×3) on the 8×8 digits, batch 64, Adam (lr 3e-3),
  validation on a held-out 20% (359 images); the 1,438 training images trimmed to 1,408, 22
  full batches, so that both sides run the same steps; 5 epochs a call.

The hand-written loop is what a careful JAX user writes around the same model: the same
params pytree, ``model.apply`` and ``model.loss`` (the same math), ``jax.value_and_grad`` and
optax; one compiled epoch that shuffles with ``funcnn.data.shuffle`` (the permutation ``fit``
uses, keyed ``fold_in(fold_in(key, e), 0)`` for epoch ``e``, as ``fit`` documents), runs a
``lax.scan`` over the full batches with params and optimizer state donated, and returns the
epoch's mean loss; a compiled validation function returning (loss, accuracy); a Python loop
over the epochs that calls both and reads the losses to host floats, a history ("hand loop",
the reference of the ratios). A second form, "hand, one program", runs every epoch and its
validation in one compiled ``lax.scan`` over the epochs and reads the whole history once at
the end: the floor for a ``fit`` that needs the host only at the end of the call (no progress
bar, callback or early stopping), which ``fit`` may do. Both are compiled with ``funcnn.jit``
(``--jit funcnn``, the default): on a CPU that is what ``fit`` compiles with, and with plain
``jax.jit`` (``--jit jax``) the LeNet's convolutions would be compiled without funcnn's CPU
formulations, which measures the model, not ``fit``; elsewhere the two are the same.

``fit`` is called as a user calls it: ``fit(model, params, x, y, scan=True, epochs=E,
batch_size=B, validation_data=..., optimizer=opt, progress=False)``, NumPy data, its default
metrics (the accuracy, computed at every training step too) and its default non-finite guard;
a second column calls it with ``metrics={}`` (no accuracy, in training or validation), to
separate what the per-step accuracy costs. One call of E epochs is timed, divided by E, after
a warm-up call (compilation excluded on both sides); every call starts from the same params.
The contenders are interleaved round by round, their order rotated; medians are printed, and
the ratios fit ÷ hand loop and fit ÷ hand, one program (> 1: fit is slower).

The warm-up calls also check that both sides compute the same thing: the same shuffles and
steps from the same params, so the per-epoch losses must agree (to 1e-4 relative; in practice
the difference is float32 rounding).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # run.py's setup_device, and this checkout's funcnn

WORKLOADS = ("spiral", "lenet")
EPOCHS = {"spiral": 50, "lenet": 5}
QUICK_EPOCHS = {"spiral": 3, "lenet": 2}
TOLERANCE = 1e-4  # relative, on every epoch's loss and validation loss


@dataclass
class Setup:
    name: str
    title: str
    model: object
    params: object
    optimizer: object
    x: object  # NumPy training inputs, a whole number of batches
    y: object
    xv: object  # NumPy validation inputs
    yv: object
    batch: int
    epochs: int


def make_setup(name: str, epochs: int | None, quick: bool) -> Setup:
    import jax
    import optax

    from funcnn import data, models

    if name == "spiral":
        model = models.mlp([16, 2], activation="tanh")
        x, y = data.spirals(256, key=0)
        xv, yv = data.spirals(256, key=1)
        batch, opt, shape = 32, optax.adam(0.01), (-1, 2)
        title = "spiral: 2-16-2 tanh MLP, 256 points, batch 32, Adam"
    elif name == "lenet":
        model = models.lenet5(
            activation="relu", pool="max", padding="SAME", filters=(16, 32), kernel=3
        )
        images, labels = data.digits()
        (x, y), (xv, yv) = data.train_val_split(images, labels, 0.2, key=0)
        batch, opt, shape = 64, optax.adam(3e-3), (-1, 8, 8, 1)
        title = "lenet: LeNet-5 (16, 32 filters of 3×3) on 8×8 digits, batch 64, Adam"
    else:
        raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}")
    n = len(x) // batch * batch  # full batches only: fit's short last batch would be a
    x, y = x[:n], y[:n]  # step the hand-written scan does not take
    _, params = model.init(jax.random.key(0), shape)
    epochs = epochs or (QUICK_EPOCHS if quick else EPOCHS)[name]
    title += f", {n} training and {len(xv)} validation examples, {epochs} epochs a call"
    return Setup(name, title, model, params, opt, x, y, xv, yv, batch, epochs)


def hand_written(s: Setup, jit_name: str) -> dict:
    """Two forms of the hand-written training of ``s.epochs`` epochs, each
    ``train(params, validation) -> (history, params)``: ``"loop"``, a Python loop over the
    compiled epoch and validation, the losses read every epoch; ``"one program"``, every epoch
    (and its validation) in one compiled ``lax.scan``, the history read once at the end."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import funcnn as fn

    jit = fn.jit if jit_name == "funcnn" else jax.jit
    apply, loss_fn, opt = s.model.apply, s.model.loss, s.optimizer
    n, batch = len(s.x), s.batch
    steps = n // batch
    xs, ys = jnp.asarray(s.x), jnp.asarray(s.y)  # on the device once, as a user would
    xv, yv = jnp.asarray(s.xv), jnp.asarray(s.yv)
    key = jax.random.key(0)

    def objective(p, xb, yb):
        return loss_fn(apply(p, xb), yb)

    def epoch(p, o, xs, ys, key, e):
        epoch_key = jax.random.fold_in(key, e)
        perm = fn.data.shuffle(jax.random.fold_in(epoch_key, 0), n)
        idx = perm[: steps * batch].reshape(steps, batch)

        def body(carry, b):
            p, o = carry
            value, g = jax.value_and_grad(objective)(p, *b)
            updates, o = opt.update(g, o, p)
            return (optax.apply_updates(p, updates), o), value

        (p, o), values = jax.lax.scan(body, (p, o), (xs[idx], ys[idx]))
        return p, o, values.mean()

    def validate(p, x, y):
        out = apply(p, x)
        return loss_fn(out, y), fn.losses.accuracy(out, y)

    run_epoch = jit(epoch, donate_argnums=(0, 1))
    run_validation = jit(validate)

    def loop(params, validation: bool):
        p = params
        o = opt.init(p)
        history = {"loss": [], "val_loss": [], "val_accuracy": []}
        for e in range(s.epochs):
            p, o, value = run_epoch(p, o, xs, ys, key, e)
            history["loss"].append(float(value))
            if validation:
                vl, va = run_validation(p, xv, yv)
                history["val_loss"].append(float(vl))
                history["val_accuracy"].append(float(va))
        jax.block_until_ready(p)
        return history, p

    def epochs(p, o, xs, ys, xv, yv, key, validation):
        def body(carry, e):
            p, o, value = epoch(*carry, xs, ys, key, e)
            row = (value, *validate(p, xv, yv)) if validation else (value,)
            return (p, o), jnp.stack(row)

        (p, o), rows = jax.lax.scan(body, (p, o), jnp.arange(s.epochs))
        return p, o, rows

    run_epochs = jit(epochs, donate_argnums=(0, 1), static_argnames="validation")

    def one_program(params, validation: bool):
        o = opt.init(params)
        p, o, rows = run_epochs(params, o, xs, ys, xv, yv, key, validation=validation)
        rows = np.asarray(rows)  # one read for the whole history
        names = ["loss", "val_loss", "val_accuracy"] if validation else ["loss"]
        history = {k: rows[:, i].tolist() for i, k in enumerate(names)}
        jax.block_until_ready(p)
        return history, p

    return {"loop": loop, "one program": one_program}


def with_fit(s: Setup, metrics: dict | None):
    """``train(params, validation) -> history``: one ``fit`` call of ``s.epochs`` epochs."""
    import jax

    import funcnn as fn

    options = {} if metrics is None else {"metrics": metrics}

    def train(params, validation: bool):
        r = fn.fit(
            s.model,
            params,
            s.x,
            s.y,
            scan=True,
            epochs=s.epochs,
            batch_size=s.batch,
            validation_data=(s.xv, s.yv) if validation else None,
            optimizer=s.optimizer,
            progress=False,
            **options,
        )
        jax.block_until_ready(r.params)
        return r.history, r.params

    return train


def fresh(params):
    """A copy of ``params`` on the device, ready: the hand-written epoch donates its input."""
    import jax

    return jax.block_until_ready(jax.tree_util.tree_map(lambda a: a.copy(), params))


def agreement(s: Setup, who: str, validation: bool, hand: tuple, fitted: tuple) -> bool:
    """Print how far ``who``'s per-epoch losses (and final params) are from the hand-written
    loop's, both ``(history, params)``; True when within :data:`TOLERANCE`."""
    import jax
    import numpy as np

    (h, p_hand), (f, p_fit) = hand, fitted
    keys = ["loss", "val_loss"] if validation else ["loss"]
    worst = max(
        float(np.max(np.abs(np.subtract(h[k], f[k])) / np.maximum(1.0, np.abs(h[k])))) for k in keys
    )
    dp = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree_util.tree_leaves(p_hand), jax.tree_util.tree_leaves(p_fit))
    )
    ok = worst <= TOLERANCE
    val = f", val loss {h['val_loss'][-1]:.6f} / {f['val_loss'][-1]:.6f}" if validation else ""
    print(
        f"  loss agreement, {who}, validation {'yes' if validation else 'no'}: final loss "
        f"hand loop {h['loss'][-1]:.6f} / {f['loss'][-1]:.6f}{val}; largest relative "
        f"difference over {s.epochs} epochs {worst:.1e}, final params within {dp:.1e}: "
        f"{'ok' if ok else 'DIFFER'}"
    )
    return ok


CONTENDERS = ("hand loop", "hand, one program", "fit", "fit, metrics={}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=None, help="default 9 (--quick: 2)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--epochs", type=int, default=None, help="epochs a call (default 50 / 5)")
    ap.add_argument("--quick", action="store_true", help="few rounds and epochs, for tests")
    ap.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto")
    ap.add_argument(
        "--jit",
        choices=("funcnn", "jax"),
        default="funcnn",
        help="what compiles the hand-written loop (default funcnn.jit, as fit's programs)",
    )
    args = ap.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    rounds = args.rounds or (2 if args.quick else 9)

    from run import setup_device

    setup_device(args.device, "float32")  # --device gpu without a GPU is an error
    import jax

    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {rounds} interleaved rounds, "
        f"medians; hand-written training compiled with {args.jit}.jit"
    )
    table, all_ok = [], True
    for w in workloads:
        s = make_setup(w, args.epochs, args.quick)
        print(s.title)
        hand = hand_written(s, args.jit)
        trains = {
            "hand loop": hand["loop"],
            "hand, one program": hand["one program"],
            "fit": with_fit(s, None),
            "fit, metrics={}": with_fit(s, {}),
        }
        contenders = [(c, v) for v in ("no", "yes") for c in CONTENDERS]
        # warm-up: compiles every program, and checks that both sides compute the same thing
        results = {}
        for c, v in contenders:
            t = time.perf_counter()
            results[c, v] = trains[c](fresh(s.params), v == "yes")
            print(
                f"  first call of {c:17s}, validation {v:3s}: "
                f"{time.perf_counter() - t:6.2f} s (compile included)"
            )
        for c, v in contenders:
            if c != "hand loop":
                all_ok &= agreement(s, c, v == "yes", results["hand loop", v], results[c, v])
        times = {cv: [] for cv in contenders}
        for k in range(rounds):
            for c, v in contenders[k % len(contenders) :] + contenders[: k % len(contenders)]:
                params = fresh(s.params)  # the hand-written epochs donate their params
                t = time.perf_counter()
                trains[c](params, v == "yes")
                times[c, v].append((time.perf_counter() - t) / s.epochs)
        for v in ("no", "yes"):
            table.append((w, v, *(statistics.median(times[c, v]) * 1e3 for c in CONTENDERS)))
        print()
    print("ms per epoch (medians); ratios fit ÷ hand-written, > 1: fit is slower")
    print(
        f"{'workload':8s} {'val':>3s} {'hand loop':>10s} {'hand, 1 prog':>13s} {'fit':>9s} "
        f"{'÷ loop':>7s} {'÷ 1 prog':>9s} {'fit, metrics={}':>16s} {'÷ loop':>7s}"
    )
    for w, v, loop, one, fitted, bare in table:
        print(
            f"{w:8s} {v:>3s} {loop:10.3f} {one:13.3f} {fitted:9.3f} {fitted / loop:7.2f} "
            f"{fitted / one:9.2f} {bare:16.3f} {bare / loop:7.2f}"
        )
    if not all_ok:
        print(
            "fit and the hand-written training computed different losses: "
            "the times compare different work"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
