"""The playground's server: a trainer per model and a small JSON API over ``http.server``.

The page (``static/index.html`` + ``static/app.js``) keeps the points; the server keeps,
for every model it created, the params and the optax state. Each ``/api/step`` request runs

* ``steps`` training steps ``θ ← update(θ, ∇L(θ))`` as ONE jit-compiled ``lax.scan`` over
  :func:`funcnn.train.train_step`, on the current points (full batch, or minibatches drawn
  with replacement), then
* the model's ``predict`` on a ``grid × grid`` lattice over the view, the masked loss
  ``L = Σ_i w_i l_i / Σ_i w_i`` and the accuracy on the points,

and sends them back as JSON. The points are padded to a bucket size (64, 128, ..., 8192)
with a weight mask ``w_i ∈ {0, 1}``, so adding a point does not trigger a recompilation;
the learning rate lives in the optimizer's state (``optax.inject_hyperparams``), so
changing it does not either.

Endpoints (all replies JSON except the static files):

* ``GET /``, ``GET /app.js``: the page.
* ``GET /api/info``: the choices and limits.
* ``POST /api/dataset`` ``{"name", "n", "seed", "noise"?}``: a toy set of :mod:`funcnn.data`.
* ``POST /api/model`` ``{"model", "layers", "width", "activation", "optimizer", "lr",
  "seed"}``: a fresh model; replies with its ``id``.
* ``POST /api/step`` ``{"id", "points", "labels", "steps", "lr", "batch_size", "grid",
  "extent"}``: train and predict.

A malformed request gets ``400 {"error": "<field>: ..."}``; an unknown path ``404``; an
unknown model id ``404``; any other failure ``500`` with its message, and the server goes on.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import data, models
from ..compiler import jit as _jit
from ..train import train_step

__all__ = [
    "LIMITS",
    "OPTIMIZERS",
    "ModelConfig",
    "RequestError",
    "Trainer",
    "Session",
    "PlaygroundServer",
    "check_loopback",
    "make_server",
    "serve",
]

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": functools.partial(optax.sgd, momentum=0.9),
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
}
ACTIVATIONS = ("tanh", "relu", "sigmoid")
MODELS = ("logistic", "mlp")
LIMITS = {
    "width": (1, 256),
    "layers": (1, 3),
    "lr": (0.0, 10.0),  # open below, closed above: (0, 10]
    "points": 5000,
    "steps": (0, 1000),
    "grid": (2, 100),
    "batch_size": (1, 5000),
    "dataset_n": (2, 5000),
    "coordinate": 1e3,
    "models": 32,
    "body_bytes": 2_000_000,
}
BUCKETS = tuple(64 * 2**i for i in range(8))  # 64 ... 8192 >= LIMITS["points"]


class RequestError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = int(status)


# --------------------------------------------------------------------------- validation


def _field(body: Mapping, name: str, default: Any = ...) -> Any:
    if name not in body:
        if default is ...:
            raise RequestError(f"{name}: missing field")
        return default
    return body[name]


def _int(body: Mapping, name: str, lo: int, hi: int, default: Any = ...) -> int:
    value = _field(body, name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(f"{name}: must be in [{lo}, {hi}], got {value}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name}: expected a finite number, got {value!r}")
    if not math.isfinite(value):
        raise RequestError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _lr(body: Mapping, default: Any = ...) -> float:
    lr = _number(_field(body, "lr", default), "lr")
    if not 0.0 < lr <= LIMITS["lr"][1]:
        raise RequestError(f"lr: the learning rate must be in (0, {LIMITS['lr'][1]:g}], got {lr!r}")
    return lr


def _choice(body: Mapping, name: str, options: tuple[str, ...], default: Any = ...) -> str:
    value = _field(body, name, default)
    if value not in options:
        raise RequestError(f"{name}: expected one of {list(options)}, got {value!r}")
    return value


def _points(body: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """The ``points`` ``[[x₁, x₂], ...]`` and their ``labels`` (0 or 1), checked."""
    points, labels = _field(body, "points"), _field(body, "labels")
    if not isinstance(points, list):
        raise RequestError(f"points: expected a list of [x, y] pairs, got {type(points).__name__}")
    if not isinstance(labels, list):
        raise RequestError(f"labels: expected a list of 0/1, got {type(labels).__name__}")
    if len(points) > LIMITS["points"]:
        raise RequestError(f"points: at most {LIMITS['points']} points, got {len(points)}")
    if len(labels) != len(points):
        raise RequestError(
            f"labels: expected {len(points)} labels (one per point), got {len(labels)}"
        )
    bound = LIMITS["coordinate"]
    for i, p in enumerate(points):
        if not isinstance(p, list) or len(p) != 2:
            raise RequestError(f"points[{i}]: expected a pair [x, y], got {p!r}")
        for v in p:
            if abs(_number(v, f"points[{i}]")) > bound:
                raise RequestError(f"points[{i}]: coordinates must be within ±{bound:g}, got {p}")
    for i, c in enumerate(labels):
        if isinstance(c, bool) or c not in (0, 1):
            raise RequestError(f"labels[{i}]: expected 0 or 1, got {c!r}")
    x = np.asarray(points, np.float32).reshape(len(points), 2)
    return x, np.asarray(labels, np.int32)


def _extent(body: Mapping) -> tuple[float, float, float, float]:
    value = _field(body, "extent", [-1.5, 1.5, -1.5, 1.5])
    if not isinstance(value, list) or len(value) != 4:
        raise RequestError(f"extent: expected [xmin, xmax, ymin, ymax], got {value!r}")
    xmin, xmax, ymin, ymax = (_number(v, "extent") for v in value)
    bound = LIMITS["coordinate"]
    if not (xmin < xmax and ymin < ymax) or max(map(abs, (xmin, xmax, ymin, ymax))) > bound:
        raise RequestError(
            f"extent: expected xmin < xmax and ymin < ymax within ±{bound:g}, got {value}"
        )
    return xmin, xmax, ymin, ymax


def _bucket(n: int) -> int:
    """The smallest bucket size ``≥ n`` (the padded number of points)."""
    return next(b for b in BUCKETS if b >= n)


# --------------------------------------------------------------------------- training


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
        model = _choice(body, "model", MODELS)
        if model == "logistic":
            return cls(model, 0, 0, "none", _choice(body, "optimizer", tuple(OPTIMIZERS)))
        return cls(
            model,
            _int(body, "layers", *LIMITS["layers"], default=1),
            _int(body, "width", *LIMITS["width"], default=16),
            _choice(body, "activation", ACTIVATIONS, default="tanh"),
            _choice(body, "optimizer", tuple(OPTIMIZERS)),
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
def _compiled(config: ModelConfig, steps: int, batch_size: int | None) -> Callable:
    """One jitted update ``(params, opt_state, x, y, w, n, key, grid) -> ...`` per config.

    It runs ``steps`` steps of :func:`funcnn.train.train_step` in a ``lax.scan`` (full
    batch with the mask ``w``, or ``batch_size`` indices drawn uniformly from ``[0, n)``),
    then returns the new params and state, the masked loss and accuracy on all points, and
    the probability of class 1 on the grid. ``jax.jit`` keeps one executable per padded
    bucket size, so a new point reuses it.
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

    return _jit(update)


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
        size = _bucket(n)
        xp = np.zeros((size, 2), np.float32)
        yp = np.zeros(size, np.int32)
        wp = np.zeros(size, np.float32)
        xp[:n], yp[:n], wp[:n] = x, y, 1.0
        steps = steps if n else 0
        fn = _compiled(self.config, steps, batch_size)
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
    funcnn.playground.server.RequestError: width: must be in [1, 256], got 1000
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
        lr = _lr(body)
        seed = _int(body, "seed", 0, 2**31 - 1, default=0)
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
        model_id = _field(body, "id")
        with self.lock:
            trainer = self.trainers.get(model_id) if isinstance(model_id, str) else None
            if trainer is not None:
                self.trainers.move_to_end(model_id)
        if trainer is None:
            raise RequestError(f"id: no model {model_id!r} (reset to create one)", 404)
        x, y = _points(body)
        steps = _int(body, "steps", *LIMITS["steps"], default=20)
        lr = _lr(body) if "lr" in body else None
        batch_size = body.get("batch_size")
        if batch_size is not None:
            batch_size = _int(body, "batch_size", *LIMITS["batch_size"])
        grid = _int(body, "grid", *LIMITS["grid"], default=50)
        extent = _extent(body)
        return trainer.update(
            x, y, steps=steps, lr=lr, batch_size=batch_size, grid=grid, extent=extent
        )

    def dataset(self, body: Mapping) -> dict[str, Any]:
        """``/api/dataset``: ``{"points", "labels"}`` of a toy set of :mod:`funcnn.data`."""
        name = _choice(body, "name", tuple(data.TOY_SETS))
        n = _int(body, "n", *LIMITS["dataset_n"], default=200)
        seed = _int(body, "seed", 0, 2**31 - 1, default=0)
        kwargs = {}
        if body.get("noise") is not None:
            noise = _number(body["noise"], "noise")
            if not 0.0 <= noise <= 1.0:
                raise RequestError(f"noise: must be in [0, 1], got {noise}")
            kwargs["std" if name == "blobs" else "noise"] = noise
        x, y = data.TOY_SETS[name](n, key=seed, **kwargs)
        return {"points": np.round(x.astype(np.float64), 5).tolist(), "labels": y.tolist()}


