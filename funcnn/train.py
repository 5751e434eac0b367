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

import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import checkpoint
from .compiler import jit as _jit
from .data import as_key, check_xy
from .data import shuffle as shuffle_indices

__all__ = ["train_step", "evaluate", "fit", "FitResult", "NonFiniteError"]

Metrics = Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    ``params`` are the best params by the monitored quantity when early stopping restored
    them, otherwise the last ones. ``history`` maps ``"loss"``, each metric, and their
    ``"val_"`` counterparts to one float per epoch.

    Fields:

    * ``params``: the trained params (a pytree like the initial ones).
    * ``opt_state``: the optimizer state after the last step, to continue training.
    * ``history``: ``{name: [value per epoch]}``.
    * ``best_epoch``: the epoch (from 0) with the best monitored value; ``None`` if no
      epoch had a finite one.
    * ``epochs_run``: how many epochs ran (fewer than asked after early stopping).
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


class NonFiniteError(FloatingPointError):
    """:func:`fit` met a non-finite loss, gradient or updated params.

    ``epoch`` and ``step`` (both counted from 0) locate the first bad step; ``params`` and
    ``opt_state`` are the last finite ones, from just before that step.

    >>> err = NonFiniteError("fit: non-finite loss", epoch=0, step=3, params={}, opt_state=())
    >>> err.epoch, err.step, isinstance(err, FloatingPointError)
    (0, 3, True)
    """

    def __init__(self, message: str, *, epoch: int, step: int, params: Any, opt_state: Any):
        super().__init__(message)
        self.epoch, self.step, self.params, self.opt_state = epoch, step, params, opt_state


_GUARDS = ("raise", "skip", "ignore")


def _all_finite(*trees) -> jax.Array:
    """``True`` when every inexact leaf of every tree is finite."""
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree_util.tree_leaves(trees)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def _make_step(
    apply: Callable, loss: Callable, optimizer, metrics: Metrics, guard: str = "ignore"
) -> Callable:
    """``step(params, opt_state, x, y, key, live) -> (params, opt_state, logs, finite, live)``.

    With a guard, the update is applied only when ``finite`` (loss, gradients and new
    params all finite) and ``live``; ``"raise"`` makes ``live`` sticky, so after the first
    bad step the params stay the last finite ones. ``"flag"`` only reports ``finite`` and
    applies every update: the caller replays up to the first bad step instead (cheaper
    inside a scan than a select on every leaf at every step).
    """

    def step(params, opt_state, x, y, key, live=True):
        def objective(p):
            out = apply(p, x, key=key, train=True)
            return loss(out, y), out

        (value, out), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        logs = {"loss": value}
        for name, fn in metrics.items():
            logs[name] = fn(jax.lax.stop_gradient(out), y)
        if guard == "ignore":
            return new_params, new_opt_state, logs, jnp.asarray(True), live
        finite = _all_finite(value, grads, new_params)
        if guard == "flag":
            return new_params, new_opt_state, logs, finite, live
        take = finite & live

        def keep(new, old):
            return jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new, old)

        live = take if guard == "raise" else live
        return keep(new_params, params), keep(new_opt_state, opt_state), logs, finite, live

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
        return inner(params, opt_state, x, y, key)[:3]

    if mesh is not None:
        from . import distributed

        step = distributed.data_parallel(step, mesh)
    if not jit:
        return step
    return _jit(step, donate_argnums=(0, 1) if donate else ())


def _eval_fn(apply, loss, metrics):
    def fn(params, x, y):
        out = apply(params, x, train=False)
        logs = {"loss": loss(out, y)}
        for name, m in metrics.items():
            logs[name] = m(out, y)
        return logs

    return _jit(fn)


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
    size, ``m = Σ_c n_c m_c / Σ_c n_c``, which equals the mean over the whole set.

    Args:
      model: a :class:`~funcnn.core.Layer` (its ``loss`` / ``metric`` are the defaults) or an
        apply function.
      params: the model's params.
      x: the inputs, ``(n, ...)``.
      y: the targets, ``(n, ...)``.
      loss: ``loss(outputs, targets)``; defaults to ``model.loss``.
      metrics: ``name -> fn(outputs, targets)``; defaults to ``{"accuracy": model.metric}``.
      batch_size: the chunk size ``n_c``.

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


