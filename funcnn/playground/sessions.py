"""The playground's training sessions: a trainer per model, compiled once per shape.

The page keeps the points; a :class:`Session` keeps, for every model it created, a
:class:`Trainer` with its params and optax state. Each update runs

* ``steps`` training steps ``θ ← update(θ, ∇L(θ))`` as ONE jit-compiled ``lax.scan`` over
  :func:`funcnn.train.train_step`, on the current points (full batch, or minibatches drawn
  with replacement), then
* the model's ``predict`` on a ``grid × grid`` lattice over the view, the masked loss
  ``L = Σ_i w_i l_i / Σ_i w_i`` and the accuracy on the points.

The points are padded to a bucket size (64, 128, ..., 8192) with a weight mask
``w_i ∈ {0, 1}``, so adding a point does not trigger a recompilation; the learning rate
lives in the optimizer's state (``optax.inject_hyperparams``), so changing it does not
either.
"""

from __future__ import annotations

import functools
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import data, models
from ..compiler import jit as compile_jit
from ..train import train_step
from . import fields
from .fields import LIMITS, RequestError

__all__ = ["OPTIMIZERS", "ModelConfig", "Trainer", "Session", "bucket", "compiled"]

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": functools.partial(optax.sgd, momentum=0.9),
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
}
ACTIVATIONS = ("tanh", "relu", "sigmoid")
MODELS = ("logistic", "mlp")
BUCKETS = tuple(64 * 2**i for i in range(8))  # 64 ... 8192 >= LIMITS["points"]


def bucket(n: int) -> int:
    """The smallest bucket size ``≥ n`` (the padded number of points).

    >>> bucket(1), bucket(65), bucket(5000)
    (64, 128, 8192)
    """
    return next(b for b in BUCKETS if b >= n)


@dataclass(frozen=True)
class ModelConfig:
    """What fixes a model's compiled step: architecture and optimizer (not the lr).

    ``model="logistic"`` is ``y = σ(wᵀx + b)``; ``model="mlp"`` has ``layers`` hidden
    layers ``h = f(W h_prev + b)`` of ``width`` units and a softmax head over 2 classes.
    """

    model: str = "mlp"
    layers: int = 1
    width: int = 16
    activation: str = "tanh"
    optimizer: str = "adam"

    @classmethod
    def from_request(cls, body: Mapping) -> ModelConfig:
        """Validate the fields of a ``/api/model`` request (a ValueError names the field)."""
        model = fields.choice(body, "model", MODELS)
        if model == "logistic":
            return cls(model, 0, 0, "none", fields.choice(body, "optimizer", tuple(OPTIMIZERS)))
        return cls(
            model,
            fields.integer(body, "layers", *LIMITS["layers"], default=1),
            fields.integer(body, "width", *LIMITS["width"], default=16),
            fields.choice(body, "activation", ACTIVATIONS, default="tanh"),
            fields.choice(body, "optimizer", tuple(OPTIMIZERS)),
        )

    def build(self):
        """The funcnn model: ``logistic_regression(2)`` or ``mlp([width]*layers + [2])``."""
        if self.model == "logistic":
            return models.logistic_regression(2)
        return models.mlp([self.width] * self.layers + [2], self.activation, "softmax")

    def describe(self) -> str:
        if self.model == "logistic":
            return f"logistic regression, {self.optimizer}"
        return f"MLP {self.layers}×{self.width} {self.activation}, {self.optimizer}"


