"""Training: a pure, jit-compiled step and ``fit``, the loop of epochs around it.

A training step is the pure function

``(params, opt_state, batch, key) -> (params, opt_state, metrics)``

that computes ``L(θ)`` on the batch, its gradient ``∇L(θ)`` with ``jax.grad``, and the
optimizer's update (for plain SGD, ``θ ← θ − α ∇L(θ)``). ``fit`` runs it over shuffled
minibatches for a number of epochs: ``batch_size=1`` is SGD, ``batch_size=n`` full-batch
gradient descent, anything between minibatch SGD. With ``scan=True`` each epoch is one
compiled ``lax.scan`` over its minibatches, with the data kept on the device.

This module knows models only through their ``apply`` function (and, if present, the
``loss`` / ``metric`` attributes a model from :mod:`funcnn.models` carries).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .data import as_key, check_xy

__all__ = ["train_step", "evaluate", "fit", "FitResult"]

Metrics = Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    ``params`` are the best params by the monitored quantity when early stopping restored
    them, otherwise the last ones. ``history`` maps ``"loss"``, each metric, and their
    ``"val_"`` counterparts to one float per epoch.
    """

    params: Any
    opt_state: Any
    history: dict[str, list[float]]
    best_epoch: int | None
    epochs_run: int


def _apply_fn(model) -> Callable:
    apply = getattr(model, "apply", model)
    if not callable(apply):
        raise TypeError(f"expected a model (Layer) or an apply function, got {model!r}")
    return apply


def _make_step(apply: Callable, loss: Callable, optimizer, metrics: Metrics) -> Callable:
    def step(params, opt_state, x, y, key):
        def objective(p):
            out = apply(p, x, key=key, train=True)
            return loss(out, y), out

        (value, out), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        logs = {"loss": value}
        for name, fn in metrics.items():
            logs[name] = fn(jax.lax.stop_gradient(out), y)
        return params, opt_state, logs

    return step


def train_step(
    apply: Callable,
    loss: Callable,
    optimizer: optax.GradientTransformation,
    *,
    metrics: Metrics | None = None,
    jit: bool = True,
    donate: bool = False,
    mesh: Any = None,
) -> Callable:
    """Build the training step ``(params, opt_state, batch, key) -> (params, opt_state, metrics)``.

    For ``batch = (x, y)`` it computes ``L = loss(apply(params, x, key=key, train=True), y)``,
    the gradient ``g = ∇_θ L`` and ``updates, opt_state = optimizer.update(g, opt_state,
    params)``; then ``params ← params + updates`` (for ``optax.sgd(α)``: ``θ − α g``).
    ``metrics`` always holds ``"loss"`` and each named metric of the outputs.

    Args:
      apply: a model's apply function (or the model itself).
      loss: ``loss(outputs, targets) -> scalar``.
      optimizer: any optax transformation (SGD, Momentum, RMSProp, Adam, ...).
      metrics: extra ``name -> fn(outputs, targets)`` to report.
      jit: compile the step with ``jax.jit``.
      donate: let XLA reuse the buffers of ``params`` and ``opt_state`` (they must not be
        used after the call).
      mesh: a :class:`jax.sharding.Mesh`: split the batch over its ``"data"`` axis inside
        the step (see :mod:`funcnn.distributed`).

    >>> import jax, optax
    >>> from funcnn import models, losses
    >>> model = models.logistic_regression()
    >>> _, params = model.init(jax.random.key(0), (-1, 2))
    >>> opt = optax.sgd(0.1)
    >>> step = train_step(model.apply, losses.binary_cross_entropy, opt)
    >>> x, y = jax.numpy.ones((4, 2)), jax.numpy.ones(4)
    >>> params, state, logs = step(params, opt.init(params), (x, y), None)
    >>> sorted(logs)
    ['loss']
    """
    if not hasattr(optimizer, "update") or not hasattr(optimizer, "init"):
        raise TypeError(f"train_step: optimizer must be an optax transformation, got {optimizer!r}")
    inner = _make_step(_apply_fn(apply), loss, optimizer, dict(metrics or {}))

    def step(params, opt_state, batch, key=None):
        x, y = batch
        return inner(params, opt_state, x, y, key)

    if mesh is not None:
        from . import distributed

        step = distributed.data_parallel(step, mesh)
    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def _eval_fn(apply, loss, metrics):
    def fn(params, x, y):
        out = apply(params, x, train=False)
        logs = {"loss": loss(out, y)}
        for name, m in metrics.items():
            logs[name] = m(out, y)
        return logs

    return jax.jit(fn)


