"""Pure array operations: the maths of every layer, with no parameters of their own.

Every function here is pure, works under ``jax.jit``, ``jax.grad`` and ``jax.vmap``, and
imports no other funcnn module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["dense", "dropout"]


def dense(x: Array, w: Array, b: Array | None = None) -> Array:
    """Affine map of the last axis: ``y = x W + b``.

    This is the lecture's ``h = W x + b`` written for a batch of row vectors.

    Args:
      x: inputs, shape ``(..., n_in)``.
      w: weights, shape ``(n_in, n_out)``.
      b: bias, shape ``(n_out,)``, or ``None`` for no bias.

    Returns:
      ``(..., n_out)``.

    >>> import jax.numpy as jnp
    >>> dense(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.zeros(4)).shape
    (2, 4)
    """
    y = jnp.matmul(x, w)
    return y if b is None else y + b


def dropout(key: Array, x: Array, rate: float) -> Array:
    """Inverted dropout: each element is dropped with probability ``rate``.

    ``y = m ⊙ x / (1 − rate)`` with ``m ~ Bernoulli(1 − rate)``, so ``E[y] = x``.

    Args:
      key: a PRNG key.
      x: any array.
      rate: probability of dropping an element, in ``[0, 1)``.

    >>> import jax
    >>> y = dropout(jax.random.key(0), jax.numpy.ones(1000), 0.5)
    >>> set(y.tolist()) <= {0.0, 2.0}
    True
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate!r}")
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
