"""Gradient descent and its adaptive relatives on one problem, against steps and wall time.

All six minimise the same cross-entropy ``L(θ) = (1/n) Σ_i l_i(θ)`` of the same small
tanh network from the same initial weights:

* full-batch gradient descent: ``θ ← θ − α ∇L(θ)``;
* SGD, one random example ``j`` per step: ``θ ← θ − α ∇l_j(θ)``;
* minibatch SGD, ``m`` random examples: ``θ ← θ − α ∇[(1/m) Σ_{j ∈ B} l_j(θ)]``;
* Momentum: ``v ← μ v + g``, ``θ ← θ − α v``;
* RMSProp: ``s ← ρ s + (1 − ρ) g²``, ``θ ← θ − α g / (√s + ε)``;
* Adam: ``m ← β₁ m + (1 − β₁) g``, ``v ← β₂ v + (1 − β₂) g²``,
  ``θ ← θ − α m̂ / (√v̂ + ε)`` with the bias corrections ``m̂ = m/(1 − β₁ᵗ)``,
  ``v̂ = v/(1 − β₂ᵗ)``.

The optimizers are optax's. Every run takes the same number of steps; every few steps the
loss on the whole training set is recorded together with the seconds spent in the (compiled)
steps so far. The picture ``optimizers.png`` shows the loss against steps and against wall
time: a full-batch step sees all ``n`` examples, an SGD step one.

    python examples/optimizers.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from funcnn import data, models, plot


def make_runner(model, optimizer, x, y, batch_size: int, chunk: int):
    """A compiled ``chunk`` of optimizer steps on random minibatches (``lax.scan``).

    Returns ``run(params, opt_state, key) -> (params, opt_state)``. The data are passed
    to the compiled function as arguments, not captured as constants.
    """
    n = len(x)

    def loss(params, xb, yb):
        return model.loss(model.apply(params, xb), yb)

    def one_step(carry, key, x, y):
        params, opt_state = carry
        if batch_size >= n:
            xb, yb = x, y
        else:
            idx = jax.random.randint(key, (batch_size,), 0, n)  # m draws
            xb, yb = x[idx], y[idx]
        grads = jax.grad(loss)(params, xb, yb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @jax.jit
    def run(params, opt_state, key, x, y):
        (params, opt_state), _ = jax.lax.scan(
            lambda c, k: one_step(c, k, x, y), (params, opt_state), jax.random.split(key, chunk)
        )
        return params, opt_state

    return lambda params, opt_state, key: run(params, opt_state, key, x, y)


@functools.cache
def _full_loss(model):
    return jax.jit(lambda p, x, y: model.loss(model.apply(p, x), y))


def race(model, params, optimizer, x, y, *, batch_size: int, steps: int, chunk: int, seed: int):
    """Run ``steps`` steps; return ``(steps, seconds, training losses)`` every ``chunk`` steps."""
    run = make_runner(model, optimizer, x, y, batch_size, chunk)
    full_loss = _full_loss(model)
    opt_state = optimizer.init(params)
    key = jax.random.key(seed)
    jax.block_until_ready(run(params, opt_state, key))  # compile outside the clock
    done, seconds = [0], [0.0]
    losses = [float(full_loss(params, x, y))]
    for i in range(steps // chunk):
        start = time.perf_counter()
        params, opt_state = jax.block_until_ready(
            run(params, opt_state, jax.random.fold_in(key, i))
        )
        seconds.append(seconds[-1] + time.perf_counter() - start)
        done.append(done[-1] + chunk)
        losses.append(float(full_loss(params, x, y)))
    return done, seconds, losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, for a smoke test")
    parser.add_argument("--out", default="funcnn-out/optimizers", help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="steps per optimizer")
    parser.add_argument("--n", type=int, default=None, help="training examples")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size m")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = args.steps or (100 if args.quick else 1000)
    n = args.n or (500 if args.quick else 2000)
    chunk = max(1, steps // 50)
    out = Path(args.out)

    x, y = data.moons(n, key=args.seed, noise=0.15)
    x, y = jnp.asarray(x), jnp.asarray(y)
    model = models.mlp([32, 2], "tanh", "softmax")
    _, params = model.init(jax.random.key(args.seed), (-1, 2))
    m = args.batch_size
    contenders = [
        ("gradient descent (all n)", optax.sgd(0.5), n),
        ("SGD (m = 1)", optax.sgd(0.05), 1),
        (f"minibatch SGD (m = {m})", optax.sgd(0.5), m),
        (f"Momentum (m = {m})", optax.sgd(0.05, momentum=0.9), m),
        (f"RMSProp (m = {m})", optax.rmsprop(0.01), m),
        (f"Adam (m = {m})", optax.adam(0.01), m),
    ]
    print(f"moons, n = {n}, {steps} steps each; training loss at the start and the end:")
    runs = {}
    for name, opt, batch_size in contenders:
        done, seconds, losses = race(
            model,
            params,
            opt,
            x,
            y,
            batch_size=batch_size,
            steps=steps,
            chunk=chunk,
            seed=args.seed,
        )
        runs[name] = (done, seconds, losses)
        print(f"  {name:>26s}: {losses[0]:.4f} -> {losses[-1]:.4f} in {seconds[-1]:.3f} s")
    best = min(runs, key=lambda k: runs[k][2][-1])
    print(f"lowest final loss: {best}")

    print(f"pictures in {out}")
    title = "the same network and start, six optimizers"
    print(f"  {plot.loss_vs_steps_and_time(runs, out / 'optimizers.png', title=title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
