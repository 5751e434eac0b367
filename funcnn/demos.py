"""The lecture's demos, shared by ``python -m funcnn demo`` and the examples.

* :func:`classify2d`: a logistic regression (a linear classifier) and a network with one
  tanh hidden layer trained on a 2-D toy set, their decision regions saved side by side.
* :func:`cnn_demo`: the parameter count of a perceptron against a convolution on a 32×32
  image, then a LeNet-style CNN trained on the 8×8 digits, its filters and feature maps
  saved.
* :func:`demo`: the first on the two spirals, then the second.

Each prints as it goes and returns what it measured and the paths of its pictures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import optax

from . import data, inspect, models, plot, train
from .core import serial
from .layers import Conv, Dense, Flatten

__all__ = ["demo", "classify2d", "cnn_demo"]


def classify2d(
    out: str | Path = "funcnn-demo",
    *,
    dataset: str = "spirals",
    hidden: int = 64,
    epochs: int | None = None,
    quick: bool = False,
    seed: int = 0,
    verbose: bool = True,
    resolution: int = 200,
) -> dict:
    """The lecture's 2-D demo: a linear classifier beside one tanh hidden layer.

    Trains ``models.logistic_regression`` (``y = σ(wᵀx + b)``, Adam 0.05) and
    ``models.mlp([hidden, 2], "tanh")`` (``softmax(W₂ tanh(W₁x + b₁) + b₂)``, Adam 0.01) on
    1,000 points of a toy set (80% for training), minibatches of 100, each epoch one
    compiled scan; prints both validation accuracies and saves their decision regions side
    by side as ``out/decision_regions.png``.

    Returns ``{"accuracies": {model name: validation accuracy}, "picture": path}``.
    """
    if dataset not in data.TOY_SETS:
        raise ValueError(f"classify2d: dataset must be one of {sorted(data.TOY_SETS)}")
    out = Path(out)
    epochs = epochs or (60 if quick else 300)
    x, y = data.TOY_SETS[dataset](1000, key=seed)
    (x_tr, y_tr), (x_val, y_val) = data.train_val_split(x, y, 0.2, key=seed + 1)
    print(f"{dataset}: {len(x_tr)} training and {len(x_val)} validation points")
    runs = [
        ("linear classifier", models.logistic_regression(2), optax.adam(0.05)),
        (
            f"one hidden layer ({hidden} tanh)",
            models.mlp([hidden, 2], "tanh", "softmax"),
            optax.adam(0.01),
        ),
    ]
    results, panels = {}, []
    for name, model, optimizer in runs:
        report = _progress(name, epochs, verbose)
        acc, params, seconds = _train_2d(
            model, optimizer, (x_tr, y_tr), (x_val, y_val), epochs, seed, report
        )
        print(f"{name}: validation accuracy {acc:.3f} ({seconds:.1f} s)")
        results[name] = acc
        panels.append((f"{name}: {acc:.1%}", lambda pts, m=model, p=params: m.predict(p, pts)))
    path = plot.side_by_side(panels, x, y, out / "decision_regions.png", resolution=resolution)
    print(f"decision regions saved to {path}")
    return {"accuracies": results, "picture": path}


def _train_2d(model, optimizer, train_set, val_set, epochs, seed, callback):
    """Train one model of :func:`classify2d`; returns its validation accuracy, its params
    and the seconds of training."""
    _, params = model.init(jax.random.key(seed), (-1, 2))
    x_tr, y_tr = train_set
    start = time.perf_counter()
    result = train.fit(
        model,
        params,
        x_tr,
        y_tr,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=100,
        key=seed,
        validation_data=val_set,
        scan=True,
        callback=callback,
        progress=False,
    )
    seconds = time.perf_counter() - start
    return result.history["val_accuracy"][-1], result.params, seconds


def _progress(name: str, epochs: int, verbose: bool) -> Callable[[int, dict], None]:
    """A ``fit`` callback that prints the loss and accuracy five times in a run (when
    ``verbose``)."""

    def report(epoch: int, logs: dict) -> None:
        if verbose and (epoch + 1) % max(1, epochs // 5) == 0:
            print(
                f"  {name:>28s} epoch {epoch + 1:4d}: loss {logs['loss']:.4f}, "
                f"val accuracy {logs['val_accuracy']:.3f}"
            )

    return report


def demo(out: str | Path = "funcnn-demo", *, quick: bool = False, seed: int = 0) -> dict:
    """The 2-D demo (:func:`classify2d` on the two spirals), then :func:`cnn_demo`.

    Returns a dict with both validation accuracies, the picture's path and the CNN's results.
    """
    result = classify2d(out, quick=quick, seed=seed)
    try:
        cnn = cnn_demo(out, quick=quick, seed=seed)
    except ImportError as err:  # scikit-learn (the digits) is an optional extra
        print(f"skipping the CNN part: {err}")
        cnn = None
    return {**result, "cnn": cnn}


def cnn_demo(out: str | Path = "funcnn-demo", *, quick: bool = False, seed: int = 0) -> dict:
    """Why a perceptron does not suit images, then a LeNet-style CNN on the 8×8 digits.

    Prints the summaries of a 1024-unit dense layer and of a 5×5 convolution with 16
    filters over a 32×32 grayscale image (1024 · 1024 = 1,048,576 weights against
    5 · 5 · 16 = 400), trains a LeNet-style CNN (``models.lenet5`` with ReLU, max pooling,
    "SAME" padding, 16 and 32 filters of 3×3) on 80% of the 1,797 digits and saves the
    training curves, the first-layer filters and the feature maps of one validation digit
    after each convolution. The full run reaches about 98-99% validation accuracy.

    Returns a dict with the validation accuracy, the seconds of training, and the
    pictures' paths.
    """
    _perceptron_against_convolution()
    x, y = data.digits()
    (x_tr, y_tr), (x_val, y_val) = data.train_val_split(x, y, 0.2, key=seed)
    print(f"\n8×8 digits: {len(x_tr)} training and {len(x_val)} validation images")
    model = models.lenet5(activation="relu", pool="max", padding="SAME", filters=(16, 32), kernel=3)
    _, params = model.init(jax.random.key(seed), (-1, 8, 8, 1))
    print(inspect.summary(model, (-1, 8, 8, 1)))
    epochs = 3 if quick else 30
    start = time.perf_counter()
    result = train.fit(
        model,
        params,
        x_tr,
        y_tr,
        optimizer=optax.adam(3e-3),
        epochs=epochs,
        batch_size=64,
        key=seed,
        validation_data=(x_val, y_val),
        scan=True,
        progress=False,
    )
    seconds = time.perf_counter() - start
    acc = result.history["val_accuracy"][-1]
    print(f"LeNet-style CNN: validation accuracy {acc:.3f} after {epochs} epochs ({seconds:.1f} s)")
    pictures = _cnn_pictures(Path(out), model, result, x_val[0], y_val[0])
    return {"val_accuracy": acc, "seconds": seconds, "pictures": pictures}


def _perceptron_against_convolution() -> None:
    """Print the summaries of a 1024-unit dense layer and of sixteen 5×5 filters over a
    32×32 grayscale image: 1024 · 1024 = 1,048,576 weights against 5 · 5 · 16 = 400."""
    image = (-1, 32, 32, 1)
    perceptron = serial(Flatten(), Dense(1024, use_bias=False))
    conv = serial(Conv(16, 5, padding="SAME", use_bias=False))
    print("\nwhy a perceptron does not suit images: a 32×32 grayscale image")
    print(inspect.summary(perceptron, image))
    print(inspect.summary(conv, image))


def _cnn_pictures(out: Path, model, result, image, label) -> dict[str, Any]:
    """Save the CNN's training curves, first-layer filters and the feature maps of
    ``image``; print and return their paths."""
    maps = inspect.feature_maps(model, result.params, image[None])
    pictures = {
        "curves": plot.curves(
            result.history, out / "cnn_curves.png", keys=["loss", "val_loss"], title="LeNet-5"
        ),
        "filters": plot.filters(result.params["c1"]["w"], out / "cnn_filters.png", columns=8),
        "feature_maps": plot.feature_maps(
            maps, out / "cnn_feature_maps.png", image=image, title=f"digit {label}"
        ),
    }
    for name, path in pictures.items():
        print(f"{name.replace('_', ' ')} saved to {path}")
    return pictures
