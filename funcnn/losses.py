"""Losses and metrics, ``L(θ) = (1/n) Σ_i l(y_i, ỹ_i)``, numerically stable from logits.

Built on ``optax.losses``. Every loss takes ``(outputs, targets)`` and returns the mean
over the batch (and, for ``mse``, over every element).

Each loss and :func:`accuracy` has a domain, and refuses what lies outside it:

* **empty arrays** raise a ``ValueError`` always (the mean over no examples is undefined;
  shapes are static, so this holds under ``jax.jit`` too);
* **targets outside their domain** — binary labels outside ``[0, 1]``, class labels outside
  ``[0, c)`` or not whole numbers, one-hot / probability targets outside ``[0, 1]`` or not
  summing to 1, probabilities outside ``[0, 1]`` — raise a ``ValueError`` naming the loss
  when the values are concrete (not traced). Traced values (under ``jax.jit``, ``jax.grad``
  of the checked argument, ``jax.vmap``) cannot raise: the result is then ``nan``, never a
  silently wrong number, and :func:`~funcnn.train.fit`'s non-finite guard stops on it.
  ``fit`` checks its targets (training and validation) against its loss before training.
"""

from __future__ import annotations

from collections.abc import Callable

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
    "check_targets",
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
    _nonempty(outputs, labels, who, names)
    return outputs, labels


def _nonempty(outputs, targets, who: str, names: tuple[str, str]) -> None:
    """Refuse empty arrays: their mean would be ``nan``."""
    if outputs.size == 0 or targets.size == 0:
        raise ValueError(
            f"{who}: got empty arrays ({names[0]} of shape {outputs.shape}, {names[1]} of "
            f"shape {targets.shape}); the mean over no examples is undefined"
        )


def _refuse(bad, shown, who: str, what: str, domain: str, example: str = "e.g."):
    """``bad``, the mask of the values outside the domain; when it is concrete and holds a
    True, a ValueError naming ``who``, ``what``, the domain and the first value ``shown``
    there (an element, or a row)."""
    if _concrete(bad):
        mask = np.asarray(bad)
        if mask.any():
            first = np.asarray(shown)[mask][0]
            value = np.array2string(first, precision=6, threshold=8) if first.ndim else first
            raise ValueError(
                f"{who}: {what} must be {domain}, got {int(mask.sum())} of {mask.size} "
                f"outside it ({example} {value!s})"
            )
    return bad


def _unit_interval(values, who: str, what: str, domain: str = "in [0, 1]"):
    """The mask of ``values`` outside ``[0, 1]`` (``nan`` included), refused when concrete."""
    return _refuse(~((values >= 0) & (values <= 1)), values, who, what, domain)


def _class_labels(labels, c: int, who: str, what: str = "labels"):
    """The mask of ``labels`` that are no class index in ``[0, c)``, refused when concrete."""
    bad = (labels < 0) | (labels >= c)
    if not np.issubdtype(labels.dtype, np.integer):
        bad = bad | (labels != labels.round())  # float labels must be whole numbers
    return _refuse(bad, labels, who, what, f"in [0, {c}) for {c} classes")


def _distributions(targets, who: str, what: str = "targets"):
    """The mask of the rows (last axis) of ``targets`` that are no probability distribution:
    entries in ``[0, 1]`` summing to 1 (within ``max(10⁻³, c ε)``), refused when concrete."""
    floating = np.issubdtype(targets.dtype, np.floating)
    eps = float(jnp.finfo(targets.dtype if floating else jnp.float32).eps)
    sums = targets.sum(-1)
    tol = max(1e-3, targets.shape[-1] * eps)
    bad = ~((targets >= 0) & (targets <= 1)).all(-1) | ~(abs(sums - 1) <= tol)
    domain = "rows of probabilities in [0, 1] summing to 1 (one-hot, or soft)"
    return _refuse(bad, targets, who, what, domain, "e.g. the row")


def _masked_mean(bad, per):
    """``mean(per)``, or ``nan`` if any ``bad``: out-of-domain targets give no number."""
    return jnp.mean(jnp.where(bad, jnp.nan, per))


