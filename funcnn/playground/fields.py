"""The fields of the playground's JSON requests, checked one by one.

Every check takes the parsed body (a dict), the field's name and its bounds, and returns the
value or raises :class:`RequestError` whose message starts with the field's name
(``"width: must be in [1, 256], got 1000"``): the page shows it as it is. The numbers follow
the package's rules (:mod:`funcnn.checks`): an integer is never a ``bool``, a number is a
finite real.

>>> integer({"width": 16}, "width", 1, 256), lr({"lr": 0.1})
(16, 0.1)
>>> integer({"width": 1000}, "width", 1, 256)
Traceback (most recent call last):
...
funcnn.playground.fields.RequestError: width: must be in [1, 256], got 1000
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, TypedDict

import numpy as np

from .. import checks

__all__ = ["LIMITS", "RequestError"]


class _Limits(TypedDict):
    """The bounds of the request fields: ``(lo, hi)`` ranges and single caps."""

    width: tuple[int, int]
    layers: tuple[int, int]
    lr: tuple[float, float]
    points: int
    steps: tuple[int, int]
    grid: tuple[int, int]
    batch_size: tuple[int, int]
    dataset_n: tuple[int, int]
    coordinate: float
    models: int
    body_bytes: int


LIMITS: _Limits = {
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


class RequestError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = int(status)


def field(body: Mapping, name: str, default: Any = ...) -> Any:
    """``body[name]``, or ``default`` when it is missing (no default: a missing field)."""
    if name not in body:
        if default is ...:
            raise RequestError(f"{name}: missing field")
        return default
    return body[name]


def integer(body: Mapping, name: str, lo: int, hi: int, default: Any = ...) -> int:
    """An integer field in ``[lo, hi]``."""
    value = field(body, name, default)
    if not checks.is_int(value):
        raise RequestError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(f"{name}: must be in [{lo}, {hi}], got {value}")
    return value


def number(value: Any, name: str) -> float:
    """A finite real number (JSON's ``NaN`` and ``Infinity`` parse, and are refused here)."""
    try:
        return checks.number(value, name)
    except (TypeError, ValueError):
        raise RequestError(f"{name}: expected a finite number, got {value!r}") from None


def lr(body: Mapping, default: Any = ...) -> float:
    """The learning rate ``η ∈ (0, 10]``."""
    value = number(field(body, "lr", default), "lr")
    if not 0.0 < value <= LIMITS["lr"][1]:
        raise RequestError(
            f"lr: the learning rate must be in (0, {LIMITS['lr'][1]:g}], got {value!r}"
        )
    return value


def choice(body: Mapping, name: str, options: tuple[str, ...], default: Any = ...) -> str:
    """One of ``options``."""
    value = field(body, name, default)
    if value not in options:
        raise RequestError(f"{name}: expected one of {list(options)}, got {value!r}")
    return value


def points(body: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """The ``points`` ``[[x₁, x₂], ...]`` and their ``labels`` (0 or 1), checked."""
    xs, labels = field(body, "points"), field(body, "labels")
    if not isinstance(xs, list):
        raise RequestError(f"points: expected a list of [x, y] pairs, got {type(xs).__name__}")
    if not isinstance(labels, list):
        raise RequestError(f"labels: expected a list of 0/1, got {type(labels).__name__}")
    if len(xs) > LIMITS["points"]:
        raise RequestError(f"points: at most {LIMITS['points']} points, got {len(xs)}")
    if len(labels) != len(xs):
        raise RequestError(f"labels: expected {len(xs)} labels (one per point), got {len(labels)}")
    bound = LIMITS["coordinate"]
    for i, p in enumerate(xs):
        if not isinstance(p, list) or len(p) != 2:
            raise RequestError(f"points[{i}]: expected a pair [x, y], got {p!r}")
        for v in p:
            if abs(number(v, f"points[{i}]")) > bound:
                raise RequestError(f"points[{i}]: coordinates must be within ±{bound:g}, got {p}")
    for i, c in enumerate(labels):
        if isinstance(c, bool) or c not in (0, 1):
            raise RequestError(f"labels[{i}]: expected 0 or 1, got {c!r}")
    x = np.asarray(xs, np.float32).reshape(len(xs), 2)
    return x, np.asarray(labels, np.int32)


def extent(body: Mapping) -> tuple[float, float, float, float]:
    """The view ``[xmin, xmax, ymin, ymax]``, ``xmin < xmax`` and ``ymin < ymax``."""
    value = field(body, "extent", [-1.5, 1.5, -1.5, 1.5])
    if not isinstance(value, list) or len(value) != 4:
        raise RequestError(f"extent: expected [xmin, xmax, ymin, ymax], got {value!r}")
    xmin, xmax, ymin, ymax = (number(v, "extent") for v in value)
    bound = LIMITS["coordinate"]
    if not (xmin < xmax and ymin < ymax) or max(map(abs, (xmin, xmax, ymin, ymax))) > bound:
        raise RequestError(
            f"extent: expected xmin < xmax and ymin < ymax within ±{bound:g}, got {value}"
        )
    return xmin, xmax, ymin, ymax
