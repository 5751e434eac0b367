"""Losses and metrics, ``L(θ) = (1/n) Σ_i l(y_i, ỹ_i)``, numerically stable from logits.

Built on ``optax.losses``. Every loss takes ``(outputs, targets)`` and returns the mean
over the batch (and, for ``mse``, over every element).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

__all__ = [
    "mse",
    "binary_cross_entropy",
    "binary_cross_entropy_from_probs",
    "softmax_cross_entropy",
    "accuracy",
]


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _binary_shapes(
    outputs: Array, labels: Array, who: str, names: tuple[str, str] = ("outputs", "labels")
) -> tuple[Array, Array]:
    outputs, labels = jnp.asarray(outputs), jnp.asarray(labels)
    if outputs.shape == labels.shape + (1,):
        outputs = outputs[..., 0]
    if outputs.shape != labels.shape:
        out, lab = names
        raise ValueError(
            f"{who}: {out} of shape {outputs.shape} do not match {lab} of shape "
            f"{labels.shape}; expected equal shapes, or {out} with one extra axis of size 1"
        )
    return outputs, labels


def mse(predictions: Array, targets: Array) -> Array:
    """Mean squared error: ``L = (1/N) Σ (y − ỹ)²`` over every element.

    This is the lecture's MSE; note that ``optax.l2_loss`` is half of it. Shapes must be
    equal (broadcasting ``(n, 1)`` against ``(n,)`` is a classic silent bug), except that
    predictions of shape ``(n, 1)`` are accepted for targets of shape ``(n,)``.

    Args:
      predictions: ``y``, shape ``(n, ...)``.
      targets: ``ỹ``, the same shape (or ``(n,)`` for predictions ``(n, 1)``).

    Returns:
      the scalar ``L``.

    >>> import jax.numpy as jnp
    >>> float(mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])))  # (1² + 2²) / 2
    2.5
    """
    predictions, targets = _binary_shapes(predictions, targets, "mse", ("predictions", "targets"))
    return jnp.mean(optax.losses.squared_error(predictions, targets))


def binary_cross_entropy(logits: Array, labels: Array) -> Array:
    """Binary cross-entropy from logits ``z``, with ``y = σ(z)`` and labels ``ỹ ∈ [0, 1]``.

    ``L = −(1/n) Σ [ỹ log σ(z) + (1 − ỹ) log(1 − σ(z))]``, computed as
    ``−ỹ log σ(z) − (1 − ỹ) log σ(−z)`` so that it stays finite for any finite logit.

    Args:
      logits: ``z``, shape ``(n,)`` or ``(n, 1)``.
      labels: ``ỹ``, shape ``(n,)``, 0/1 or probabilities.

    Returns:
      the scalar ``L``.

    >>> import jax.numpy as jnp
    >>> round(float(binary_cross_entropy(jnp.array([0.0]), jnp.array([1]))), 4)  # log 2
    0.6931
    >>> float(binary_cross_entropy(jnp.array([-100.0]), jnp.array([1])))  # finite
    100.0
    """
    logits, labels = _binary_shapes(logits, labels, "binary_cross_entropy", ("logits", "labels"))
    labels = labels.astype(logits.dtype)
    return jnp.mean(optax.losses.sigmoid_binary_cross_entropy(logits, labels))


def binary_cross_entropy_from_probs(probs: Array, labels: Array, eps: float = 1e-7) -> Array:
    """Binary cross-entropy from probabilities ``y ∈ (0, 1)``, clipped to ``[eps, 1 − eps]``.

    ``L = −(1/n) Σ [ỹ log y + (1 − ỹ) log(1 − y)]``. Prefer :func:`binary_cross_entropy`
    on logits: it needs no clipping.

    Args:
      probs: ``y``, shape ``(n,)`` or ``(n, 1)``.
      labels: ``ỹ``, shape ``(n,)``, 0/1 or probabilities.
      eps: the clipping margin.

    Returns:
      the scalar ``L``.

    >>> import jax.numpy as jnp
    >>> loss = binary_cross_entropy_from_probs(jnp.array([0.5, 0.9]), jnp.array([1, 1]))
    >>> round(float(loss), 4)  # (−log 0.5 − log 0.9) / 2
    0.3993
    """
    probs, labels = _binary_shapes(
        probs, labels, "binary_cross_entropy_from_probs", ("probs", "labels")
    )
    p = jnp.clip(probs, eps, 1.0 - eps)
    labels = labels.astype(p.dtype)
    return -jnp.mean(labels * jnp.log(p) + (1.0 - labels) * jnp.log1p(-p))


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """Softmax cross-entropy: ``L = −(1/n) Σ_i Σ_k ỹ_ik log softmax_k(z_i)``.

    ``labels`` are integer classes of shape ``logits.shape[:-1]`` (then the loss is
    ``−(1/n) Σ_i log softmax_{ỹ_i}(z_i)``), or one-hot / probability targets of the same
    shape as ``logits``. Integer labels outside ``[0, c)`` raise a ValueError when concrete;
    under ``jit`` they make the loss NaN rather than a silently wrong number.

    Args:
      logits: ``z``, shape ``(n, c)``.
      labels: integer classes ``(n,)`` in ``[0, c)``, or targets ``(n, c)``.

    Returns:
      the scalar ``L``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((2, 3))  # uniform: L = log 3
    >>> round(float(softmax_cross_entropy(logits, jnp.array([0, 2]))), 4)
    1.0986
    >>> round(float(softmax_cross_entropy(logits, jnp.eye(3)[jnp.array([0, 2])])), 4)
    1.0986
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    c = logits.shape[-1] if logits.ndim else 0
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"softmax_cross_entropy: integer labels must have shape {logits.shape[:-1]} "
                f"(logits without the class axis), got {labels.shape}"
            )
        if _concrete(labels) and labels.size:
            values = np.asarray(labels)  # a plain array: np.min of a jax array would trace
            lo, hi = int(values.min()), int(values.max())
            if lo < 0 or hi >= c:
                raise ValueError(
                    f"softmax_cross_entropy: labels must be in [0, {c}) for {c} classes, "
                    f"got values in [{lo}, {hi}]"
                )
        per = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
        bad = (labels < 0) | (labels >= c)
        return jnp.mean(jnp.where(bad, jnp.nan, per))
    if labels.shape != logits.shape:
        raise ValueError(
            f"softmax_cross_entropy: one-hot targets must have the shape of the logits "
            f"{logits.shape}, got {labels.shape}; pass integer labels of shape "
            f"{logits.shape[:-1]} otherwise"
        )
    return jnp.mean(optax.losses.softmax_cross_entropy(logits, labels))