def mse(predictions: Array, targets: Array) -> Array:
    """Mean squared error: ``L = (1/N) Σ (y − ỹ)²`` over every element.

    This is the lecture's MSE; note that ``optax.l2_loss`` is half of it. Shapes must be
    equal (broadcasting ``(n, 1)`` against ``(n,)`` is a classic silent bug), except that
    predictions of shape ``(n, 1)`` are accepted for targets of shape ``(n,)``. Empty arrays
    raise a ValueError (their mean is undefined).

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

    Labels outside ``[0, 1]`` (a label 2 would give ``L < 0``) raise a ValueError when
    concrete; traced (under ``jit``), they make ``L`` NaN. Empty arrays raise always.

    Args:
      logits: ``z``, shape ``(n,)`` or ``(n, 1)``.
      labels: ``ỹ``, shape ``(n,)``, 0/1 or probabilities.

    Returns:
      the scalar ``L``.

    >>> import jax, jax.numpy as jnp
    >>> round(float(binary_cross_entropy(jnp.array([0.0]), jnp.array([1]))), 4)  # log 2
    0.6931
    >>> float(binary_cross_entropy(jnp.array([-100.0]), jnp.array([1])))  # finite
    100.0
    >>> binary_cross_entropy(jnp.array([0.0]), jnp.array([2]))
    Traceback (most recent call last):
    ...
    ValueError: binary_cross_entropy: labels must be in [0, 1], got 1 of 1 outside it (e.g. 2)
    >>> float(jax.jit(binary_cross_entropy)(jnp.array([0.0]), jnp.array([2])))
    nan
    """
    who = "binary_cross_entropy"
    logits, labels = _binary_shapes(logits, labels, who, ("logits", "labels"))
    bad = _unit_interval(labels, who, "labels")
    labels = labels.astype(logits.dtype)
    return _masked_mean(bad, optax.losses.sigmoid_binary_cross_entropy(logits, labels))


def binary_cross_entropy_from_probs(probs: Array, labels: Array, eps: float = 1e-7) -> Array:
    """Binary cross-entropy from probabilities ``y ∈ [0, 1]``, clipped to ``[eps, 1 − eps]``.

    ``L = −(1/n) Σ [ỹ log y + (1 − ỹ) log(1 − y)]``. Prefer :func:`binary_cross_entropy`
    on logits: it needs no clipping. Only the ends 0 and 1 are clipped (to keep ``log``
    finite): probabilities or labels outside ``[0, 1]`` raise a ValueError when concrete,
    and make ``L`` NaN when traced (under ``jit``). Empty arrays raise always.

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
    who = "binary_cross_entropy_from_probs"
    probs, labels = _binary_shapes(probs, labels, who, ("probs", "labels"))
    bad = _unit_interval(probs, who, "probs") | _unit_interval(labels, who, "labels")
    p = jnp.clip(probs, eps, 1.0 - eps)
    labels = labels.astype(p.dtype)
    return -_masked_mean(bad, labels * jnp.log(p) + (1.0 - labels) * jnp.log1p(-p))


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """Softmax cross-entropy: ``L = −(1/n) Σ_i Σ_k ỹ_ik log softmax_k(z_i)``.

    ``labels`` are integer classes of shape ``logits.shape[:-1]`` (then the loss is
    ``−(1/n) Σ_i log softmax_{ỹ_i}(z_i)``), or one-hot / probability targets of the same
    shape as ``logits``, each row a distribution (entries in ``[0, 1]`` summing to 1).
    Labels outside ``[0, c)``, or targets that are no distribution, raise a ValueError when
    concrete; traced (under ``jit``) they make the loss NaN rather than a silently wrong
    number. Empty arrays raise always.

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
    who = "softmax_cross_entropy"
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"{who}: integer labels must have shape {logits.shape[:-1]} "
                f"(logits without the class axis), got {labels.shape}"
            )
        _nonempty(logits, labels, who, ("logits", "labels"))
        bad = _class_labels(labels, logits.shape[-1], who)
        per = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
        return _masked_mean(bad, per)
    if labels.shape != logits.shape or logits.ndim < 1:
        raise ValueError(
            f"{who}: one-hot targets must have the shape of the logits "
            f"{logits.shape}, got {labels.shape}; pass integer labels of shape "
            f"{logits.shape[:-1]} otherwise"
        )
    _nonempty(logits, labels, who, ("logits", "targets"))
    bad = _distributions(labels, who)
    return _masked_mean(bad, optax.losses.softmax_cross_entropy(logits, labels))


