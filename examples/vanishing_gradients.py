"""Vanishing gradients in a 20-layer network, and what cures them.

Backpropagation multiplies, layer after layer, by ``Wᵀ diag(f'(a))``. With the sigmoid,
``f' = σ(1 − σ) ≤ 1/4``, so after 19 layers the first layer's gradient is about
``4⁻¹⁹ ≈ 10⁻¹²`` of the last layer's: the first layers do not learn. Four 20-layer networks
on the two moons, each printed with ``‖∂L/∂θ_first‖ / ‖∂L/∂θ_last‖`` at initialization:

* sigmoid, Xavier initialization: the ratio is ~10⁻¹²;
* tanh, Xavier: ``tanh' ≤ 1`` and ``tanh'(0) = 1``, so the gradient survives;
* ReLU with He initialization N(0, 2/fan_in): ``ReLU' ∈ {0, 1}`` and the variance is kept;
* sigmoid with residual connections ``h ← h + W σ(h) + b``: the identity path carries the
  gradient back unchanged (each branch starts small, N(0, 1/(width·blocks)), so the
  stream's size stays level).

Then (without ``--quick``) each is trained for a while to show who learns.

    python examples/vanishing_gradients.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
import optax

from funcnn import data, inspect, losses, plot
from funcnn.core import Layer, named, residual, serial
from funcnn.initializers import normal
from funcnn.layers import Dense, Relu, Sigmoid, Tanh
from funcnn.train import fit

KINDS = {
    "sigmoid": "sigmoid, Xavier",
    "tanh": "tanh, Xavier",
    "relu_he": "ReLU, He",
    "residual": "sigmoid + residual connections",
}


def toy_data(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two moons, each feature standardized to mean 0 and variance 1."""
    x, y = data.moons(n, key=seed)
    return (x - x.mean(axis=0)) / x.std(axis=0), y


def build(kind: str, depth: int = 20, width: int = 32, classes: int = 2) -> Layer:
    """A ``depth``-layer network (``depth`` Dense layers) of the given kind.

    Layers are named ``layer_00`` ... so that their gradient norms read in order.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if kind == "residual":
        branch_init = normal((width * (depth - 2)) ** -0.5)
        layers = [named("layer_00", Dense(width, w_init="xavier_normal"))]
        for i in range(1, depth - 1):
            layers.append(
                named(f"layer_{i:02d}", residual(Sigmoid(), Dense(width, w_init=branch_init)))
            )
    else:
        activation, init = {
            "sigmoid": (Sigmoid, "xavier_normal"),
            "tanh": (Tanh, "xavier_normal"),
            "relu_he": (Relu, "he_normal"),
        }[kind]
        layers = []
        for i in range(depth - 1):
            layers += [named(f"layer_{i:02d}", Dense(width, w_init=init)), activation()]
    layers.append(named(f"layer_{depth - 1:02d}", Dense(classes, w_init="xavier_normal")))
    return serial(*layers)


def layer_norms(kind: str, x, y, *, depth: int = 20, width: int = 32, seed: int = 0) -> dict:
    """``{layer: ‖∂L/∂θ_layer‖}`` of a freshly initialized network, on the batch ``(x, y)``."""
    net = build(kind, depth, width)
    _, params = net.init(jax.random.key(seed), (-1, x.shape[1]))

    def loss(p, batch):
        return losses.softmax_cross_entropy(net.apply(p, batch[0]), batch[1])

    return inspect.grad_norms(loss, params, (x, y))


def first_to_last(norms: dict) -> float:
    """``‖∂L/∂θ_first‖ / ‖∂L/∂θ_last‖``: how much of the gradient reaches the first layer."""
    values = list(norms.values())
    return values[0] / values[-1]


def _train_all(x, y, *, epochs: int, seed: int, out: Path) -> None:
    """Train each network with Adam and plot the training losses."""
    curves = {}
    for kind, title in KINDS.items():
        net = build(kind)
        _, params = net.init(jax.random.key(seed), (-1, x.shape[1]))
        result = fit(
            net,
            params,
            x,
            y,
            loss=losses.softmax_cross_entropy,
            optimizer=optax.adam(1e-3),
            epochs=epochs,
            batch_size=64,
            key=seed,
            metrics={"accuracy": losses.accuracy},
            progress=False,
        )
        curves[title] = result.history["loss"]
        print(f"{title:<34} trained {epochs} epochs: accuracy {result.history['accuracy'][-1]:.2f}")
    plot.curves(curves, out / "training_loss.png", title="training loss", logy=True)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    parser.add_argument("--out", default="out/vanishing_gradients", help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    x, y = toy_data(256, args.seed)

    panels = {}
    print(f"{'network (20 layers)':<34} {'‖∂L/∂θ_first‖ / ‖∂L/∂θ_last‖':>30}")
    for kind, title in KINDS.items():
        norms = layer_norms(kind, x, y, seed=args.seed)
        panels[title] = norms
        print(f"{title:<34} {first_to_last(norms):>30.3e}")
    plot.grad_norms(panels, out / "grad_norms.png", title="gradient norm per layer at init")

    if args.quick:
        print("--quick: training skipped (run without --quick to train each network)")
    else:
        _train_all(x, y, epochs=200, seed=args.seed, out=out)
    print(f"pictures saved in {out}")
    return out


if __name__ == "__main__":
    main()
