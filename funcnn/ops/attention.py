"""Scaled dot-product attention over heads, with masks and dropout on the weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["attention_weights", "dot_product_attention", "causal_mask"]


def causal_mask(t: int, s: int | None = None) -> Array:
    """``m[i, j] = (j ≤ i)``: query ``i`` sees keys ``0 … i`` only, never later ones.

    >>> causal_mask(3).astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    return jnp.tril(jnp.ones((t, t if s is None else s), bool))


def attention_weights(q: Array, k: Array, mask: Array | None = None) -> Array:
    """``α = softmax_j(q_i · k_j / √d)`` per head, over the keys ``j`` that ``mask`` allows.

    A key the mask refuses gets the logit ``finfo.min`` (a weight of 0 as soon as one key of
    the row is allowed); a query with every key refused weighs them all equally, where
    PyTorch returns NaN.

    Args:
      q: queries ``(n, T, h, d)``.
      k: keys ``(n, S, h, d)``.
      mask: booleans broadcasting to ``(n, h, T, S)``, ``True`` where a query may attend a
        key; ``None`` for all.

    Returns:
      ``(n, h, T, S)``, each row summing to 1.

    >>> import jax.numpy as jnp
    >>> q, k = jnp.ones((1, 1, 1, 4)), jnp.array([[[[1.0] * 4], [[-1.0] * 4]]])
    >>> [round(w, 4) for w in attention_weights(q, k)[0, 0, 0].tolist()]  # softmax(2, −2)
    [0.982, 0.018]
    """
    logits = jnp.einsum("nthd,nshd->nhts", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return jax.nn.softmax(logits, axis=-1)


def dot_product_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    key: Array | None = None,
) -> Array:
    """Scaled dot-product attention (Vaswani et al., 2017) per head:
    ``y_i = Σ_j α_ij v_j`` with ``α = softmax(q kᵀ/√d)`` (:func:`attention_weights`).

    With ``dropout_rate > 0`` and a ``key`` the weights are dropped out, as in training:
    ``α ← m ⊙ α / (1 − rate)``, ``m ~ Bernoulli(1 − rate)``.

    Args:
      q: ``(n, T, h, d)``.
      k: ``(n, S, h, d)``.
      v: ``(n, S, h, d_v)``.
      mask: as for :func:`attention_weights`.
      dropout_rate: the probability of dropping a weight.
      key: the PRNG key of the dropout (needed when ``dropout_rate > 0``).

    Returns:
      ``(n, T, h, d_v)``.

    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (2, 5, 3, 4))
    >>> y = dot_product_attention(x, x, x, causal_mask(5))
    >>> y.shape, bool(jnp.allclose(y[:, 0], x[:, 0]))  # the first query sees itself only
    ((2, 5, 3, 4), True)
    """
    weights = attention_weights(q, k, mask)
    if dropout_rate > 0.0:
        if key is None:
            raise ValueError("dot_product_attention: dropout needs a PRNG key")
        keep = jax.random.bernoulli(key, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("nhts,nshd->nthd", weights, v)
