"""Loss and metrics over a whole dataset, in eval mode: :func:`evaluate`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import checks, compiler
from ..data import check_xy
from .model import Metrics, default_metrics, model_defaults, stateful_apply
from .settings import Settings, check_state


def eval_function(apply: Callable, loss: Callable, metrics: Metrics) -> Callable:
    """The compiled ``(params, state, x, y) -> {"loss": L, name: metric, ...}``, with
    ``train=False``, for ``apply`` in its state-threading form (the state is only read)."""

    def fn(params, state, x, y):
        out, _ = apply(params, state, x, train=False)
        logs = {"loss": loss(out, y)}
        for name, m in metrics.items():
            logs[name] = m(out, y)
        return logs

    return compiler.jit(fn)


def validation_function(settings: Settings) -> Callable | None:
    """The compiled validation loss and metrics of a ``fit`` run; ``None`` without
    validation data."""
    if settings.validation is None:
        return None
    return eval_function(settings.apply, settings.loss, settings.metrics)


def evaluate_in_chunks(
    fn: Callable, params, state, x, y, batch_size: int = 4096
) -> dict[str, float]:
    """``m = Σ_c n_c m_c / Σ_c n_c`` over chunks ``c`` of ``batch_size`` examples, where
    ``m_c = fn(params, state, x_c, y_c)`` and ``n_c`` is the chunk's size."""
    chunks = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        chunks.append((len(xb), fn(params, state, xb, yb)))
    total = sum(n for n, _ in chunks)
    keys = chunks[0][1].keys()
    return {k: float(sum(n * np.asarray(logs[k]) for n, logs in chunks) / total) for k in keys}


def evaluate(
    model,
    params,
    x,
    y,
    *,
    loss: Callable | None = None,
    metrics: Metrics | None = None,
    batch_size: int = 4096,
    state: Any = None,
) -> dict[str, float]:
    """Loss and metrics over a whole dataset, in eval mode (``train=False``).

    Evaluated in chunks of ``batch_size``; each mean is the chunk means weighted by chunk
    size, ``m = Σ_c n_c m_c / Σ_c n_c``, which equals the mean over the whole set.

    Args:
      model: a :class:`~funcnn.core.Layer` (a :class:`~funcnn.core.Model`'s ``loss`` /
        ``metric`` are the defaults) or an apply function.
      params: the model's params.
      x: the inputs, ``(n, ...)``.
      y: the targets, ``(n, ...)``.
      loss: ``loss(outputs, targets)``; defaults to ``model.loss``.
      metrics: ``name -> fn(outputs, targets)``; defaults to ``{"accuracy": model.metric}``.
      batch_size: the chunk size ``n_c``.
      state: the model's state (BatchNorm's running statistics), needed when the model
        keeps state; only read.

    Returns:
      ``{"loss": L, name: metric, ...}`` as floats.

    >>> import jax
    >>> from funcnn import data, models
    >>> x, y = data.blobs(100)
    >>> model = models.logistic_regression()
    >>> _, params = model.init(jax.random.key(0), (-1, 2))
    >>> logs = evaluate(model, params, x, y, batch_size=50)  # two chunks of 50
    >>> sorted(logs), 0.0 <= logs["accuracy"] <= 1.0
    (['accuracy', 'loss'], True)
    """
    x, y = check_xy(x, y, "evaluate")
    _, default_loss, metric = model_defaults(model)
    loss = loss or default_loss
    if loss is None:
        raise ValueError("evaluate: pass loss=..., the model carries none")
    batch_size = checks.positive_int(batch_size, "evaluate: batch_size")
    state = check_state(model, state, "evaluate")
    metrics = default_metrics(metric, metrics, "evaluate: metrics")
    fn = eval_function(stateful_apply(model), loss, metrics)
    return evaluate_in_chunks(fn, params, state, x, y, batch_size)