@functools.lru_cache(maxsize=64)
def _traced_output(apply, loss, treedef, leaves, x_spec, y_spec):
    """The model's output shape on one example, and the loss traced on it (no compile)."""
    params = jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(*s) for s in leaves])
    x1 = jax.ShapeDtypeStruct(*x_spec)
    out = jax.eval_shape(lambda p, xx: apply(p, xx, train=False), params, x1)
    jax.eval_shape(loss, out, jax.ShapeDtypeStruct(*y_spec))
    return out


def _check_labels(apply, loss, params, x, y) -> None:
    """Trace the model and loss on one example (no compile) and check class labels.

    The trace is cached by the model, loss and shapes, so a repeated ``fit`` costs nothing.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    specs = tuple((np.shape(a), jnp.result_type(a)) for a in leaves)
    x_spec, y_spec = ((1,) + x.shape[1:], x.dtype), ((1,) + y.shape[1:], y.dtype)
    try:
        out = _traced_output(apply, loss, treedef, specs, x_spec, y_spec)
    except TypeError as err:
        if "unhashable" not in str(err):
            raise
        out = _traced_output.__wrapped__(apply, loss, treedef, specs, x_spec, y_spec)
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


def _progress(epochs: int, progress: bool | None, initial: int = 0):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra
        return None
    return tqdm(total=epochs, initial=initial, unit="epoch", leave=True)


def _epoch_means(sizes: list[int], finite: list[bool], logs: dict[str, list[float]]):
    """``Σ_i n_i l_i / Σ_i n_i`` over the epoch's finite steps ``i`` (``n_i`` their batch sizes).

    NaN when no step counted (every step skipped as non-finite).
    """
    ok = np.asarray(finite, bool)
    w = np.asarray(sizes, np.float64) * ok
    total = w.sum()
    return {
        k: float(np.sum(w * np.where(ok, np.asarray(v, np.float64), 0.0)) / total)
        if total > 0
        else math.nan
        for k, v in logs.items()
    }


class _State:
    """Everything a run needs to continue exactly: what a checkpoint holds.

    ``epoch`` / ``step`` are the position of the next step; ``sizes``, ``finite`` and
    ``logs`` record the steps already taken in the current epoch.
    """

    def __init__(self, params, opt_state, key, history: dict[str, list[float]]):
        self.params, self.opt_state, self.key, self.history = params, opt_state, key, history
        self.epoch = self.step = self.wait = self.epochs_run = 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_params = None
        self.stopped = False
        self.new_epoch()

    def new_epoch(self) -> None:
        self.sizes: list[int] = []
        self.finite: list[bool] = []
        self.logs: dict[str, list[float]] = {}

    def record(self, sizes, finite, logs: dict[str, Any]) -> None:
        self.sizes += [int(v) for v in sizes]
        self.finite += [bool(v) for v in finite]
        for k, v in logs.items():
            self.logs.setdefault(k, []).extend(float(u) for u in np.ravel(v))

    _META = ("epoch", "step", "wait", "epochs_run", "best_value", "best_epoch", "stopped")
    _META += ("history", "sizes", "finite", "logs")

    def tree(self) -> dict[str, Any]:
        tree = {"params": self.params, "opt_state": self.opt_state, "key": self.key}
        if self.best_params is not None:
            tree["best_params"] = self.best_params
        return tree

    def meta(self, config: dict) -> dict[str, Any]:
        meta = {name: getattr(self, name) for name in self._META}
        return {**meta, "config": config, "has_best_params": self.best_params is not None}

    def restore(self, tree: dict[str, Any], meta: dict[str, Any]) -> None:
        for name in self._META:
            setattr(self, name, meta[name])
        self.params, self.opt_state, self.key = tree["params"], tree["opt_state"], tree["key"]
        self.best_params = tree.get("best_params")


class _Checkpoints:
    """A run's checkpoint folder: ``step_<g>.npz`` after ``g`` steps (the last ``keep``)
    and ``best.npz``, the state after the best epoch by the monitored quantity."""

    def __init__(self, folder: Path, keep: int, config: dict):
        self.folder, self.keep, self.config = folder, keep, config
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.npz.*.tmp"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)

    def steps(self) -> list[tuple[int, Path]]:
        found = [(f.stem[5:], f) for f in self.folder.glob("step_*.npz")]
        return sorted((int(g), f) for g, f in found if g.isdigit())

    def save(self, g: int, state: _State) -> None:
        path = self.folder / f"step_{g:010d}.npz"
        checkpoint.save(path, state.tree(), meta=state.meta(self.config))
        for _, old in self.steps()[: -self.keep]:
            old.unlink(missing_ok=True)

    def save_best(self, state: _State) -> None:
        checkpoint.save(self.folder / "best.npz", state.tree(), meta=state.meta(self.config))

    def restore(self, state: _State) -> bool:
        """Load the newest readable checkpoint into ``state``; False if there is none."""
        where = f"fit: checkpoint_dir {str(self.folder)!r}"
        for _, path in reversed(self.steps()):
            try:
                meta = checkpoint.load_meta(path)
            except ValueError as err:
                warnings.warn(f"{where}: skipping an unreadable checkpoint: {err}", stacklevel=3)
                continue
            for name in ("n", "batch_size", "shuffle"):
                if meta["config"][name] != self.config[name]:
                    raise ValueError(
                        f"{where}: the saved run has {name}={meta['config'][name]!r}, this call "
                        f"{name}={self.config[name]!r}; resume with the same settings"
                    )
            if set(meta["history"]) != set(state.history):
                raise ValueError(
                    f"{where}: the saved run recorded {sorted(meta['history'])}, this call "
                    f"records {sorted(state.history)}; pass the same metrics and validation_data"
                )
            like = state.tree()
            if meta["has_best_params"]:
                like["best_params"] = state.params
            state.restore(checkpoint.load(path, like=like), meta)
            return True
        if self.steps():
            raise ValueError(f"{where}: no readable checkpoint to resume from")
        return False


class _Programs(NamedTuple):
    """The compiled pieces of an epoch, shared by every ``fit`` call with the same setup."""

    order: Callable  # (key, epoch) -> (epoch_key, perm)
    loop_step: Callable  # one step on perm[s·B : s·B + size]
    scan_steps: Callable  # steps first .. first + length − 1 as one lax.scan


def _epoch_order(key, epoch, n: int, shuffle: bool):
    """``k_e = fold_in(key, e)`` and epoch ``e``'s order of the ``n`` examples."""
    epoch_key = jax.random.fold_in(key, epoch)
    if not shuffle:
        return epoch_key, jnp.arange(n, dtype=jnp.int32)
    return epoch_key, shuffle_indices(jax.random.fold_in(epoch_key, 0), n)


