"""Logistic regression trained by gradient descent: the lecture's first neural network.

Given points ``x_i ∈ R^d`` with answers ``ỹ_i ∈ {0, 1}``, the model is one neuron

    y = σ(wᵀx + b) = 1 / (1 + exp(−(wᵀx + b))) ∈ (0, 1)

and ``(w, b)`` minimise the cross-entropy

    L(w, b) = −(1/n) Σ_i [ỹ_i log y(x_i) + (1 − ỹ_i) log(1 − y(x_i))].

Its gradient has a closed form, derived by hand in the lecture:

    ∇_w L = (1/n) Xᵀ (σ(Xw + b) − ỹ),    ∂L/∂b = (1/n) Σ_i (σ(x_iᵀw + b) − ỹ_i),

and gradient descent repeats ``θ ← θ − α ∇L(θ)``. The decision boundary is the line
``y = 0.5``, i.e. ``wᵀx + b = 0``.

This script trains on two slightly overlapping Gaussian blobs with full-batch gradient
descent, prints the largest difference between the automatic gradient (``jax.grad``) and
the hand-derived one, and saves ``boundary.png`` (the points and the line σ = 0.5) and
``loss.png`` (the loss against the step).

    python examples/logistic_regression.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import data, losses, models, plot, train_step


def hand_gradient(params: dict, x: jax.Array, y: jax.Array) -> dict:
    """The lecture's formula: ``∇_w L = (1/n) Xᵀ(σ(Xw + b) − ỹ)``, ``∂L/∂b = mean(σ − ỹ)``."""
    residual = jax.nn.sigmoid(x @ params["w"] + params["b"]) - y[:, None]  # (n, 1)
    return {"w": x.T @ residual / len(x), "b": jnp.mean(residual, axis=0)}


def gradient_difference(model, params: dict, x, y) -> float:
    """Max |jax.grad − hand formula| over every parameter, computed in float64."""
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64, y64 = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
        auto = jax.grad(lambda p: model.loss(model.apply(p, x64), y64))(p64)
        hand = hand_gradient(p64, x64, y64)
        diffs = jax.tree_util.tree_map(lambda a, h: jnp.max(jnp.abs(a - h)), auto, hand)
        return float(max(jax.tree_util.tree_leaves(diffs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, for a smoke test")
    parser.add_argument("--out", default="funcnn-out/logistic_regression", help="output folder")
    parser.add_argument("--steps", type=int, default=None, help="gradient descent steps")
    parser.add_argument("--lr", type=float, default=0.5, help="the step size α")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = args.steps or (60 if args.quick else 300)
    out = Path(args.out)

    x, y = data.blobs(200, key=args.seed, std=0.7, distance=2.0)  # a little overlap
    model = models.logistic_regression(2)
    _, params = model.init(jax.random.key(args.seed), (-1, 2))
    params = jax.tree_util.tree_map(lambda a: a + 1.0, params)  # start away from the optimum

    diff = gradient_difference(model, params, x, y)
    print(f"max |jax.grad - (1/n) X^T(sigma(Xw + b) - y)| = {diff:.2e} (float64)")

    opt = optax.sgd(args.lr)  # θ ← θ − α ∇L(θ)
    step = train_step(model.apply, model.loss, opt, metrics={"accuracy": losses.accuracy})
    opt_state = opt.init(params)
    history: dict[str, list[float]] = {"loss": []}
    for _ in range(steps):
        params, opt_state, logs = step(params, opt_state, (x, y))
        history["loss"].append(float(logs["loss"]))
    final = {k: float(v) for k, v in logs.items()}
    w, b = np.asarray(params["w"])[:, 0], float(params["b"][0])
    print(
        f"after {steps} steps: loss {final['loss']:.4f}, accuracy {final['accuracy']:.3f}, "
        f"boundary {w[0]:.3f} x1 + {w[1]:.3f} x2 + {b:.3f} = 0"
    )

    print(f"pictures in {out}")
    plt = plot.require_matplotlib()
    fig, ax = plt.subplots(figsize=(5, 5))
    plot.decision_regions(
        ax, lambda pts: model.predict(params, pts), x, y, title="σ(wᵀx + b), boundary σ = 0.5"
    )
    print(f"  {plot.save(fig, out / 'boundary.png')}")
    print(f"  {plot.curves(history, out / 'loss.png', title='cross-entropy, gradient descent')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
