"""What training knows of a model: its apply function, and the loss and metric of a head.

A :class:`~funcnn.core.Model` carries its head's ``loss`` and ``metric``; a plain
:class:`~funcnn.core.Layer` has neither; a bare function is an apply function
``apply(params, x, *, key=None, train=False) -> outputs``.

Training runs every model through its state-threading form
``apply(params, state, x, *, key=None, train=False) -> (outputs, state)``: a stateful
layer's own ``apply_with_state``, or, for anything stateless, its plain apply with the
empty state ``{}`` passed through (which adds nothing to the compiled programs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax

from .. import checks
from ..core import Layer, Model

Metrics = Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]]


def model_defaults(model) -> tuple[Callable, Callable | None, Callable | None]:
    """``(apply, loss, metric)`` of ``model``; ``None`` for what the model does not carry.

    >>> from funcnn import layers, losses, models
    >>> apply, loss, metric = model_defaults(models.logistic_regression())
    >>> loss is losses.binary_cross_entropy, metric is losses.accuracy
    (True, True)
    >>> model_defaults(layers.Dense(2))[1:], model_defaults(abs)
    ((None, None), (<built-in function abs>, None, None))
    """
    if isinstance(model, Model):
        return model.apply, model.loss, model.metric
    if isinstance(model, Layer):
        return model.apply, None, None
    if callable(model):
        return model, None, None
    raise TypeError(f"expected a model (Layer) or an apply function, got {model!r}")


def stateful_apply(model) -> Callable:
    """``apply(params, state, x, *, key=None, train=False) -> (outputs, state)`` of
    ``model`` (a Layer or an apply function); the same function for the same model, so
    that the compiled programs keyed by it are found again.

    >>> import jax.numpy as jnp
    >>> from funcnn import layers
    >>> y, state = stateful_apply(layers.Relu())({}, {}, jnp.array([-1.0, 2.0]))
    >>> y.tolist(), state
    ([0.0, 2.0], {})
    """
    if isinstance(model, Layer) and model.with_state is not None:  # model.stateful, narrowed
        return model.with_state[1]
    return _passing_state(model_defaults(model)[0])


@functools.lru_cache(maxsize=256)
def _passing_state(apply: Callable) -> Callable:
    def apply_with_state(params, state, x, *, key=None, train=False):
        return apply(params, x, key=key, train=train), state

    return apply_with_state


def default_metrics(
    metric: Callable | None, metrics: Metrics | None, argument: str = "metrics"
) -> dict[str, Callable]:
    """``metrics`` as a dict; when not given, ``{"accuracy": metric}`` (or ``{}``).

    ``metrics`` must map names to functions ``fn(outputs, targets)``; anything else (a list
    of functions, say) is a ``TypeError`` naming ``argument`` (``"fit: metrics"``).

    >>> default_metrics(None, None), default_metrics(abs, None), default_metrics(abs, {})
    ({}, {'accuracy': <built-in function abs>}, {})
    >>> default_metrics(None, [abs], "fit: metrics")
    Traceback (most recent call last):
    ...
    TypeError: fit: metrics must be a dict of name -> fn(outputs, targets), ...; got a list
    """
    if metrics is None:
        return {"accuracy": metric} if metric is not None else {}
    return checks.named_functions(metrics, argument)