def _build_programs(
    apply, loss, optimizer, metrics, guard, batch_size, n, shuffle, mesh, pregather=True
):
    step = _make_step(apply, loss, optimizer, dict(metrics), guard)
    # in "raise" mode a scan only flags non-finite steps; fit replays up to the first one
    scan_step = (
        _make_step(apply, loss, optimizer, dict(metrics), "flag") if guard == "raise" else step
    )
    if mesh is not None:
        from . import distributed

        step = distributed.data_parallel(step, mesh, batch_argnums=(2, 3))
        scan_step = distributed.data_parallel(scan_step, mesh, batch_argnums=(2, 3))

    def order(key, epoch):
        return _epoch_order(key, epoch, n, shuffle)

    def loop_step(params, opt_state, live, xs, ys, perm, s, epoch_key, *, size):
        idx = jax.lax.dynamic_slice_in_dim(perm, s * batch_size, size)
        key = jax.random.fold_in(epoch_key, s + 1)
        return step(params, opt_state, xs[idx], ys[idx], key, live)

    def scan_steps(params, opt_state, xs, ys, key, epoch, first, *, length):
        # the epoch's shuffle fused into the same program; the segment's examples gathered
        # in one go (or batch by batch, for data too large to copy)
        epoch_key, perm = order(key, epoch)
        idx = jax.lax.dynamic_slice_in_dim(perm, first * batch_size, length * batch_size)
        idx = idx.reshape(length, batch_size)
        xb, yb = (xs[idx], ys[idx]) if pregather else (idx, idx)

        def batch(xi, yi):
            return (xi, yi) if pregather else (xs[xi], ys[yi])

        def body(carry, inp):
            p, o, live = carry
            xi, yi, s = inp
            xi, yi = batch(xi, yi)
            key_s = jax.random.fold_in(epoch_key, s + 1)
            p, o, logs, finite, live = scan_step(p, o, xi, yi, key_s, live)
            return (p, o, live), (logs, finite)

        (params, opt_state, _), (logs, finite) = jax.lax.scan(
            body,
            (params, opt_state, jnp.asarray(True)),
            (xb, yb, first + jnp.arange(length)),
        )
        return params, opt_state, logs, finite

    return _Programs(
        _jit(order),
        _jit(loop_step, static_argnames="size", donate_argnums=(0, 1)),
        _jit(
            scan_steps, static_argnames="length", donate_argnums=() if guard == "raise" else (0, 1)
        ),
    )


