"""Arrays as training takes them: checks, keys, shuffles, the train/validation split,
minibatches."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np

from .. import checks

__all__ = ["check_xy", "train_val_split", "batches", "as_key", "shuffle"]


def as_key(key: jax.Array | int, argument: str = "key") -> jax.Array:
    """Accept a PRNG key or an int seed: ``k = jax.random.key(seed)`` for an int, the key
    itself otherwise (:func:`funcnn.checks.prng_key`).

    Args:
      key: a ``jax.random`` key (a scalar key array) or an int seed.
      argument: the name used in the error message.

    Raises:
      TypeError: ``key`` is neither.

    >>> import jax
    >>> k = jax.random.key(1)
    >>> as_key(k) is k, as_key(7).shape
    (True, ())
    >>> as_key("seven", "fit: key")
    Traceback (most recent call last):
    ...
    TypeError: fit: key: expected a jax.random key or an int seed, got 'seven'
    """
    return checks.prng_key(key, argument)


def _mix32(v):
    """A 32-bit integer hash (the finalizer of MurmurHash3): an avalanche of every bit."""
    import jax.numpy as jnp

    v = v ^ (v >> 16)
    v = v * jnp.uint32(0x85EBCA6B)
    v = v ^ (v >> 13)
    v = v * jnp.uint32(0xC2B2AE35)
    return v ^ (v >> 16)


def shuffle(key: jax.Array, n: int, rounds: int = 6) -> jax.Array:
    """A pseudo-random permutation of ``0 … n−1`` without sorting: ``perm[i] = π_key(i)``.

    ``π_key`` is a balanced Feistel network on ``2h`` bits (``4^h ≥ n``), with ``rounds``
    rounds ``(L, R) ↦ (R, L ⊕ F(R ⊕ k_r))``, ``F`` a 32-bit hash and ``k_r`` drawn from
    ``key``; a Feistel network is a bijection, and *cycle walking* (apply ``π`` again while
    the value is ``≥ n``) restricts it to a bijection of ``[0, n)``. Every element is
    computed independently, so the whole permutation is a few fused integer operations per
    element, where ``jax.random.permutation`` sorts (the same idea as TensorFlow's
    ``index_shuffle``). ``fit`` shuffles each epoch with it.

    >>> import jax
    >>> sorted(shuffle(jax.random.key(0), 10).tolist()) == list(range(10))
    True
    """
    import jax.numpy as jnp

    n = checks.positive_int(n, "shuffle: n")
    half = max(1, (int(n - 1).bit_length() + 1) // 2)
    mask = jnp.uint32((1 << half) - 1)
    keys = jax.random.bits(key, (rounds,), jnp.uint32)

    def permute(v):
        left, right = v >> half, v & mask
        for r in range(rounds):
            left, right = right, left ^ (_mix32(right ^ keys[r]) & mask)
        return (left << half) | right

    def walk(v):
        return jax.lax.while_loop(
            lambda v: jnp.any(v >= n), lambda v: jnp.where(v >= n, permute(v), v), permute(v)
        )

    return walk(jnp.arange(n, dtype=jnp.uint32)).astype(jnp.int32)


def check_xy(x, y, who: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Check that ``x`` and ``y`` are non-empty arrays with the same number of examples.

    Args:
      x: the inputs, array-like ``(n, ...)``.
      y: the targets, array-like ``(n, ...)``.
      who: the caller's name, used in the error messages.

    Returns:
      ``(x, y)`` as numpy arrays.

    Raises:
      ValueError: a missing array, no leading axis, different lengths or ``n = 0``.
      TypeError: a non-numeric array.

    >>> import numpy as np
    >>> x, y = check_xy([[0.0, 1.0], [2.0, 3.0]], [0, 1])
    >>> x.shape, y.shape
    ((2, 2), (2,))
    >>> check_xy(np.zeros((3, 2)), np.zeros(2), "fit")
    Traceback (most recent call last):
    ...
    ValueError: fit: x and y must have the same length, got 3 and 2
    """
    if x is None or y is None:
        raise ValueError(f"{who}: x and y must both be given")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"{who}: x and y need a leading example axis, got shapes {x.shape}, {y.shape}"
        )
    if len(x) != len(y):
        raise ValueError(f"{who}: x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{who}: the dataset is empty")
    if x.dtype == object or y.dtype == object:
        raise TypeError(f"{who}: x and y must be numeric arrays, got dtypes {x.dtype}, {y.dtype}")
    return x, y


def train_val_split(x, y, val_fraction: float = 0.2, *, key: jax.Array | int = 0):
    """Shuffle and split into ``(x_train, y_train), (x_val, y_val)``.

    The validation part has ``round(val_fraction · n)`` examples (at least one).

    Args:
      x: the inputs, ``(n, ...)``.
      y: the targets, ``(n, ...)``.
      val_fraction: the share of examples for validation, in ``(0, 1)``.
      key: a PRNG key or int seed for the shuffle.

    Returns:
      ``((x_train, y_train), (x_val, y_val))``.

    >>> import numpy as np
    >>> x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    >>> (x_train, y_train), (x_val, y_val) = train_val_split(x, y, 0.3)
    >>> x_train.shape, x_val.shape, sorted(y_train.tolist() + y_val.tolist()) == list(range(10))
    ((7, 2), (3, 2), True)
    """
    x, y = check_xy(x, y, "train_val_split")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1), got {val_fraction!r}")
    n = len(x)
    n_val = max(1, int(round(val_fraction * n)))
    if n_val >= n:
        raise ValueError(f"train_val_split: {n} examples are too few to split off {n_val}")
    perm = np.asarray(jax.random.permutation(as_key(key), n))
    val, train = perm[:n_val], perm[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def batches(
    x, y, batch_size: int, *, key: jax.Array | int | None = None, drop_remainder: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over minibatches ``(x_b, y_b)``, shuffled when a key is given.

    The last batch is smaller when ``batch_size`` does not divide ``n``, unless
    ``drop_remainder``: ``⌈n / batch_size⌉`` batches, or ``⌊n / batch_size⌋``.

    Args:
      x: the inputs, ``(n, ...)``.
      y: the targets, ``(n, ...)``.
      batch_size: the batch size ``m``; each ``x_b`` has shape ``(m, ...)``.
      key: a PRNG key or int seed to shuffle with; ``None`` keeps the order.
      drop_remainder: leave out the last, smaller batch.

    >>> import numpy as np
    >>> x, y = np.zeros((5, 2)), np.arange(5)
    >>> [yb.tolist() for _, yb in batches(x, y, 2)]
    [[0, 1], [2, 3], [4]]
    >>> [xb.shape for xb, _ in batches(x, y, 2, key=0, drop_remainder=True)]
    [(2, 2), (2, 2)]
    """
    x, y = check_xy(x, y, "batches")
    batch_size = checks.positive_int(batch_size, "batches: batch_size")
    n = len(x)
    order = np.arange(n) if key is None else np.asarray(jax.random.permutation(as_key(key), n))
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