def _per_example(head: str, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example cross-entropy ``l_i`` and correctness ``[ŷ_i = ỹ_i]`` for a 2-class head."""
    if head == "sigmoid":
        z = logits[:, 0]
        loss = optax.losses.sigmoid_binary_cross_entropy(z, labels.astype(z.dtype))
        return loss, (z > 0) == (labels == 1)
    loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss, jnp.argmax(logits, axis=-1) == labels


def _masked_loss(head: str) -> Callable:
    """``L(outputs, (ỹ, w)) = Σ_i w_i l_i / max(Σ_i w_i, 1)``: padding rows have ``w_i = 0``."""

    def loss(outputs, target):
        labels, weights = target
        per, _ = _per_example(head, outputs, labels)
        return jnp.sum(weights * per) / jnp.maximum(jnp.sum(weights), 1.0)

    return loss


def _optimizer(name: str, lr: float) -> optax.GradientTransformation:
    return optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=lr)


@functools.lru_cache(maxsize=64)
def compiled(config: ModelConfig, steps: int, batch_size: int | None) -> Callable:
    """One jitted update ``(params, opt_state, x, y, w, n, key, grid) -> ...`` per config.

    It runs ``steps`` steps of :func:`funcnn.train.train_step` in a ``lax.scan`` (full
    batch with the mask ``w``, or ``batch_size`` indices drawn uniformly from ``[0, n)``),
    then returns the new params and state, the masked loss and accuracy on all points, and
    the probability of class 1 on the grid. ``jax.jit`` keeps one executable per padded
    bucket size, so a new point reuses it.

    >>> config = ModelConfig("logistic", 0, 0, "none", "sgd")
    >>> compiled(config, 5, None) is compiled(config, 5, None)  # one per config and shape
    True
    """
    model = config.build()
    loss = _masked_loss(model.head)
    step = train_step(model.apply, loss, _optimizer(config.optimizer, 0.1), jit=False)

    def update(params, opt_state, x, y, w, n, key, grid):
        def body(carry, k):
            p, o = carry
            if batch_size is None:
                batch = (x, (y, w))
            else:
                idx = jax.random.randint(k, (batch_size,), 0, jnp.maximum(n, 1))
                batch = (x[idx], (y[idx], w[idx]))
            p, o, logs = step(p, o, batch)
            return (p, o), logs["loss"]

        keys = jax.random.split(key, steps)
        (params, opt_state), _ = jax.lax.scan(body, (params, opt_state), keys)
        per, correct = _per_example(model.head, model.apply(params, x), y)
        total = jnp.maximum(jnp.sum(w), 1.0)
        probs = model.predict(params, grid)[:, -1]
        return params, opt_state, jnp.sum(w * per) / total, jnp.sum(w * correct) / total, probs

    return compile_jit(update)


def _grid(extent: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The ``size × size`` lattice, row-major from the top row (``y = ymax``) down.

    Point ``(i, j)`` is ``(xs[j], ys[i])`` with ``xs`` from ``xmin`` to ``xmax`` and ``ys``
    from ``ymax`` to ``ymin`` at pixel centres, so that row ``i`` is the image's row ``i``.
    """
    xmin, xmax, ymin, ymax = extent
    xs = xmin + (np.arange(size) + 0.5) * (xmax - xmin) / size
    ys = ymax - (np.arange(size) + 0.5) * (ymax - ymin) / size
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


class Trainer:
    """One model being trained: its config, params, optax state and step count, under a lock.

    >>> t = Trainer(ModelConfig("mlp", 1, 8, "tanh", "adam"), lr=0.01, seed=0)
    >>> out = t.update(np.zeros((2, 2), np.float32), np.array([0, 1]), steps=5)
    >>> out["steps_done"], len(out["probs"])
    (5, 2500)
    """

    def __init__(self, config: ModelConfig, *, lr: float, seed: int = 0):
        self.config = config
        self.model = config.build()
        _, self.params = self.model.init(jax.random.key(seed), (-1, 2))
        self.opt_state = _optimizer(config.optimizer, lr).init(self.params)
        self.key = jax.random.key(seed + 1)
        self.steps_done = 0
        self.lock = threading.Lock()

    def param_count(self) -> int:
        return sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(self.params))

    def update(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        steps: int = 20,
        lr: float | None = None,
        batch_size: int | None = None,
        grid: int = 50,
        extent: tuple[float, float, float, float] = (-1.5, 1.5, -1.5, 1.5),
    ) -> dict[str, Any]:
        """Train ``steps`` steps on ``(x, y)`` (``x`` ``(n, 2)``, ``y`` ``(n,)`` in {0, 1}),
        then predict ``P(class 1)`` on the grid. With no points it only predicts."""
        n = len(x)
        size = bucket(n)
        xp = np.zeros((size, 2), np.float32)
        yp = np.zeros(size, np.int32)
        wp = np.zeros(size, np.float32)
        xp[:n], yp[:n], wp[:n] = x, y, 1.0
        steps = steps if n else 0
        fn = compiled(self.config, steps, batch_size)
        with self.lock:
            if lr is not None:
                hyper = dict(self.opt_state.hyperparams, learning_rate=jnp.float32(lr))
                self.opt_state = self.opt_state._replace(hyperparams=hyper)
            self.key, key = jax.random.split(self.key)
            self.params, self.opt_state, loss, acc, probs = fn(
                self.params, self.opt_state, xp, yp, wp, n, key, _grid(extent, grid)
            )
            self.steps_done += steps
            done = self.steps_done
        loss, acc = float(loss), float(acc)
        return {
            "steps_done": done,
            "n": n,
            "loss": loss if n and math.isfinite(loss) else None,
            "accuracy": acc if n else None,
            "diverged": bool(n) and not math.isfinite(loss),
            "grid": grid,
            "extent": list(extent),
            "probs": np.round(np.nan_to_num(np.asarray(probs, np.float64), nan=0.5), 4).tolist(),
        }


