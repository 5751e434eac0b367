"""One gradient per example, ``gᵢ = ∇_θ loss(θ, batchᵢ)``, with ``jax.vmap``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["per_example"]


def per_example(loss: Callable[[Any, Any], jax.Array], params: Any, batch: Any) -> Any:
    """One gradient per example: ``gᵢ = ∇_θ loss(θ, batchᵢ)``, computed with ``jax.vmap``.

    Each example is given to ``loss`` as a batch of one (its leading axis kept, of size 1),
    so any loss written for batches works. The mean of the ``gᵢ`` is the gradient of the
    mean loss, ``∇_θ (1/n) Σᵢ lᵢ``; the individual ``gᵢ`` are what per-example clipping
    (DP-SGD), influence estimates and gradient-noise studies need.

    A model with state (BatchNorm) is run in evaluation mode, with its state fixed:
    ``lambda p, b: model.loss(model.apply_with_state(p, state, b[0])[0], b[1])`` (batch
    statistics of one example would mean nothing).

    Args:
      loss: ``loss(params, batch) -> scalar``, e.g. ``lambda p, b: mse(apply(p, b[0]), b[1])``.
      params: a pytree.
      batch: a pytree of arrays sharing a leading axis of ``n`` examples, e.g. ``(x, y)``.

    Returns:
      a pytree like ``params`` with an extra leading axis ``n``.

    >>> import jax.numpy as jnp
    >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> per_example(loss, jnp.zeros(2), (jnp.ones((5, 2)), jnp.ones(5))).shape
    (5, 2)
    """
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves or any(np.ndim(x) == 0 for x in leaves):
        raise ValueError(
            "per_example: batch must be a pytree of arrays with a leading example axis"
        )
    n = {np.shape(x)[0] for x in leaves}
    if len(n) != 1:
        raise ValueError(
            f"per_example: every batch leaf needs the same leading size, got {sorted(n)}"
        )
    grad = jax.grad(loss)

    def one(example):
        return grad(params, jax.tree_util.tree_map(lambda a: a[None], example))

    return jax.vmap(one)(batch)
