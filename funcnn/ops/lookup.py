"""Embedding lookup: integer ids to the rows of a table."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

__all__ = ["embedding"]


def embedding(ids: Array, table: Array) -> Array:
    """The rows of ``table`` that ``ids`` name: ``y[..., :] = table[ids[...], :]``.

    An id outside ``[0, V)`` (negative ones included) gives a row of NaN: this is
    ``jnp.take(table, ids, axis=0, mode="fill")`` with negative ids sent out of range, where
    plain indexing ``table[ids]`` would wrap negative ids and clamp the others to the last
    row, silently. The gradient with respect to ``table`` adds up, per row, the upstream
    gradients of the positions that name it (a scatter-add).

    Args:
      ids: integer ids of any shape ``(...)``.
      table: ``(V, d)``.

    Returns:
      ``(..., d)``.

    >>> import jax.numpy as jnp
    >>> table = jnp.arange(6.0).reshape(3, 2)
    >>> embedding(jnp.array([[2, 0]]), table).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
    >>> embedding(jnp.array([3, -1]), table).tolist()  # out of range: NaN, not a clamped row
    [[nan, nan], [nan, nan]]
    """
    ids = jnp.where(ids < 0, table.shape[0], ids)
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)