_PREGATHER_BYTES = 256 * 2**20  # larger training sets are gathered batch by batch
_cached_programs = functools.lru_cache(maxsize=32)(_build_programs)


def _programs(*args) -> _Programs:
    """Cached by the model's apply, the loss, optimizer and shapes: a second ``fit`` with
    the same setup (a notebook re-run, a resumed run) compiles nothing."""
    try:
        return _cached_programs(*args)
    except TypeError:  # something unhashable in the setup: build afresh
        return _build_programs(*args)


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
    on_nonfinite: str = "raise",
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int = 3,
    resume: bool = False,
) -> FitResult:
    """Train ``model`` on ``(x, y)`` with minibatch gradient descent.

    Each epoch shuffles the ``n`` examples (from ``key``; the same key gives bit-identical
    results) and takes ``⌈n / batch_size⌉`` steps ``θ ← update(θ, ∇L_batch(θ))``. With
    ``k_e = fold_in(key, e)``, epoch ``e`` visits the examples in the order
    ``data.shuffle(fold_in(k_e, 0), n)`` and its step ``s`` draws dropout from
    ``fold_in(k_e, s + 1)``, so a run resumed at ``(e, s)`` continues exactly.
    The history's training loss and metrics are each epoch's means over its examples.

    Reliability:

    * **Non-finite guard.** A step whose loss, gradients or updated params are not all
      finite is not applied. ``on_nonfinite="raise"`` (default) then stops with a
      :class:`NonFiniteError` naming the epoch and step, carrying the last finite params;
      ``"skip"`` drops the step (and warns); ``"ignore"`` applies every update unchecked.
      The check runs inside the compiled step; the host looks at the flags once per epoch
      (and at each checkpoint).
    * **Checkpoints.** With ``checkpoint_dir``, the whole run state (params, optimizer
      state, key, epoch and step, history, early-stopping state) is saved atomically after
      every ``checkpoint_every`` steps (default: every epoch) and at the end, keeping the
      last ``keep_checkpoints`` as ``step_<g>.npz`` and the best epoch as ``best.npz``.
      ``resume=True`` continues from the newest one (or starts afresh in an empty
      folder); a run killed at any point and resumed ends bit-identical to an
      uninterrupted one.

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
      on_nonfinite: ``"raise"``, ``"skip"`` or ``"ignore"`` (see above).
      checkpoint_dir: a folder for the run's checkpoints (created if missing).
      checkpoint_every: save after every this many optimizer steps (counted over the
        whole run), and at every epoch end that falls on such a step; ``None``: after
        every epoch.
      keep_checkpoints: how many of the newest step checkpoints to keep.
      resume: continue the run saved in ``checkpoint_dir``; its key, position and state
        replace ``key``, ``params`` and ``opt_state`` (which serve as the template).

    Returns:
      a :class:`FitResult` ``(params, opt_state, history, best_epoch, epochs_run)``.

    Raises:
      NonFiniteError: with ``on_nonfinite="raise"``, at the first non-finite step.

    >>> import jax, optax
    >>> from funcnn import data, models
    >>> x, y = data.xor(64)
    >>> model = models.mlp([8, 2])
    >>> _, params = model.init(jax.random.key(0), (-1, 2))
    >>> result = fit(model, params, x, y, optimizer=optax.adam(0.05), epochs=3, batch_size=16)
    >>> result.epochs_run, len(result.history["loss"])
    (3, 3)
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
    if on_nonfinite not in _GUARDS:
        raise ValueError(f"fit: on_nonfinite must be one of {_GUARDS}, got {on_nonfinite!r}")
    if checkpoint_dir is not None:
        checkpoint_dir = checkpoint._check_path(checkpoint_dir, "fit: checkpoint_dir")
        if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
            raise ValueError(f"fit: checkpoint_dir {str(checkpoint_dir)!r} is not a folder")
    elif resume or checkpoint_every is not None:
        raise ValueError("fit: resume and checkpoint_every need a checkpoint_dir")
    checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every", allow_none=True)
    keep_checkpoints = _positive_int(keep_checkpoints, "keep_checkpoints")
    if not isinstance(resume, bool):
        raise TypeError(f"fit: resume must be a bool, got {resume!r}")
    _check_labels(apply, loss, params, x, y)

    n_full, rem = divmod(n, batch_size)
    n_steps = n_full + (rem > 0)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    if mesh is not None:
        from . import distributed

        distributed.check_divisible(batch_size, mesh, who="fit")
        if rem:
            last = f"the last batch, {n} mod batch_size {batch_size},"
            distributed.check_divisible(rem, mesh, argument=last, who="fit")
        x_dev, y_dev = distributed.replicate((x, y), mesh)
    metrics_key = tuple(metrics.items())
    pregather = x.nbytes + y.nbytes <= _PREGATHER_BYTES
    programs = _programs(
        apply,
        loss,
        optimizer,
        metrics_key,
        on_nonfinite,
        batch_size,
        n,
        bool(shuffle),
        mesh,
        pregather,
    )
    eval_fn = _eval_fn(apply, loss, metrics) if validation_data is not None else None

    def run_steps(params, opt_state, epoch, first, stop):
        """Steps ``first .. stop - 1`` of an epoch: one scan, or one jitted call each."""
        if scan and stop <= n_full:
            start = params, opt_state
            params, opt_state, logs, finite = programs.scan_steps(
                *start, x_dev, y_dev, st.key, epoch, first, length=stop - first
            )
            finite = np.asarray(finite, bool)
            if on_nonfinite == "raise" and not finite.all():
                # the scan ran on past the bad step: replay up to it for the last finite state
                bad = int(np.argmin(finite))
                params, opt_state = start
                if bad:
                    params, opt_state, _, _ = programs.scan_steps(
                        *start, x_dev, y_dev, st.key, epoch, first, length=bad
                    )
            return params, opt_state, [batch_size] * (stop - first), finite, logs
        epoch_key, perm = programs.order(st.key, epoch)
        sizes, flags, step_logs, live = [], [], [], jnp.asarray(True)
        for s in range(first, stop):
            size = min(batch_size, n - s * batch_size)
            params, opt_state, logs, finite, live = programs.loop_step(
                params, opt_state, live, x_dev, y_dev, perm, s, epoch_key, size=size
            )
            sizes.append(size)
            flags.append(finite)
            step_logs.append(logs)
        logs = {k: [v[k] for v in step_logs] for k in step_logs[0]}
        return params, opt_state, sizes, flags, logs

    def segment_end(epoch: int, first: int) -> int:
        """Where the steps run from ``first`` stop: epoch end, scan end, or a checkpoint."""
        stop = n_full if scan and first < n_full else n_steps
        if runs is not None and checkpoint_every is not None:
            done = epoch * n_steps + first
            stop = min(stop, (done // checkpoint_every + 1) * checkpoint_every - epoch * n_steps)
        return stop

    params = jax.tree_util.tree_map(jnp.array, params)  # our own copy: buffers get donated
    opt_state = (
        optimizer.init(params)
        if opt_state is None
        else jax.tree_util.tree_map(jnp.array, opt_state)
    )
    if mesh is not None:
        params, opt_state = distributed.place((params, opt_state), mesh)
    st = _State(params, opt_state, key, {k: [] for k in known})
    runs = None
    if checkpoint_dir is not None:
        config = {"n": n, "batch_size": batch_size, "shuffle": bool(shuffle)}
        runs = _Checkpoints(checkpoint_dir, keep_checkpoints, config)
        if resume:
            runs.restore(st)
        elif runs.steps():
            raise ValueError(
                f"fit: checkpoint_dir {str(checkpoint_dir)!r} already holds checkpoints; pass "
                "resume=True to continue that run, or give an empty folder"
            )
    bar = _progress(epochs, progress, min(st.epochs_run, epochs))
    try:
        while st.epoch < epochs and not st.stopped:
            epoch = st.epoch
            while st.step < n_steps:
                stop = segment_end(epoch, st.step)
                params, opt_state, sizes, finite, logs = run_steps(
                    st.params, st.opt_state, epoch, st.step, stop
                )
                finite = np.asarray(finite, bool)
                if on_nonfinite == "raise" and not finite.all():
                    bad = st.step + int(np.argmin(finite))
                    raise NonFiniteError(
                        f"fit: non-finite loss, gradient or params at epoch {epoch}, step {bad} "
                        f"(counted from 0); the update was not applied. Lower the learning "
                        f"rate, check the data, or pass on_nonfinite='skip'",
                        epoch=epoch,
                        step=bad,
                        params=params,
                        opt_state=opt_state,
                    )
                st.params, st.opt_state, st.step = params, opt_state, stop
                st.record(sizes, finite, {k: np.asarray(v) for k, v in logs.items()})
                done = epoch * n_steps + stop
                if runs is not None and checkpoint_every and stop < n_steps:
                    if done % checkpoint_every == 0:
                        runs.save(done, st)
            skipped = st.finite.count(False)
            if skipped and on_nonfinite == "skip":
                warnings.warn(
                    f"fit: skipped {skipped} non-finite steps in epoch {epoch}", stacklevel=2
                )
            epoch_logs = _epoch_means(st.sizes, st.finite, st.logs)
            params = st.params
            if eval_fn is not None:
                val = evaluate(apply, params, x_val, y_val, loss=loss, metrics=metrics, _fn=eval_fn)
                epoch_logs.update({f"val_{k}": v for k, v in val.items()})
            for k in known:
                st.history[k].append(epoch_logs[k])
            st.epoch, st.step, st.epochs_run = epoch + 1, 0, epoch + 1
            st.new_epoch()
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in epoch_logs.items()})
            if callback is not None:
                callback(epoch, epoch_logs)
            value = epoch_logs[monitor]
            improved = math.isfinite(value) and _improved(value, st.best_value, mode, min_delta)
            if improved:
                st.best_value, st.best_epoch, st.wait = value, epoch, 0
                if restore_best:
                    st.best_params = jax.tree_util.tree_map(jnp.copy, params)
            else:
                st.wait += 1
                st.stopped = patience is not None and st.wait >= patience
            if runs is not None:
                done = st.epoch * n_steps
                if improved:
                    runs.save_best(st)
                last = st.stopped or st.epoch == epochs
                if last or checkpoint_every is None or done % checkpoint_every == 0:
                    runs.save(done, st)
    finally:
        if bar is not None:
            bar.close()
    params = st.params
    if restore_best and st.best_params is not None:
        params = st.best_params
    return FitResult(params, st.opt_state, st.history, st.best_epoch, st.epochs_run)
