"""A deep plain network against the same depth with residual connections and BatchNorm.

Two convolutional networks of ``6·blocks + 2`` layers (50 by default) on the 8×8 digits,
both ``models.resnet`` (He et al.'s CIFAR form: 3×3 convolutions, ReLU, He initialization,
three stages on 8×8, 4×4 and 2×2 maps):

* plain: ``resnet(shortcut=False, batch_norm=False)``, every block ``y = relu(F(x))``;
* residual: ``resnet()``, every block ``y = relu(F(x) + S(x))`` (``S`` the identity but
  where a stage starts) with BatchNorm after every convolution: a stateful model, whose
  running statistics are its state.

It prints ``‖∂L/∂θ_l‖`` of every layer at initialization (the layer's convolution and, in
the residual network, its BatchNorm's γ and β; the two 1×1 projections of the shortcuts,
off the main path, are left out), each network's ratio first / last and the RMS of its
logits at initialization, the same two numbers for each change alone (shortcuts without
BatchNorm, BatchNorm without shortcuts; not trained), then trains the two networks with
``fit`` (SGD with momentum by default) and prints their final accuracies in evaluation
mode. Saves ``grad_norms.png`` and ``training_curves.png``.

    python examples/residual_networks.py [--quick] [--out DIR] [--blocks N] [--epochs N]
                                         [--optimizer {sgd,adam}]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import funcnn  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
import optax

from funcnn import data, inspect, plot
from funcnn.core import Model
from funcnn.models import resnet
from funcnn.train import evaluate, fit

NETWORKS = {"plain": "plain, no BatchNorm", "residual": "residual + BatchNorm"}
ALONE = {"shortcuts": "shortcuts, no BatchNorm", "batch_norm": "BatchNorm, no shortcuts"}
ARCHITECTURES = {  # kind: (shortcut, batch_norm)
    "plain": (False, False),
    "residual": (True, True),
    "shortcuts": (True, False),
    "batch_norm": (False, True),
}
COLORS = {"plain": "#c0392b", "residual": "#2471a3"}
OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.05, momentum=0.9),
    "adam": lambda: optax.adam(1e-3),
}


def build(kind: str, blocks: int) -> Model:
    """``resnet`` of ``6·blocks + 2`` layers: plain, residual with BatchNorm, or one change
    alone (``"shortcuts"`` without BatchNorm, ``"batch_norm"`` without shortcuts)."""
    if kind not in ARCHITECTURES:
        raise ValueError(f"kind must be one of {sorted(ARCHITECTURES)}, got {kind!r}")
    shortcut, batch_norm = ARCHITECTURES[kind]
    return resnet(10, blocks=blocks, shortcut=shortcut, batch_norm=batch_norm)


def digits_split(seed: int = 0):
    """The 8×8 digits, split 80 / 20: ``(x_train, y_train), (x_val, y_val)``."""
    x, y = data.digits()
    return data.train_val_split(x, y, 0.2, key=seed)


def main_path(norms: dict[str, float]) -> dict[str, float]:
    """Per-parameter-path norms gathered into one norm per layer of the main path.

    ``stage_0_block_0/residual_0/a/conv`` and ``.../a/bn`` become the layer
    ``stage_0_block_0/a`` (``√(‖conv‖² + ‖bn‖²)``), the name the plain network gives the
    same layer; the shortcuts' projections are dropped.
    """
    squares: dict[str, float] = {}
    for path, norm in norms.items():
        if "/shortcut/" in path:
            continue
        layer = path.replace("/residual_0/", "/")
        if layer.endswith(("/conv", "/bn")):
            layer = layer.rsplit("/", 1)[0]
        squares[layer] = squares.get(layer, 0.0) + norm**2
    return {layer: float(np.sqrt(s)) for layer, s in squares.items()}


def layer_norms(kind: str, x, y, *, blocks: int, seed: int = 0) -> dict[str, float]:
    """``{layer: ‖∂L/∂θ_layer‖}`` at initialization on the batch ``(x, y)``, input first.

    The loss is taken in training mode, as the first training step sees it (BatchNorm
    normalizes with the batch's own statistics).
    """
    model = build(kind, blocks)
    _, params, state = model.init_with_state(jax.random.key(seed), (-1, *x.shape[1:]))

    def loss(p, batch):
        logits, _ = model.apply_with_state(p, state, batch[0], train=True)
        return model.loss(logits, batch[1])

    return main_path(inspect.grad_norms(loss, params, (x, y)))


def logit_scale(kind: str, x, *, blocks: int, seed: int = 0) -> float:
    """``√(mean z²)`` of the logits ``z`` at initialization: how much signal reaches the top."""
    model = build(kind, blocks)
    _, params, state = model.init_with_state(jax.random.key(seed), (-1, *x.shape[1:]))
    logits, _ = model.apply_with_state(params, state, x, train=True)
    return float(np.sqrt(np.mean(np.square(logits))))


def first_to_last(norms: dict[str, float]) -> float:
    """``‖∂L/∂θ_first‖ / ‖∂L/∂θ_last‖``: how much of the gradient reaches the first layer."""
    values = list(norms.values())
    return values[0] / values[-1]


def train(kind: str, train_data, val_data, *, blocks: int, epochs: int, optimizer, seed: int):
    """Train one network with ``fit``, its state beside the params: ``(model, FitResult)``."""
    model = build(kind, blocks)
    x, y = train_data
    _, params, state = model.init_with_state(jax.random.key(seed), (-1, *x.shape[1:]))
    return model, fit(
        model,
        params,
        x,
        y,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=64,
        key=seed,
        validation_data=val_data,
        state=state,
        progress=False,
    )


def plot_grad_norms(norms: dict[str, dict[str, float]], path: Path, *, blocks: int) -> Path:
    """Both networks' ``‖∂L/∂θ_l‖`` against the layer, on one logarithmic axis."""
    plt = plot.require_matplotlib()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for kind, values in norms.items():
        layers = np.arange(1, len(values) + 1)
        ax.plot(layers, list(values.values()), "o-", ms=3, color=COLORS[kind], label=NETWORKS[kind])
    depth = 6 * blocks + 2
    for stage, size in enumerate(["8×8", "4×4", "2×2"]):
        start = 2 + 2 * blocks * stage  # the first convolution of the stage
        ax.axvline(start - 0.5, color="0.6", linestyle=":", linewidth=1)
        ax.text(
            start,
            1.0,
            f"stage {stage}: {size}",
            transform=ax.get_xaxis_transform(),
            va="top",
            fontsize=8,
            color="0.35",
        )
    ax.set_yscale("log")
    ax.set_xlim(0, depth + 1)
    ax.set_xlabel(f"layer (1: first convolution, at the input; {depth}: dense output)")
    ax.set_ylabel("‖∂L/∂θ‖ of the layer at initialization")
    ax.set_title(f"gradient norm per layer, {depth}-layer networks on the 8×8 digits")
    ax.legend(loc="lower right", fontsize=9)
    return plot.save(fig, path)


def plot_training(histories: dict[str, dict[str, list[float]]], path: Path) -> Path:
    """Loss and accuracy per epoch, training (solid) and validation (dashed), both networks,
    with the chance level of ten classes dotted."""
    plt = plot.require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    chance = {"loss": (np.log(10), "chance, ln 10 ≈ 2.30"), "accuracy": (0.1, "chance, 0.1")}
    for ax, metric, label in zip(axes, ["loss", "accuracy"], ["cross-entropy loss", "accuracy"]):
        level, text = chance[metric]
        ax.axhline(level, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(
            text,
            (0.98, level),
            xycoords=("axes fraction", "data"),
            xytext=(0, 4),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="0.35",
        )
        for kind, history in histories.items():
            epochs = np.arange(1, len(history[metric]) + 1)
            name, color = NETWORKS[kind], COLORS[kind]
            ax.plot(epochs, history[metric], "-", color=color, label=f"{name}, training")
            ax.plot(
                epochs, history[f"val_{metric}"], "--", color=color, label=f"{name}, validation"
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_xlim(1, max(len(h[metric]) for h in histories.values()))
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8, loc="center right")
    return plot.save(fig, path)


def print_norms(norms: dict[str, dict[str, float]], scales: dict[str, float]) -> None:
    """The two networks' per-layer table, then every network's first / last ratio and its
    logits' scale, the two changes alone last."""
    plain, residual = norms["plain"], norms["residual"]
    print(f"‖∂L/∂θ_l‖ at initialization, {len(plain)} layers, input first")
    print(f"{'layer':<24} {NETWORKS['plain']:>20} {NETWORKS['residual']:>22}")
    for layer in plain:
        print(f"{layer:<24} {plain[layer]:>20.2e} {residual[layer]:>22.2e}")
    print(f"{'network':<24} {'‖∂L/∂θ_first‖ / ‖∂L/∂θ_last‖':>28} {'logits at init, RMS':>20}")
    for kind, name in {**NETWORKS, **ALONE}.items():
        if kind in ALONE and kind == next(iter(ALONE)):
            print("each change alone (not trained):")
        print(f"{name:<24} {first_to_last(norms[kind]):>28.2e} {scales[kind]:>20.2e}")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="14 layers, 2 epochs: seconds")
    parser.add_argument("--out", default="out/residual_networks", help="folder for the PNGs")
    parser.add_argument("--blocks", type=int, default=8, help="blocks per stage (depth 6·N+2)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default="sgd",
        help="sgd: SGD, rate 0.05, momentum 0.9; adam: Adam, rate 1e-3",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    blocks, epochs = (2, 2) if args.quick else (args.blocks, args.epochs)
    out = Path(args.out)
    (x_train, y_train), (x_val, y_val) = digits_split(args.seed)

    norms = {
        k: layer_norms(k, x_train, y_train, blocks=blocks, seed=args.seed) for k in ARCHITECTURES
    }
    scales = {k: logit_scale(k, x_train, blocks=blocks, seed=args.seed) for k in ARCHITECTURES}
    print_norms(norms, scales)
    plot_grad_norms({k: norms[k] for k in NETWORKS}, out / "grad_norms.png", blocks=blocks)

    splits = {"train": (x_train, y_train), "val": (x_val, y_val)}
    histories = {}
    for kind, name in NETWORKS.items():
        model, result = train(
            kind,
            splits["train"],
            splits["val"],
            blocks=blocks,
            epochs=epochs,
            optimizer=OPTIMIZERS[args.optimizer](),
            seed=args.seed,
        )
        final = {
            part: evaluate(model, result.params, x, y, state=result.state)["accuracy"]
            for part, (x, y) in splits.items()
        }
        histories[kind] = result.history
        print(
            f"{name:<24} {args.optimizer}, {epochs} epochs: "
            f"train accuracy {final['train']:.3f}, val accuracy {final['val']:.3f}"
        )
    plot_training(histories, out / "training_curves.png")
    print(f"pictures saved in {out}")
    return out


if __name__ == "__main__":
    main()
