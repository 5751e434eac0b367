"""The lecture's 2-D demo: a linear classifier against one hidden tanh layer.

Both models are trained on the same 2-D points and their decision regions are drawn
side by side:

* the linear classifier (logistic regression) ``y = σ(wᵀx + b)``, whose boundary
  ``wᵀx + b = 0`` is a straight line;
* a perceptron with one hidden layer ``h = tanh(W₁x + b₁)`` and a softmax head
  ``y = softmax(W₂h + b₂)``, whose boundary can bend around the data.

Both minimise the cross-entropy with minibatch Adam. On the two spirals (the default) the
line cannot do much better than chance while the hidden layer separates the classes.

    python examples/classify2d.py [--data spirals|circles|moons|xor|blobs] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import optax

from funcnn import data, fit, models, plot


def train(model, x_tr, y_tr, x_val, y_val, *, lr: float, epochs: int, seed: int):
    """Fit ``model`` with minibatch Adam; return the result of :func:`funcnn.fit`."""
    _, params = model.init(jax.random.key(seed), (-1, 2))
    return fit(
        model,
        params,
        x_tr,
        y_tr,
        optimizer=optax.adam(lr),
        epochs=epochs,
        batch_size=100,
        key=seed,
        validation_data=(x_val, y_val),
        scan=True,
        progress=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="spirals", choices=sorted(data.TOY_SETS))
    parser.add_argument("--quick", action="store_true", help="fewer epochs, for a smoke test")
    parser.add_argument("--out", default="funcnn-out/classify2d", help="output folder")
    parser.add_argument("--hidden", type=int, default=64, help="width of the tanh layer")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (60 if args.quick else 300)
    out = Path(args.out)

    x, y = data.TOY_SETS[args.data](1000, key=args.seed)
    (x_tr, y_tr), (x_val, y_val) = data.train_val_split(x, y, 0.2, key=args.seed + 1)
    print(f"{args.data}: {len(x_tr)} training and {len(x_val)} validation points")

    runs = [
        ("linear classifier", models.logistic_regression(2), 0.05),
        (f"one hidden layer ({args.hidden} tanh)", models.mlp([args.hidden, 2], "tanh"), 0.01),
    ]
    panels = []
    for name, model, lr in runs:
        result = train(model, x_tr, y_tr, x_val, y_val, lr=lr, epochs=epochs, seed=args.seed)
        acc = result.history["val_accuracy"][-1]
        print(f"{name}: validation accuracy {acc:.3f}")
        panels.append(
            (f"{name}: {acc:.1%}", lambda pts, m=model, p=result.params: m.predict(p, pts))
        )

    print(f"pictures in {out}")
    print(f"  {plot.side_by_side(panels, x, y, out / 'decision_regions.png', resolution=150)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
