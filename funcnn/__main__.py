"""Command line: ``python -m funcnn demo`` and ``python -m funcnn playground``.

``demo`` is the lecture's 2-D demo: a logistic regression (a linear classifier) and a
network with one tanh hidden layer trained on the two spirals, with their decision
regions saved side by side.

``playground`` serves the lecture's interactive page on a loopback address: click to add
points, train a linear classifier and an MLP side by side, watch the decision regions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main", "demo"]


def demo(out: str | Path = "funcnn-demo", *, quick: bool = False, seed: int = 0) -> dict:
    """Train both models on the spirals, print their accuracies, save the picture.

    Returns a dict with both validation accuracies and the picture's path.
    """
    import jax
    import optax

    from . import data, models
    from .train import fit

    out = Path(out)
    n, hidden = 1000, 64
    epochs = 60 if quick else 300
    x, y = data.spirals(n, key=seed)
    (x_tr, y_tr), (x_val, y_val) = data.train_val_split(x, y, 0.2, key=seed + 1)
    print(f"two spirals: {len(x_tr)} training and {len(x_val)} validation points")

    results, panels = {}, []
    runs = [
        ("linear classifier", models.logistic_regression(2), optax.adam(0.05)),
        (
            f"one hidden layer ({hidden} tanh)",
            models.mlp([hidden, 2], "tanh", "softmax"),
            optax.adam(0.01),
        ),
    ]
    for name, model, opt in runs:
        _, params = model.init(jax.random.key(seed), (-1, 2))

        def report(epoch, logs, name=name):
            if (epoch + 1) % max(1, epochs // 5) == 0:
                print(
                    f"  {name:>28s} epoch {epoch + 1:4d}: loss {logs['loss']:.4f}, "
                    f"val accuracy {logs['val_accuracy']:.3f}"
                )

        start = time.perf_counter()
        result = fit(
            model,
            params,
            x_tr,
            y_tr,
            optimizer=opt,
            epochs=epochs,
            batch_size=100,
            key=seed,
            validation_data=(x_val, y_val),
            scan=True,
            callback=report,
            progress=False,
        )
        acc = result.history["val_accuracy"][-1]
        print(f"{name}: validation accuracy {acc:.3f} ({time.perf_counter() - start:.1f} s)")
        results[name] = acc
        panels.append(
            (f"{name}: {acc:.1%}", lambda pts, m=model, p=result.params: m.predict(p, pts))
        )

    from . import plot

    path = plot.side_by_side(panels, x, y, out / "decision_regions.png")
    print(f"decision regions saved to {path}")
    return {"accuracies": results, "picture": path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m funcnn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="the 2-D demo: linear classifier vs one tanh layer")
    p_demo.add_argument("--out", default="funcnn-demo", help="output folder (default: %(default)s)")
    p_demo.add_argument("--quick", action="store_true", help="fewer epochs, for a smoke test")
    p_demo.add_argument("--seed", type=int, default=0)
    p_play = sub.add_parser("playground", help="the interactive 2-D page, served on loopback")
    p_play.add_argument("--port", type=int, default=8000, help="0: a free port (default: 8000)")
    p_play.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default: %(default)s)"
    )
    p_play.add_argument("--quiet", action="store_true", help="do not log every request")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, quick=args.quick, seed=args.seed)
    elif args.command == "playground":
        from .playground import check_loopback, serve

        try:
            check_loopback(args.host)
        except ValueError as e:
            parser.error(str(e))
        try:
            serve(args.host, args.port, verbose=not args.quiet)
        except OSError as e:
            parser.exit(1, f"playground: cannot listen on {args.host}:{args.port}: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
