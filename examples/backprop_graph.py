"""The forward and backward pass on a computational graph, as the lecture draws it.

1. The classic example ``f = 1 / (1 + exp(−(w0·x0 + w1·x1 + b)))`` at ``w0 = 2, x0 = −1,
   w1 = −3, x1 = −2, b = −3``: ``f ≈ 0.73`` and the backward pass gives
   ``∂f/∂w0 ≈ −0.20, ∂f/∂x0 ≈ 0.39, ∂f/∂w1 ≈ −0.39, ∂f/∂x1 ≈ −0.59, ∂f/∂b ≈ 0.20``.
2. A logistic regression's loss on a real batch (eight tumours of the Wisconsin
   breast-cancer set, four standardized features; the two moons if scikit-learn is missing):
   ``L = −mean(ỹ log σ(xw + b) + (1 − ỹ) log(1 − σ(xw + b)))``.

Each graph is printed as a table and saved as a picture: values in green, partials in red.

    python examples/backprop_graph.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from funcnn import data, graph


def classic(w0, x0, w1, x1, b):
    """``f = σ(w0·x0 + w1·x1 + b)`` written out as the lecture's graph."""
    return 1 / (1 + jnp.exp(-(w0 * x0 + w1 * x1 + b)))


def logistic_loss(w, b, x, y):
    """``L = −(1/n) Σ [ỹ log p + (1 − ỹ) log(1 − p)]`` with ``p = σ(xw + b)``."""
    p = 1 / (1 + jnp.exp(-(x @ w + b)))
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))


def real_batch(n: int = 8, features: int = 4, seed: int = 0):
    """``n`` standardized examples with ``features`` features and 0/1 labels."""
    try:
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = x[:, :features]
    except ImportError:  # pragma: no cover - scikit-learn is an optional extra
        x, y = data.moons(200, key=seed)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    idx = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
    return x[idx].astype(np.float32), y[idx].astype(np.float32)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    parser.add_argument("--out", default="out/backprop_graph", help="folder for the pictures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)

    g = graph.trace(classic, 2.0, -1.0, -3.0, -2.0, -3.0)
    print("f = 1 / (1 + exp(-(w0*x0 + w1*x1 + b)))")
    print(g.table())
    g.draw(out / "classic_graph.png", title="f = 1/(1 + exp(−(w0·x0 + w1·x1 + b)))")
    (out / "classic_graph.dot").write_text(g.to_dot())

    x, y = real_batch(4 if args.quick else 8, seed=args.seed)
    w = jnp.asarray(np.random.default_rng(args.seed).normal(0, 0.5, x.shape[1]), jnp.float32)
    lg = graph.trace(logistic_loss, w, jnp.float32(0.0), x, y)
    print(f"\nlogistic regression on a batch of {len(x)}: L = {float(lg.value):.4f}")
    print(lg.table())
    lg.draw(out / "logistic_regression_graph.png", title="logistic regression loss on a batch")
    print(f"pictures saved in {out}")
    return out


if __name__ == "__main__":
    main()
