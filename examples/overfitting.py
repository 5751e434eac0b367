"""Overfitting: the more expressive the model, the more it can memorise a few points.

The training loss ``L_train(θ) = (1/n) Σ_{i ∈ train} l_i(θ)`` is what gradient descent
lowers; what we care about is the loss on new points, estimated on a held-out validation
set, ``L_val(θ)``. With few training points a very expressive network drives ``L_train``
towards 0 while ``L_val`` turns and grows: it has learnt the noise.

Three networks are trained on the same 40 noisy points of the two moons (full-batch Adam):

* a small one, one hidden layer of 3 tanh units;
* a very expressive one, two hidden layers of 256 ReLU units;
* the same expressive one with dropout after each hidden layer: in training every hidden
  unit is zeroed with probability ``p`` and the rest scaled by ``1/(1 − p)``,
  ``h̃ = m ⊙ h / (1 − p)``, ``m ~ Bernoulli(1 − p)``; at evaluation ``h̃ = h``.

Early stopping watches ``L_val`` after every epoch, stops after ``patience`` epochs without
improvement and keeps the params of the best epoch; that epoch is marked in ``curves.png``.
``regions.png`` shows the three decision regions over the training points.

    python examples/overfitting.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np
import optax

from funcnn import data, fit, models, plot


def train(model, x, y, validation_data, *, epochs: int, seed: int, patience: int | None = None):
    """Full-batch Adam on ``(x, y)``, validated every epoch; the result of :func:`funcnn.fit`."""
    _, params = model.init(jax.random.key(seed), (-1, 2))
    return fit(
        model,
        params,
        x,
        y,
        optimizer=optax.adam(0.003),
        epochs=epochs,
        batch_size=None,
        key=seed,
        validation_data=validation_data,
        patience=patience,
        scan=True,
        progress=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, for a smoke test")
    parser.add_argument("--out", default="funcnn-out/overfitting", help="output folder")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n", type=int, default=40, help="training points")
    parser.add_argument("--dropout", type=float, default=0.5, help="drop probability p")
    parser.add_argument("--patience", type=int, default=None, help="early stopping patience")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (200 if args.quick else 600)
    patience = args.patience or (30 if args.quick else 50)
    out = Path(args.out)

    x, y = data.moons(args.n, key=args.seed, noise=0.25)
    val = data.moons(500, key=args.seed + 1, noise=0.25)  # new points, same distribution
    print(f"moons: {len(x)} training and {len(val[0])} validation points, {epochs} epochs")

    small = ("small: 3 tanh", models.mlp([3, 2], "tanh"))
    large = ("large: 256-256 ReLU", models.mlp([256, 256, 2], "relu"))
    dropped = (
        f"large with dropout {args.dropout}",
        models.mlp([256, 256, 2], "relu", dropout=args.dropout),
    )
    results = {}
    for name, model in (small, large, dropped):
        r = train(model, x, y, val, epochs=epochs, seed=args.seed)
        h = r.history
        results[name] = (model, r)
        best = int(np.argmin(h["val_loss"]))
        print(
            f"{name}: final train loss {h['loss'][-1]:.4f}, final validation loss "
            f"{h['val_loss'][-1]:.4f}, best validation loss {h['val_loss'][best]:.4f} "
            f"at epoch {best + 1}"
        )

    stopped = train(large[1], x, y, val, epochs=epochs, seed=args.seed, patience=patience)
    best_epoch = stopped.best_epoch + 1
    print(
        f"early stopping (patience {patience}) on the large network: stopped after epoch "
        f"{stopped.epochs_run}, kept epoch {best_epoch} "
        f"(validation loss {stopped.history['val_loss'][stopped.best_epoch]:.4f})"
    )

    print(f"pictures in {out}")
    panels, marks = [], []
    for name, (_, r) in results.items():
        panels.append((name, {"train": r.history["loss"], "validation": r.history["val_loss"]}))
        marks.append(
            (best_epoch, f"early stopping keeps {best_epoch}") if name == large[0] else None
        )
    print(f"  {plot.curve_panels(panels, out / 'curves.png', marks=marks, logy=True)}")
    regions = [
        (name, lambda pts, m=model, p=r.params: m.predict(p, pts))
        for name, (model, r) in results.items()
    ]
    print(f"  {plot.side_by_side(regions, x, y, out / 'regions.png', resolution=150)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
