"""Why not initialize with zeros, and why N(0, 1/fan_in) or Xavier.

1. Symmetry. If every weight starts equal (zeros, or any constant), every hidden unit of a
   layer computes the same function, receives the same gradient, and takes the same step:
   after any amount of training the units are still identical copies, and the layer is
   worth one unit. Random weights break the symmetry.
2. Scale. In a deep tanh network with N(0, 1) weights, ``Var(Wx) = fan_in · Var(x)`` and
   the units saturate at ±1 (where ``tanh' ≈ 0``); with N(0, 0.01²) the activations shrink
   by ~0.1 per layer towards 0. N(0, 1/fan_in) (the lecture's N(0, 1/dim W)) and Xavier,
   N(0, 2/(fan_in + fan_out)), keep ``Var(Wx) ≈ Var(x)``: the activation variance stays
   within an order of magnitude over 10 layers instead of vanishing or saturating.

    python examples/initialization.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import data, initializers, models, plot
from funcnn.train import fit

# (weights, biases)
SYMMETRY_INITS = {
    "zeros": (initializers.zeros, initializers.zeros),
    "constant 0.5": (initializers.constant(0.5), initializers.constant(0.5)),
    "Xavier (random)": (initializers.xavier_normal(), initializers.zeros),
}

SCALE_INITS = {
    "N(0, 0.01²)": initializers.normal(0.01),
    "N(0, 1)": initializers.standard_normal(),
    "N(0, 1/fan_in)": initializers.lecun_normal(),
    "Xavier": initializers.xavier_normal(),
}


# ------------------------------------------------------------------- symmetry


def train_symmetric(inits, *, hidden: int = 8, epochs: int = 30, seed: int = 0):
    """Train ``mlp([hidden, hidden, 2], "tanh")`` on the moons, initialized with
    ``inits = (w_init, b_init)`` (initializers of :mod:`funcnn.initializers`).

    Returns the trained params.
    """
    x, y = data.moons(200, key=seed)
    model = models.mlp([hidden, hidden, 2], "tanh", w_init="xavier_normal")
    _, params = model.init(jax.random.key(seed), (-1, 2))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 16))
    w_init, b_init = inits
    params = {
        name: {"w": w_init(next(keys), p["w"].shape), "b": b_init(next(keys), p["b"].shape)}
        for name, p in params.items()
    }
    result = fit(
        model,
        params,
        x,
        y,
        optimizer=optax.sgd(0.5),
        epochs=epochs,
        batch_size=50,
        key=seed,
        progress=False,
    )
    return result.params


def unit_spread(params) -> float:
    """How different the hidden units of a layer are: the largest gap between a unit's
    incoming weights and bias (a column of ``W`` and an entry of ``b``) and unit 0's, and
    between its outgoing weights (a row of the next ``W``) and unit 0's, over all hidden
    layers. Zero means every unit of every hidden layer is a copy of the first.
    """
    names = sorted(k for k in params if k.startswith("hidden_")) + ["output"]
    spread = 0.0
    for name, nxt in zip(names[:-1], names[1:]):
        w, b, w_next = params[name]["w"], params[name]["b"], params[nxt]["w"]
        spread = max(
            spread,
            float(jnp.max(jnp.abs(w - w[:, :1]))),
            float(jnp.max(jnp.abs(b - b[0]))),
            float(jnp.max(jnp.abs(w_next - w_next[:1, :]))),
        )
    return spread


# ---------------------------------------------------------------------- scale


def activation_stats(init, *, layers: int = 10, width: int = 256, n: int = 1000, seed: int = 0):
    """Forward ``n`` N(0, 1) inputs through ``layers`` tanh layers ``h ← tanh(h W)``.

    Returns ``(activations, variances, saturated)``: each layer's activations, their
    variance, and the fraction of units with ``|h| > 0.99``.
    """
    key = jax.random.key(seed)
    h = jax.random.normal(key, (n, width))
    acts = []
    for layer in range(layers):
        w = init(jax.random.fold_in(key, layer + 1), (width, width), jnp.float32)
        h = jnp.tanh(h @ w)
        acts.append(np.asarray(h))
    variances = [float(a.var()) for a in acts]
    saturated = [float(np.mean(np.abs(a) > 0.99)) for a in acts]
    return acts, variances, saturated


def _scale_pictures(stats: dict, out: Path) -> None:
    plt = plot.require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, (_, var, sat) in stats.items():
        layers = np.arange(1, len(var) + 1)
        axes[0].plot(layers, np.maximum(var, 1e-30), marker="o", label=name)
        axes[1].plot(layers, sat, marker="o", label=name)
    axes[0].set(yscale="log", xlabel="layer", ylabel="Var(h)", title="activation variance")
    axes[1].set(xlabel="layer", ylabel="fraction |h| > 0.99", title="saturated tanh units")
    axes[0].legend()
    plot.save(fig, out / "activation_variance.png")

    shown = [0, 3, 6, 9]
    fig, axes = plt.subplots(len(stats), len(shown), figsize=(3 * len(shown), 2.2 * len(stats)))
    for row, (name, (acts, _, _)) in zip(axes, stats.items()):
        for ax, layer in zip(row, shown):
            ax.hist(acts[layer].ravel(), bins=50, range=(-1, 1), color="#2c7fb8")
            ax.set_yticks([])
            ax.set_title(f"{name}, layer {layer + 1}", fontsize=9)
    plot.save(fig, out / "activation_histograms.png")


def _symmetry_picture(trained: dict, out: Path) -> None:
    plt = plot.require_matplotlib()
    fig, axes = plt.subplots(1, len(trained), figsize=(4 * len(trained), 3.5))
    for ax, (name, params) in zip(axes, trained.items()):
        w = np.asarray(params["hidden_1"]["w"])
        ax.imshow(w, cmap="RdBu", vmin=-np.abs(w).max() - 1e-9, vmax=np.abs(w).max() + 1e-9)
        ax.set(title=f"{name}: hidden_1 W after training", xlabel="unit", ylabel="input")
    plot.save(fig, out / "symmetry.png")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    parser.add_argument("--out", default="out/initialization", help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)

    trained = {}
    print(f"{'initialization':<18} {'max difference between hidden units':>38}")
    for name, init in SYMMETRY_INITS.items():
        trained[name] = train_symmetric(init, epochs=10 if args.quick else 100, seed=args.seed)
        print(f"{name:<18} {unit_spread(trained[name]):>38.3e}")
    _symmetry_picture(trained, out)

    width = 64 if args.quick else 256
    stats = {
        name: activation_stats(init, width=width, seed=args.seed)
        for name, init in SCALE_INITS.items()
    }
    print(f"\n{'initialization':<16} {'Var(h) layer 1':>15} {'layer 10':>10} {'saturated':>10}")
    for name, (_, var, sat) in stats.items():
        print(f"{name:<16} {var[0]:>15.3e} {var[-1]:>10.3e} {sat[-1]:>10.2f}")
    _scale_pictures(stats, out)
    print(f"pictures saved in {out}")
    return out


if __name__ == "__main__":
    main()