def _weighted_mean(chunks: list[tuple[int, dict]]) -> dict[str, float]:
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
    _fn: Callable | None = None,
) -> dict[str, float]:
    """Loss and metrics over a whole dataset, in eval mode (``train=False``).

    Evaluated in chunks of ``batch_size``; each mean is the chunk means weighted by chunk
    size, which equals the mean over the whole set.
    """
    x, y = check_xy(x, y, "evaluate")
    loss = loss or getattr(model, "loss", None)
    if loss is None:
        raise ValueError("evaluate: pass loss=..., the model carries none")
    if metrics is None:
        metric = getattr(model, "metric", None)
        metrics = {"accuracy": metric} if metric is not None else {}
    fn = _fn or _eval_fn(_apply_fn(model), loss, dict(metrics))
    chunks = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        chunks.append((len(xb), fn(params, xb, yb)))
    return _weighted_mean(chunks)


def _positive_int(value, argument: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"fit: {argument} must be a positive int, got {value!r}")
    return int(value)


def _check_labels(apply, loss, params, x, y) -> None:
    """Trace the model and loss on one example (no compile) and check class labels."""
    out = jax.eval_shape(lambda p, xx: apply(p, xx, train=False), params, x[:1])
    jax.eval_shape(loss, out, jax.ShapeDtypeStruct((1,) + y.shape[1:], y.dtype))
    if np.issubdtype(y.dtype, np.integer) and len(out.shape) == y.ndim + 1 and out.shape[-1] > 1:
        c = out.shape[-1]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= c:
            raise ValueError(
                f"fit: y holds class labels in [{lo}, {hi}], but the model has {c} outputs; "
                f"expected labels in [0, {c})"
            )


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _progress(epochs: int, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra
        return None
    return tqdm(total=epochs, unit="epoch", leave=True)


def fit(
    model,
    params,
    x,
    y,
    *,
    loss: Callable | None = None,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 10,
    batch_size: int | None = None,
    key: jax.Array | int = 0,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    metrics: Metrics | None = None,
    patience: int | None = None,
    monitor: str | None = None,
    min_delta: float = 0.0,
    restore_best: bool | None = None,
    scan: bool = False,
    progress: bool | None = None,
    callback: Callable[[int, dict[str, float]], Any] | None = None,
    opt_state: Any = None,
    mesh: Any = None,
) -> FitResult:
    """Train ``model`` on ``(x, y)`` with minibatch gradient descent.

    Each epoch shuffles the ``n`` examples (from ``key``; the same key gives bit-identical
    results) and takes ``⌈n / batch_size⌉`` steps ``θ ← update(θ, ∇L_batch(θ))``.

    Args:
      model: a :class:`~funcnn.core.Layer` (its ``loss`` / ``metric`` are the defaults) or an
        apply function.
      params: the initial params (not modified).
      x: the training inputs, ``(n, ...)`` with ``n > 0``.
      y: the training targets, ``(n, ...)``: ``len(y) == len(x)``.
      loss: ``loss(outputs, targets)``; defaults to ``model.loss``.
      optimizer: an optax optimizer; defaults to ``optax.adam(1e-3)``.
      epochs: the number of passes over the data.
      batch_size: ``1`` is SGD, ``None`` (or ``n``) full-batch GD, between: minibatch SGD.
      key: a PRNG key or int seed for the shuffles and dropout.
      shuffle: reshuffle every epoch.
      validation_data: ``(x_val, y_val)``, evaluated after each epoch with ``train=False``.
      metrics: ``name -> fn(outputs, targets)``; defaults to ``{"accuracy": model.metric}``.
      patience: stop after this many epochs without improvement of ``monitor`` and restore
        the best params.
      monitor: what early stopping watches: ``"val_loss"`` (default with validation data),
        ``"loss"``, or a metric such as ``"val_accuracy"`` (maximized).
      min_delta: the smallest change that counts as an improvement.
      restore_best: hand back the best params rather than the last; default: when
        ``patience`` is given.
      scan: run each epoch as one compiled ``lax.scan`` over its minibatches.
      progress: a tqdm bar; default: only when stderr is a terminal.
      callback: ``callback(epoch, logs)`` after every epoch.
      opt_state: the optimizer state to continue from; default ``optimizer.init(params)``.
      mesh: a :class:`jax.sharding.Mesh` for data-parallel training: each batch is split
        over its ``"data"`` axis, params and optimizer state replicated (or kept as placed
        by :func:`funcnn.distributed.shard_params`); ``batch_size`` and the last batch must
        divide by the axis size. See :mod:`funcnn.distributed`.

    Returns:
      a :class:`FitResult` ``(params, opt_state, history, best_epoch, epochs_run)``.
    """
    apply = _apply_fn(model)
    x, y = check_xy(x, y, "fit")
    loss = loss or getattr(model, "loss", None)
    if loss is None:
        raise ValueError("fit: pass loss=..., the model carries none")
    if not callable(loss):
        raise TypeError(f"fit: loss must be callable, got {loss!r}")
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    if not hasattr(optimizer, "update"):
        raise TypeError(f"fit: optimizer must be an optax transformation, got {optimizer!r}")
    if metrics is None:
        metric = getattr(model, "metric", None)
        metrics = {"accuracy": metric} if metric is not None else {}
    metrics = dict(metrics)
    epochs = _positive_int(epochs, "epochs")
    n = len(x)
    batch_size = min(_positive_int(batch_size, "batch_size", allow_none=True) or n, n)
    patience = _positive_int(patience, "patience", allow_none=True)
    key = as_key(key, "fit: key")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
        x_val, y_val = check_xy(*validation_data, "fit: validation_data")
    monitor = monitor or ("val_loss" if validation_data is not None else "loss")
    known = ["loss", *metrics] + (
        ["val_loss", *(f"val_{m}" for m in metrics)] if validation_data is not None else []
    )
    if monitor not in known:
        raise ValueError(f"fit: monitor must be one of {known}, got {monitor!r}")
    mode = "min" if monitor.endswith("loss") else "max"
    restore_best = patience is not None if restore_best is None else restore_best
    _check_labels(apply, loss, params, x, y)

    step = _make_step(apply, loss, optimizer, metrics)
    n_full, rem = divmod(n, batch_size)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    if mesh is not None:
        from . import distributed

        distributed.check_divisible(batch_size, mesh, who="fit")
        if rem:
            last = f"the last batch, {n} mod batch_size {batch_size},"
            distributed.check_divisible(rem, mesh, argument=last, who="fit")
        step = distributed.data_parallel(step, mesh, batch_argnums=(2, 3))
        x_dev, y_dev = distributed.replicate((x, y), mesh)

    def order(epoch_key):
        return (
            jax.random.permutation(jax.random.fold_in(epoch_key, 0), n)
            if shuffle
            else (jnp.arange(n))
        )

    @jax.jit
    def indices(epoch_key):
        return order(epoch_key)

    loop_step = jax.jit(
        lambda p, o, xs, ys, idx, k: step(p, o, xs[idx], ys[idx], k), donate_argnums=(0, 1)
    )

    def scan_epoch(params, opt_state, xs, ys, epoch_key):
        perm = order(epoch_key)
        idx = perm[: n_full * batch_size].reshape(n_full, batch_size)

        def body(carry, inp):
            p, o = carry
            i, s = inp
            p, o, logs = step(p, o, xs[i], ys[i], jax.random.fold_in(epoch_key, s + 1))
            return (p, o), logs

        (params, opt_state), logs = jax.lax.scan(
            body, (params, opt_state), (idx, jnp.arange(n_full))
        )
        return params, opt_state, logs, perm

    scan_epoch = jax.jit(scan_epoch, donate_argnums=(0, 1))
    eval_fn = _eval_fn(apply, loss, metrics) if validation_data is not None else None

    params = jax.tree_util.tree_map(jnp.array, params)  # our own copy: buffers get donated
    opt_state = (
        optimizer.init(params)
        if opt_state is None
        else jax.tree_util.tree_map(jnp.array, opt_state)
    )
    if mesh is not None:
        params, opt_state = distributed.place((params, opt_state), mesh)
    history: dict[str, list[float]] = {k: [] for k in known}
    best_value, best_epoch, best_params, wait = None, None, None, 0
    bar = _progress(epochs, progress)
    epoch = 0
    try:
        for epoch in range(epochs):
            epoch_key = jax.random.fold_in(key, epoch)
            chunks = []
            if scan and n_full > 0:
                params, opt_state, logs, perm = scan_epoch(
                    params, opt_state, x_dev, y_dev, epoch_key
                )
                chunks.append((n_full * batch_size, {k: jnp.mean(v) for k, v in logs.items()}))
                first = n_full
            else:
                perm = indices(epoch_key)
                first = 0
            for s in range(first, n_full + (rem > 0)):
                idx = perm[s * batch_size : (s + 1) * batch_size]
                params, opt_state, logs = loop_step(
                    params, opt_state, x_dev, y_dev, idx, jax.random.fold_in(epoch_key, s + 1)
                )
                chunks.append((len(idx), logs))
            epoch_logs = _weighted_mean(chunks)
            if eval_fn is not None:
                val = evaluate(apply, params, x_val, y_val, loss=loss, metrics=metrics, _fn=eval_fn)
                epoch_logs.update({f"val_{k}": v for k, v in val.items()})
            for k in known:
                history[k].append(epoch_logs[k])
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in epoch_logs.items()})
            if callback is not None:
                callback(epoch, epoch_logs)
            value = epoch_logs[monitor]
            if math.isfinite(value) and _improved(value, best_value, mode, min_delta):
                best_value, best_epoch, wait = value, epoch, 0
                if restore_best:
                    best_params = jax.tree_util.tree_map(jnp.copy, params)
            else:
                wait += 1
                if patience is not None and wait >= patience:
                    break
    finally:
        if bar is not None:
            bar.close()
    if restore_best and best_params is not None:
        params = best_params
    return FitResult(params, opt_state, history, best_epoch, epoch + 1)