# --------------------------------------------------------------------------- HTTP


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
}


def _is_loopback_name(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: PlaygroundServer
    server_version = "funcnn-playground"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Mapping) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _fail(self, error: Exception) -> None:
        """Reply 500 with the error's text; a client already gone is not an error."""
        self.close_connection = True
        try:
            self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"}
            )
        except ConnectionError:
            pass

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        try:
            name = urlsplit("//" + host).hostname or ""
        except ValueError:
            name = ""
        if _is_loopback_name(name):
            return True
        self.close_connection = True  # an unread body must not be parsed as a request
        self._json(HTTPStatus.FORBIDDEN, {"error": f"Host: only loopback names, got {host!r}"})
        return False

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._get()
        except ConnectionError:  # the page went away mid-reply: nothing to tell it
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._post()
        except ConnectionError:
            self.close_connection = True

    do_HEAD = do_GET

    def _get(self) -> None:
        try:
            if not self._host_ok():
                return
            path = self.path.split("?", 1)[0]
            if path in STATIC:
                name, ctype = STATIC[path]
                self._send(HTTPStatus.OK, _static(name), ctype)
            elif path == "/api/info":
                self._json(HTTPStatus.OK, self.server.session.info())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"path: no such page {path!r}"})
        except Exception as e:  # a failed request must not stop the server
            self._fail(e)

    def _body(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("body: a Content-Length header is required", 411)
        if int(length) > LIMITS["body_bytes"]:
            raise RequestError(f"body: larger than {LIMITS['body_bytes']} bytes", 413)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)  # NaN / Infinity parse; the field checks refuse them
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(f"body: not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise RequestError(f"body: expected a JSON object, got {type(body).__name__}")
        return body

    def _post(self) -> None:
        routes = {
            "/api/model": self.server.session.create,
            "/api/step": self.server.session.step,
            "/api/dataset": self.server.session.dataset,
        }
        try:
            if not self._host_ok():
                return
            path = self.path.split("?", 1)[0]
            if path not in routes:
                self.close_connection = True
                self._json(HTTPStatus.NOT_FOUND, {"error": f"path: no such endpoint {path!r}"})
                return
            self._json(HTTPStatus.OK, routes[path](self._body()))
        except RequestError as e:
            if e.status in (411, 413):
                self.close_connection = True  # the unread body must not be parsed as a request
            self._json(e.status, {"error": str(e)})
        except Exception as e:  # a failed request must not stop the server
            self._fail(e)


def check_loopback(host: str) -> str:
    """Return ``host`` as an address to bind if it is a loopback one, else raise ValueError.

    ``"localhost"`` becomes ``"127.0.0.1"``; ``127.0.0.0/8`` and ``::1`` are accepted.

    >>> check_loopback("localhost"), check_loopback("[::1]")
    ('127.0.0.1', '::1')
    >>> check_loopback("0.0.0.0")
    Traceback (most recent call last):
    ...
    ValueError: host: the playground listens on loopback only (127.0.0.1, ::1), got '0.0.0.0'
    """
    if not isinstance(host, str):
        raise TypeError(f"host: expected a string, got {host!r}")
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"host: expected a loopback address such as 127.0.0.1 or ::1, got {host!r}"
        ) from None
    if not address.is_loopback:
        raise ValueError(
            f"host: the playground listens on loopback only (127.0.0.1, ::1), got {host!r}"
        )
    return str(address)


class PlaygroundServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` bound to a loopback address, holding a :class:`Session`."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False):
        host = check_loopback(host)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port: expected an int in [0, 65535] (0: a free port), got {port!r}")
        v6 = ipaddress.ip_address(host).version == 6
        self.address_family = socket.AF_INET6 if v6 else socket.AF_INET
        self.session = Session()
        self.verbose = verbose
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def make_server(host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False):
    """A playground server on ``host:port`` (``port=0``: a free one), not yet serving.

    >>> server = make_server()
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.server_close()
    """
    return PlaygroundServer(host, port, verbose=verbose)


def serve(host: str = "127.0.0.1", port: int = 8000, *, verbose: bool = True) -> None:
    """Serve the playground until interrupted, printing its address."""
    server = make_server(host, port, verbose=verbose)
    print(f"funcnn playground: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
