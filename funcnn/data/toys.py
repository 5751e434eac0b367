"""The 2-D toy sets of the lecture, and a sequence task for recurrent networks.

Every toy set is deterministic given its key (a ``jax.random`` key or an int seed) and
returns ``(x, y)`` with ``x`` float32 of shape ``(n, 2)`` and ``y`` int32 class labels of
shape ``(n,)``, balanced between the classes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from .. import checks
from .arrays import as_key

__all__ = ["spirals", "circles", "moons", "xor", "blobs", "TOY_SETS", "delayed_recall"]


def _check_n(n: int, who: str) -> int:
    return checks.positive_int(n, f"{who}: n", minimum=2)


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) >= n // 2).astype(np.int32) if n else np.zeros(0, np.int32)


def _finish(x, y, key) -> tuple[np.ndarray, np.ndarray]:
    perm = np.asarray(jax.random.permutation(key, len(x)))
    return np.asarray(x, np.float32)[perm], np.asarray(y, np.int32)[perm]


def spirals(n: int = 400, *, key: jax.Array | int = 0, noise: float = 0.05, turns: float = 1.0):
    """Two interleaved spirals, one a rotation of the other by π.

    Point ``i`` of a class sits at radius ``r = 0.1 + 0.9 t`` and angle
    ``θ = 2π · turns · t (+ π)``, ``t ∈ [0, 1]``, plus N(0, noise²) jitter; coordinates lie in
    about [−1, 1]. With the default single turn, a one-hidden-layer tanh network separates
    them, as in the lecture's 2-D demo.

    Args:
      n: the number of points, ``>= 2``.
      key: a PRNG key or int seed.
      noise: the standard deviation of the jitter.
      turns: how many times each spiral winds around the centre.

    Returns:
      ``(x, y)``: float32 ``(n, 2)`` points and int32 ``(n,)`` labels.

    >>> import numpy as np
    >>> x, y = spirals(100, noise=0.0)
    >>> x.shape, x.dtype, y.shape, np.bincount(y).tolist()
    ((100, 2), dtype('float32'), (100,), [50, 50])
    >>> r = np.hypot(x[:, 0], x[:, 1])  # r = 0.1 + 0.9 t
    >>> round(float(r.min()), 4), round(float(r.max()), 4)
    (0.1, 1.0)
    """
    n = _check_n(n, "spirals")
    k1, k2 = jax.random.split(as_key(key))
    y = _labels(n)
    counts = [int(np.sum(y == 0)), int(np.sum(y == 1))]
    t = np.concatenate([np.linspace(0.0, 1.0, c) for c in counts])
    theta = 2 * np.pi * turns * t + np.pi * y
    r = 0.1 + 0.9 * t
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    x = x + noise * np.asarray(jax.random.normal(k1, x.shape))
    return _finish(x, y, k2)


def circles(n: int = 400, *, key: jax.Array | int = 0, noise: float = 0.05, factor: float = 0.5):
    """A small circle (class 1, radius ``factor``) inside a large one (class 0, radius 1).

    Point ``i`` sits at ``r (cos θ, sin θ)`` with ``θ ~ U(0, 2π)``, plus N(0, noise²)
    jitter.

    Args:
      n: the number of points, ``>= 2``.
      key: a PRNG key or int seed.
      noise: the standard deviation of the jitter.
      factor: the radius of the inner circle.

    Returns:
      ``(x, y)``: float32 ``(n, 2)`` points and int32 ``(n,)`` labels.

    >>> import numpy as np
    >>> x, y = circles(100, noise=0.0, factor=0.5)
    >>> r = np.hypot(x[:, 0], x[:, 1])
    >>> bool(np.allclose(r[y == 1], 0.5)), bool(np.allclose(r[y == 0], 1.0))
    (True, True)
    """
    n = _check_n(n, "circles")
    k1, k2, k3 = jax.random.split(as_key(key), 3)
    y = _labels(n)
    theta = 2 * np.pi * np.asarray(jax.random.uniform(k1, (n,)))
    r = np.where(y == 1, factor, 1.0)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    x = x + noise * np.asarray(jax.random.normal(k2, x.shape))
    return _finish(x, y, k3)


def moons(n: int = 400, *, key: jax.Array | int = 0, noise: float = 0.1):
    """Two interleaving half circles (as scikit-learn's ``make_moons``), centred near 0.

    With ``t ~ U(0, π)``: class 0 at ``(cos t, sin t)``, class 1 at
    ``(1 − cos t, 0.5 − sin t)``, both shifted by ``(−0.5, −0.25)``, plus N(0, noise²)
    jitter.

    Args:
      n: the number of points, ``>= 2``.
      key: a PRNG key or int seed.
      noise: the standard deviation of the jitter.

    Returns:
      ``(x, y)``: float32 ``(n, 2)`` points and int32 ``(n,)`` labels.

    >>> import numpy as np
    >>> x, y = moons(100, noise=0.0)
    >>> x.shape, np.bincount(y).tolist()
    ((100, 2), [50, 50])
    >>> upper = x[y == 0] + [0.5, 0.25]  # on the unit circle
    >>> bool(np.allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-6))
    True
    """
    n = _check_n(n, "moons")
    k1, k2, k3 = jax.random.split(as_key(key), 3)
    y = _labels(n)
    t = np.pi * np.asarray(jax.random.uniform(k1, (n,)))
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where((y == 1)[:, None], lower, upper) - np.array([0.5, 0.25])
    x = x + noise * np.asarray(jax.random.normal(k2, x.shape))
    return _finish(x, y, k3)


def xor(n: int = 400, *, key: jax.Array | int = 0, noise: float = 0.0):
    """Points uniform in [−1, 1]², class 1 where ``x₁ · x₂ < 0`` (not linearly separable).

    The labels come from the points before the N(0, noise²) jitter, so the classes are
    about, not exactly, balanced.

    Args:
      n: the number of points, ``>= 2``.
      key: a PRNG key or int seed.
      noise: the standard deviation of the jitter.

    Returns:
      ``(x, y)``: float32 ``(n, 2)`` points and int32 ``(n,)`` labels.

    >>> import numpy as np
    >>> x, y = xor(100)
    >>> x.shape, bool(np.all((x[:, 0] * x[:, 1] < 0) == (y == 1)))
    ((100, 2), True)
    """
    n = _check_n(n, "xor")
    k1, k2, k3 = jax.random.split(as_key(key), 3)
    x = np.asarray(jax.random.uniform(k1, (n, 2), minval=-1.0, maxval=1.0))
    y = (x[:, 0] * x[:, 1] < 0).astype(np.int32)
    x = x + noise * np.asarray(jax.random.normal(k2, x.shape))
    return _finish(x, y, k3)


def blobs(n: int = 400, *, key: jax.Array | int = 0, std: float = 0.3, distance: float = 2.0):
    """Two Gaussian blobs at ``(±distance/2, ±distance/2)``: linearly separable.

    Class 0 is ``N((−d/2, −d/2), std² I)``, class 1 ``N((d/2, d/2), std² I)`` with
    ``d = distance``.

    Args:
      n: the number of points, ``>= 2``.
      key: a PRNG key or int seed.
      std: the standard deviation of each blob.
      distance: the centres' distance along each axis.

    Returns:
      ``(x, y)``: float32 ``(n, 2)`` points and int32 ``(n,)`` labels.

    >>> import numpy as np
    >>> x, y = blobs(100)
    >>> np.round(x[y == 1].mean(axis=0)).tolist(), np.round(x[y == 0].mean(axis=0)).tolist()
    ([1.0, 1.0], [-1.0, -1.0])
    """
    n = _check_n(n, "blobs")
    k1, k2 = jax.random.split(as_key(key))
    y = _labels(n)
    centres = np.where((y == 1)[:, None], distance / 2, -distance / 2) * np.ones((1, 2))
    x = centres + std * np.asarray(jax.random.normal(k1, (n, 2)))
    return _finish(x, y, k2)


TOY_SETS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "spirals": spirals,
    "circles": circles,
    "moons": moons,
    "xor": xor,
    "blobs": blobs,
}


def delayed_recall(n: int = 1000, length: int = 50, *, symbols: int = 4, key: jax.Array | int = 0):
    """A long-range task: ``length`` random symbols, the first marked; the label ``y = s_0``
    is asked after the last step. ``x[i, t] = [onehot(s_it), 𝟙(t = 0)]``: float32
    ``(n, length, symbols + 1)``; ``y``: int32 ``(n,)``, balanced.

    >>> x, y = delayed_recall(8, 5)
    >>> x.shape, bool((x[:, 0, :4].argmax(1) == y).all()), x[:, :, 4].sum(0).tolist()
    ((8, 5, 5), True, [8.0, 0.0, 0.0, 0.0, 0.0])
    """
    n, length = _check_n(n, "delayed_recall"), checks.positive_int(length, "delayed_recall: length")
    classes = checks.positive_int(symbols, "delayed_recall: symbols", minimum=2)
    k1, k2 = jax.random.split(as_key(key))
    s = np.array(jax.random.randint(k1, (n, length), 0, classes))
    s[:, 0] = np.arange(n) % classes  # balanced; _finish shuffles
    marker = np.broadcast_to(np.arange(length) == 0, (n, length))[..., None]
    return _finish(np.concatenate([np.eye(classes)[s], marker], -1), s[:, 0], k2)