def accuracy(outputs: Array, labels: Array, threshold: float = 0.0) -> Array:
    """Fraction of correct predictions.

    * several classes (``outputs`` ``(n, c)``, ``c > 1``): ``argmax`` against integer labels,
      or against the argmax of one-hot targets;
    * binary (``outputs`` ``(n,)`` or ``(n, 1)``): predicted class ``z > threshold``; the
      default ``0`` on logits is the lecture's boundary ``σ(z) = 0.5`` (use ``0.5`` on
      probabilities).

    Args:
      outputs: logits or probabilities, ``(n, c)`` or, binary, ``(n,)`` / ``(n, 1)``.
      labels: integer classes ``(n,)``, one-hot ``(n, c)``, or binary 0/1 ``(n,)``.
      threshold: the binary decision threshold on ``outputs``.

    Returns:
      the scalar ``(1/n) Σ [prediction_i = label_i]``.

    >>> import jax.numpy as jnp
    >>> float(accuracy(jnp.array([[2.0, 1.0], [0.0, 3.0]]), jnp.array([0, 0])))
    0.5
    >>> round(float(accuracy(jnp.array([-1.0, 2.0, 0.5]), jnp.array([0, 1, 0]))), 4)
    0.6667
    """
    outputs, labels = jnp.asarray(outputs), jnp.asarray(labels)
    several = outputs.ndim >= 1 and outputs.shape[-1] > 1
    if several and outputs.ndim == labels.ndim + 1:
        if labels.shape != outputs.shape[:-1]:
            raise ValueError(
                f"accuracy: labels of shape {labels.shape} do not fit outputs of shape "
                f"{outputs.shape}; expected {outputs.shape[:-1]}"
            )
        return jnp.mean(jnp.argmax(outputs, axis=-1) == labels)
    if several and outputs.ndim >= 2 and labels.shape == outputs.shape:
        return jnp.mean(jnp.argmax(outputs, axis=-1) == jnp.argmax(labels, axis=-1))
    outputs, labels = _binary_shapes(outputs, labels, "accuracy")
    return jnp.mean((outputs > threshold) == (labels > 0.5))