def accuracy(outputs: Array, labels: Array, threshold: float = 0.0) -> Array:
    """Fraction of correct predictions.

    * several classes (``outputs`` ``(n, c)``, ``c > 1``): ``argmax`` against integer labels,
      or against the argmax of one-hot targets;
    * binary (``outputs`` ``(n,)`` or ``(n, 1)``): predicted class ``z > threshold``; the
      default ``0`` on logits is the lecture's boundary ``σ(z) = 0.5`` (use ``0.5`` on
      probabilities).

    Labels outside their domain (classes outside ``[0, c)``, binary labels outside
    ``[0, 1]``, one-hot rows that are no distribution) raise a ValueError when concrete and
    give NaN when traced (under ``jit``); empty arrays raise always.

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
        _nonempty(outputs, labels, "accuracy", ("outputs", "labels"))
        bad = _class_labels(labels, outputs.shape[-1], "accuracy")
        return _masked_mean(bad, jnp.argmax(outputs, axis=-1) == labels)
    if several and outputs.ndim >= 2 and labels.shape == outputs.shape:
        _nonempty(outputs, labels, "accuracy", ("outputs", "targets"))
        bad = _distributions(labels, "accuracy")
        correct = jnp.argmax(outputs, axis=-1) == jnp.argmax(labels, axis=-1)
        return _masked_mean(bad, correct)
    outputs, labels = _binary_shapes(outputs, labels, "accuracy")
    bad = _unit_interval(labels, "accuracy", "binary labels")
    return _masked_mean(bad, (outputs > threshold) == (labels > 0.5))


def check_targets(
    loss: Callable, targets, output_shape: tuple[int, ...], who: str, what: str = "targets"
) -> None:
    """Check concrete ``targets`` against the domain of ``loss``, one of this module's
    losses (any other passes unchecked), for model outputs of shape ``output_shape``.

    The loss itself can only make its value NaN for targets it sees traced, under ``jit``;
    :func:`~funcnn.train.fit` calls this on its training and validation targets first,
    so that they are refused before training, by name: binary labels in ``[0, 1]`` for the
    binary cross-entropies, class labels in ``[0, c)`` or distributions for
    :func:`softmax_cross_entropy`.

    Args:
      loss: the loss the targets are for.
      targets: the targets, concrete (NumPy or JAX arrays).
      output_shape: the model's output shape (``c``, the classes, is its last size).
      who: the caller, first in the message (``"fit"``).
      what: the targets' name in the message (``"y"``).

    >>> check_targets(binary_cross_entropy, np.array([0, 1, 1]), (1, 1), "fit", "y")
    >>> check_targets(binary_cross_entropy, np.array([0, 1, 2]), (1, 1), "fit", "y")
    Traceback (most recent call last):
    ...
    ValueError: fit: y must be in [0, 1] for binary_cross_entropy, got 1 of 3 outside it (e.g. 2)
    """
    targets = np.asarray(targets)
    if loss in (binary_cross_entropy, binary_cross_entropy_from_probs):
        _unit_interval(targets, who, what, f"in [0, 1] for {loss.__name__}")
    elif loss is softmax_cross_entropy and np.issubdtype(targets.dtype, np.integer):
        _class_labels(targets, output_shape[-1], who, what)
    elif loss is softmax_cross_entropy and np.issubdtype(targets.dtype, np.floating):
        _distributions(targets, who, what)