class Session:
    """The server's state: the trainers by id (at most ``LIMITS["models"]``, oldest dropped).

    Every method takes a request body (a dict parsed from JSON), validates it and returns a
    reply dict, or raises :class:`RequestError` naming the bad field.

    >>> session = Session()
    >>> model = session.create({"model": "logistic", "optimizer": "sgd", "lr": 0.5})
    >>> points = session.dataset({"name": "blobs", "n": 40})
    >>> reply = session.step({"id": model["id"], **points, "steps": 10, "grid": 20})
    >>> reply["steps_done"], len(reply["probs"]), reply["accuracy"] > 0.9
    (10, 400, True)
    >>> session.create({"model": "mlp", "width": 1000, "optimizer": "adam", "lr": 0.1})
    Traceback (most recent call last):
    ...
    funcnn.playground.fields.RequestError: width: must be in [1, 256], got 1000
    """

    def __init__(self, max_models: int = LIMITS["models"]):
        self.max_models = max_models
        self.trainers: OrderedDict[str, Trainer] = OrderedDict()
        self.lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """The choices the page offers and the limits the server checks."""
        return {
            "models": list(MODELS),
            "activations": list(ACTIVATIONS),
            "optimizers": list(OPTIMIZERS),
            "datasets": list(data.TOY_SETS),
            "limits": {k: list(v) if isinstance(v, tuple) else v for k, v in LIMITS.items()},
        }

    def create(self, body: Mapping) -> dict[str, Any]:
        """``/api/model``: a new trainer from ``model, layers, width, activation, optimizer,
        lr, seed``."""
        config = ModelConfig.from_request(body)
        lr = fields.lr(body)
        seed = fields.integer(body, "seed", 0, 2**31 - 1, default=0)
        trainer = Trainer(config, lr=lr, seed=seed)
        model_id = uuid.uuid4().hex[:12]
        with self.lock:
            self.trainers[model_id] = trainer
            while len(self.trainers) > self.max_models:
                self.trainers.popitem(last=False)
        return {
            "id": model_id,
            "description": config.describe(),
            "params": trainer.param_count(),
        }

    def step(self, body: Mapping) -> dict[str, Any]:
        """``/api/step``: train the model ``id`` on the points, predict on the grid."""
        model_id = fields.field(body, "id")
        with self.lock:
            trainer = self.trainers.get(model_id) if isinstance(model_id, str) else None
            if trainer is not None:
                self.trainers.move_to_end(model_id)
        if trainer is None:
            raise RequestError(f"id: no model {model_id!r} (reset to create one)", 404)
        x, y = fields.points(body)
        steps = fields.integer(body, "steps", *LIMITS["steps"], default=20)
        lr = fields.lr(body) if "lr" in body else None
        batch_size = body.get("batch_size")
        if batch_size is not None:
            batch_size = fields.integer(body, "batch_size", *LIMITS["batch_size"])
        grid = fields.integer(body, "grid", *LIMITS["grid"], default=50)
        extent = fields.extent(body)
        return trainer.update(
            x, y, steps=steps, lr=lr, batch_size=batch_size, grid=grid, extent=extent
        )

    def dataset(self, body: Mapping) -> dict[str, Any]:
        """``/api/dataset``: ``{"points", "labels"}`` of a toy set of :mod:`funcnn.data`."""
        name = fields.choice(body, "name", tuple(data.TOY_SETS))
        n = fields.integer(body, "n", *LIMITS["dataset_n"], default=200)
        seed = fields.integer(body, "seed", 0, 2**31 - 1, default=0)
        kwargs = {}
        if body.get("noise") is not None:
            noise = fields.number(body["noise"], "noise")
            if not 0.0 <= noise <= 1.0:
                raise RequestError(f"noise: must be in [0, 1], got {noise}")
            kwargs["std" if name == "blobs" else "noise"] = noise
        x, y = data.TOY_SETS[name](n, key=seed, **kwargs)
        return {"points": np.round(x.astype(np.float64), 5).tolist(), "labels": y.tolist()}
