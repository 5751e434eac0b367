"""Data helpers: checks, train/validation split, minibatches, the 2-D toy sets, images.

Images: :func:`digits` (the 8×8 digits bundled with scikit-learn) and :func:`load_idx`
(MNIST-format IDX files).

Every toy set is deterministic given its key (a ``jax.random`` key or an int seed) and
returns ``(x, y)`` with ``x`` float32 of shape ``(n, 2)`` and ``y`` int32 class labels of
shape ``(n,)``, balanced between the classes.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

from . import checks

__all__ = [
    "check_xy",
    "train_val_split",
    "batches",
    "as_key",
    "shuffle",
    "spirals",
    "circles",
    "moons",
    "xor",
    "blobs",
    "TOY_SETS",
    "delayed_recall",
    "digits",
    "load_idx",
    "IDX_TYPES",
]


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


# --------------------------------------------------------------------------- toy sets


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


TOY_SETS = {"spirals": spirals, "circles": circles, "moons": moons, "xor": xor, "blobs": blobs}


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


# ------------------------------------------------------------------------------ images


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8×8 handwritten digits that scikit-learn ships (1,797 images, no download).

    Pixel values ``0 … 16`` are scaled to ``x = v / 16 ∈ [0, 1]``.

    Returns:
      ``(x, y)``: ``x`` float32 NHWC images of shape ``(1797, 8, 8, 1)``, ``y`` int32
      labels ``0 … 9`` of shape ``(1797,)``.

    >>> x, y = digits()
    >>> x.shape, y.shape, int(y.max())
    ((1797, 8, 8, 1), (1797,), 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "data.digits needs scikit-learn, which ships the 8×8 digits: "
            "pip install scikit-learn (or 'funcnn[examples]')"
        ) from err
    bunch = load_digits()
    x = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
    return x, np.asarray(bunch.target, np.int32)


# IDX type codes (http://yann.lecun.com/exdb/mnist/): big-endian element types.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path) -> np.ndarray:
    """Read an IDX file, the MNIST format, gzip-compressed or not.

    The layout: two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B``
    int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions
    ``d``; then ``d`` big-endian uint32 sizes; then ``Π sizes`` big-endian elements.
    Compression is recognized by gzip's magic bytes, whatever the file's name.

    Args:
      path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
      an array of the stored shape in the native byte order, e.g. uint8
      ``(60000, 28, 28)`` for MNIST's training images; ``x[..., None] / 255`` makes NHWC
      images.

    Raises:
      ValueError: a wrong magic number, an unknown type code, a truncated file, trailing
        bytes or a corrupt gzip stream, naming the file.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "labels.idx"
    >>> _ = f.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> load_idx(f).tolist()
    [7, 2, 1]
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"load_idx: {path} is a corrupt or truncated gzip file: {err}"
            ) from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise ValueError(
            f"load_idx: {path} is not an IDX file: expected the magic bytes 00 00, a type code "
            f"in {[hex(c) for c in IDX_TYPES]} and a rank, got {raw[:4].hex(' ') or 'nothing'}"
        )
    dtype, rank = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise ValueError(
            f"load_idx: {path} is truncated: its header needs {header} bytes for {rank} "
            f"dimensions, the file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", rank, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "corrupt (trailing bytes)"
        raise ValueError(
            f"load_idx: {path} is {what}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"the file has {len(raw)}"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
