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

from funcnn import data
from funcnn.demos import classify2d


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="spirals", choices=sorted(data.TOY_SETS))
    parser.add_argument("--quick", action="store_true", help="fewer epochs, for a smoke test")
    parser.add_argument("--out", default="funcnn-out/classify2d", help="output folder")
    parser.add_argument("--hidden", type=int, default=64, help="width of the tanh layer")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classify2d(
        args.out,
        dataset=args.data,
        hidden=args.hidden,
        epochs=args.epochs,
        quick=args.quick,
        seed=args.seed,
        verbose=False,
        resolution=150,
    )
    print(f"pictures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
