"""Loss and metrics over a whole dataset, in eval mode: :func:`evaluate`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .. import checks, compiler
from ..data import check_xy
from .model import Metrics, default_metrics, model_defaults, stateful_apply
from .settings import check_state

EVAL_CHUNK = 4096  # examples evaluated per compiled call (per chunk inside fit's program)


def eval_logs(apply: Callable, loss: Callable, metrics: Metrics) -> Callable:
    """``(params, state, x, y) -> {"loss": L, name: metric, ...}`` with ``train=False``, for
    ``apply`` in its state-threading form (the state is only read); not compiled."""

    def fn(params, state, x, y):
        out, _ = apply(params, state, x, train=False)
        logs = {"loss": loss(out, y)}
        for name, m in metrics.items():
            logs[name] = m(out, y)
        return logs

    return fn


@functools.lru_cache(maxsize=32)
def compiled_eval(apply: Callable, loss: Callable, metrics: tuple) -> Callable:
    """:func:`eval_logs` compiled, once per setup (``metrics`` as ``(name, fn)`` pairs)."""
    return compiler.jit(eval_logs(apply, loss, dict(metrics)))


def chunk_sizes(n: int, chunk: int) -> list[int]:
    """The sizes ``n_c`` of the chunks of ``n`` examples, ``chunk`` each but the last.

    >>> chunk_sizes(10, 4)
    [4, 4, 2]
    """
    return [min(chunk, n - start) for start in range(0, n, chunk)]


def chunk_means(sizes: list[int], chunk_logs: dict[str, Any]) -> dict[str, float]:
    """``m = Σ_c n_c m_c / Σ_c n_c`` (in float64) from each chunk's mean ``m_c``.

    >>> chunk_means([4, 2], {"loss": [1.0, 4.0]})
    {'loss': 2.0}
    """
    w = np.asarray(sizes, np.float64)
    return {k: float(w @ np.asarray(v, np.float64) / w.sum()) for k, v in chunk_logs.items()}


def mean_over_chunks(fn: Callable, params, state, chunks) -> dict[str, float] | None:
    """:func:`chunk_means` of ``m_c = fn(params, state, x_c, y_c)`` over the pieces
    ``(x_c, y_c)`` of ``chunks``, each put on the device in turn and all read at once at the
    end; ``None`` when there is no piece."""
    sizes, logs = [], []
    for x, y in chunks:
        sizes.append(len(x))
        logs.append(fn(params, state, x, y))
    if not logs:
        return None
    logs = jax.device_get(logs)
    return chunk_means(sizes, {k: [c[k] for c in logs] for k in logs[0]})


def evaluate_in_chunks(
    fn: Callable, params, state, x, y, batch_size: int = EVAL_CHUNK
) -> dict[str, float]:
    """:func:`mean_over_chunks` over chunks of ``batch_size`` examples of ``(x, y)``."""
    pieces = ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size))
    means = mean_over_chunks(fn, params, state, pieces)
    assert means is not None  # check_xy refuses empty data
    return means


def evaluate(
    model,
    params,
    x,
    y,
    *,
    loss: Callable | None = None,
    metrics: Metrics | None = None,
    batch_size: int = EVAL_CHUNK,
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
    fn = compiler.jit(eval_logs(stateful_apply(model), loss, metrics))
    return evaluate_in_chunks(fn, params, state, x, y, batch_size)
