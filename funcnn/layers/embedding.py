"""The embedding layer: integer ids (words, characters, classes) to learned vectors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import checks, initializers, ops
from ..core import Layer
from .params import check_input, check_params

__all__ = ["Embedding"]


def Embedding(
    vocab_size: int,
    features: int,
    *,
    w_init: str | initializers.Initializer = "standard_normal",
    dtype=jnp.float32,
) -> Layer:
    """A table of ``vocab_size`` learned vectors, looked up by id:
    ``y[..., :] = W[ids[...], :]`` (see :func:`funcnn.ops.embedding`). The same as a
    :func:`~funcnn.layers.Dense` without bias applied to one-hot vectors,
    ``onehot(ids) W``, without building them.

    Params: ``{"w": (vocab_size, features)}``, drawn N(0, 1) by default (PyTorch's
    ``nn.Embedding``). Input: integer ids of shape ``(n, ...)``, e.g. ``(n, T)`` for
    sequences; output ``(n, ..., features)``.

    Out-of-range ids: ``apply`` on concrete ids (outside ``jax.jit``) refuses an id outside
    ``[0, vocab_size)``, naming the layer. Under ``jax.jit`` the ids are traced and cannot be
    looked at; an id out of range then gives a row of NaN (``jnp.take`` in ``"fill"`` mode),
    so the loss turns NaN and ``fit``'s non-finite guard stops — where plain indexing
    ``W[ids]`` would wrap a negative id and clamp a large one to the last row, silently.
    Non-integer ids are an error in both cases.

    Args:
      vocab_size: the number of ids ``V``.
      features: the size ``d`` of each vector.
      w_init: an initializer name from :mod:`funcnn.initializers` or a callable.

    >>> import jax, jax.numpy as jnp
    >>> shape, params = Embedding(100, 8).init(jax.random.key(0), (-1, 20))
    >>> shape, params["w"].shape
    ((-1, 20, 8), (100, 8))
    >>> y = Embedding(100, 8).apply(params, jnp.array([[3, 3, 7]]))
    >>> y.shape, bool((y[0, 0] == params["w"][3]).all())
    ((1, 3, 8), True)
    """
    who = f"Embedding({vocab_size}, {features})"
    checks.positive_int(vocab_size, f"{who}: vocab_size")
    checks.positive_int(features, f"{who}: features")
    w_fn = initializers.get(w_init, argument=f"{who}: w_init")

    def init(key, input_shape):
        shape = checks.input_shape(input_shape, who, min_rank=1)
        return (*shape, features), {"w": w_fn(key, (vocab_size, features), dtype)}

    def apply(params, x, *, key=None, train=False):
        check_input(x, who)
        check_params(params, {"w": (vocab_size, features)}, who)
        _check_ids(x, vocab_size, who)
        return ops.embedding(x, params["w"])

    return Layer(init, apply, kind="embedding", description=who)


def _check_ids(ids, vocab_size: int, who: str) -> None:
    """Integer ids; when they are concrete (outside ``jax.jit``), all in ``[0, V)``."""
    dtype = jnp.result_type(ids)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{who}: ids must be integers, got dtype {np.dtype(dtype)}")
    if isinstance(ids, jax.core.Tracer) or np.size(ids) == 0:
        return
    values = np.asarray(ids)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"{who}: ids must be in [0, {vocab_size}), got {bad} (ids range over [{low}, {high}])"
        )
