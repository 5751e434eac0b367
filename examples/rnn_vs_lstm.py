"""Vanishing gradients through time: a plain RNN against an LSTM on a long-range task.

The task (``data.delayed_recall``): read ``T`` random symbols and, after the last one, name the
first. Backpropagation through time multiplies, step after step, by the Jacobian of the
recurrence: for the plain RNN ``∂h_t/∂h_{t−1} = diag(1 − h_t²) W_hᵀ``, whose product over many
steps shrinks geometrically, so the loss's gradient never reaches the first symbol; for the
LSTM the cell is carried by addition, ``∂c_t/∂c_{t−1} = diag(f_t)``, and stays near the
identity while the forget gate is open (here its bias starts at 3, ``σ(3)^100 ≈ 0.01``, where
the usual 1 gives ``σ(1)^100 ≈ 10⁻¹⁴``).

Printed: ``‖∂L/∂x_1‖ / ‖∂L/∂x_T‖`` at initialization, then the validation accuracy of each
network trained at a short and a long ``T`` (chance: 1/4) with Adam, the gradient's global norm
clipped at 1 (the guard against the opposite failure, exploding gradients). Saved: the
gradient norm reaching each step, ``‖∂L/∂x_t‖``, at initialization for both lengths, and the
validation accuracy curves.

    python examples/rnn_vs_lstm.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import data, losses, plot
from funcnn.core import Layer, named, serial
from funcnn.layers import LSTM, Dense, SimpleRNN
from funcnn.train import fit

KINDS = {"rnn": "SimpleRNN (tanh)", "lstm": "LSTM"}
SYMBOLS = 4


def build(kind: str, hidden: int = 32, classes: int = SYMBOLS) -> Layer:
    """The recurrent layer, its last output ``h_T`` only, then a dense head of logits."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if kind == "rnn":
        recurrent = SimpleRNN(hidden, return_sequence=False)
    else:
        recurrent = LSTM(hidden, return_sequence=False, forget_bias=3.0)
    return serial(named("recurrent", recurrent), named("head", Dense(classes)))


def step_gradients(net: Layer, params, x, y) -> np.ndarray:
    """``‖∂L/∂x_t‖`` for ``t = 1 … T``: the norm, over the batch and the features, of the
    gradient of the mean cross-entropy that reaches each step's input."""

    def loss(x):
        return losses.softmax_cross_entropy(net.apply(params, x), y)

    g = jax.jit(jax.grad(loss))(jnp.asarray(x))
    return np.sqrt(np.sum(np.square(np.asarray(g, np.float64)), axis=(0, 2)))


def train(kind: str, length: int, *, n: int, epochs: int, seed: int):
    """Train one network on ``delayed_recall`` of the given length: ``(params, history)``;
    the history holds the validation accuracy after each epoch."""
    x, y = data.delayed_recall(n, length, symbols=SYMBOLS, key=seed)
    val = data.delayed_recall(512, length, symbols=SYMBOLS, key=seed + 1)
    net = build(kind)
    _, params = net.init(jax.random.key(seed), (-1, length, SYMBOLS + 1))
    result = fit(
        net,
        params,
        x,
        y,
        loss=losses.softmax_cross_entropy,
        optimizer=optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
        epochs=epochs,
        batch_size=64,
        key=seed,
        validation_data=val,
        metrics={"accuracy": losses.accuracy},
        progress=False,
    )
    return result.params, result.history


def _gradient_picture(norms: dict, lengths: tuple, out: Path) -> None:
    plt = plot.require_matplotlib()
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.5 * len(lengths), 4), sharey=True)
    for ax, length in zip(axes, lengths):
        for kind, title in KINDS.items():
            ax.plot(np.arange(1, length + 1), np.maximum(norms[kind, length], 1e-30), label=title)
        ax.set(yscale="log", xlabel="time step t", title=f"at initialization, T = {length}")
    axes[0].set_ylabel("‖∂L/∂x_t‖")
    axes[0].legend()
    plot.save(fig, out / "grad_per_step.png")


def init_gradients(lengths: tuple, seed: int) -> dict:
    """``{(kind, T): ‖∂L/∂x_t‖ for t = 1 … T}`` of each fresh network on 256 sequences."""
    norms = {}
    for length in lengths:
        x, y = data.delayed_recall(256, length, symbols=SYMBOLS, key=seed + 2)
        for kind in KINDS:
            net = build(kind)
            _, params = net.init(jax.random.key(seed), (-1, length, SYMBOLS + 1))
            norms[kind, length] = step_gradients(net, params, x, y)
    return norms


def _table(title: str, values: dict, lengths: tuple, fmt: str) -> None:
    print(title)
    print(f"{'network':<18}" + "".join(f"{f'T = {t}':>12}" for t in lengths))
    for kind, name in KINDS.items():
        print(f"{name:<18}" + "".join(f"{values[kind, t]:>12{fmt}}" for t in lengths))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    parser.add_argument("--out", default="out/rnn_vs_lstm", help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    lengths, n, epochs = ((5, 20), 128, 2) if args.quick else ((20, 100), 2048, 40)
    norms = init_gradients(lengths, args.seed)
    ratios = {k: norms[k][0] / norms[k][-1] for k in norms}
    _table("‖∂L/∂x_1‖ / ‖∂L/∂x_T‖ at initialization", ratios, lengths, ".2e")
    accuracy, curves = {}, {}
    for kind, title in KINDS.items():
        for length in lengths:
            _, history = train(kind, length, n=n, epochs=epochs, seed=args.seed)
            accuracy[kind, length] = history["val_accuracy"][-1]
            curves[f"{title}, T = {length}"] = history["val_accuracy"]
    print()
    title = f"validation accuracy after {epochs} epochs (chance {1 / SYMBOLS:.2f})"
    _table(title, accuracy, lengths, ".2f")
    _gradient_picture(norms, lengths, out)
    plot.curves(curves, out / "accuracy.png", title="validation accuracy", ylabel="accuracy")
    print(f"pictures saved in {out}")
    return out


if __name__ == "__main__":
    main()
