"""``fit``'s arguments, checked once and kept in one frozen record, :class:`Settings`.

Each check goes through the shared rules of :mod:`funcnn.checks` and names the argument
as ``fit: <argument>``; the model's ``loss`` and ``metric`` fill in what is not passed.
:func:`check_labels` then traces the model and loss on one example (no compile) and
checks the class labels against the model's outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import checks, losses
from ..core import Layer
from ..core.layer import stateful_path
from ..data import check_xy
from .model import Metrics, default_metrics, model_defaults, stateful_apply
from .precision import Precision, check_precision, loss_scaled
from .sources import is_dataset, is_source
from .step import GUARDS


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of one :func:`~funcnn.train.fit` run: its keyword arguments, checked.

    Each field is ``fit``'s argument of the same name, normalized: ``apply`` the model's
    state-threading apply (:func:`~funcnn.train.model.stateful_apply`), ``loss`` and
    ``metrics`` with the model's defaults filled in, ``optimizer`` with its default,
    ``batch_size`` a count ``B <= n`` (``n`` the number of training examples), ``key`` a
    PRNG key, ``validation`` the pair ``(x_val, y_val)`` as arrays (``None`` without
    validation data), ``monitor`` the quantity early stopping watches, ``restore_best`` a
    bool, ``checkpoint_dir`` a :class:`~pathlib.Path` or ``None``, ``precision`` a
    :class:`~funcnn.train.Precision` or ``None`` (under float16 ``optimizer`` is the
    loss-scaled one, :func:`~funcnn.train.precision.loss_scaled`).
    """

    apply: Callable
    loss: Callable
    metrics: dict[str, Callable]
    optimizer: optax.GradientTransformation
    n: int
    epochs: int
    batch_size: int
    key: jax.Array
    shuffle: bool
    scan: bool
    validation: tuple[np.ndarray, np.ndarray] | None
    patience: int | None
    monitor: str
    min_delta: float
    restore_best: bool
    progress: bool | None
    callback: Callable[[int, dict[str, float]], Any] | None
    mesh: Any
    on_nonfinite: str
    checkpoint_dir: Path | None
    checkpoint_every: int | None
    keep_checkpoints: int
    resume: bool
    precision: Precision | None = None
    reshard: bool = False
    source: Any = None
    validation_source: Any = None

    @property
    def n_full(self) -> int:
        """The number of full batches in an epoch, ``⌊n / B⌋``."""
        return self.n // self.batch_size

    @property
    def n_steps(self) -> int:
        """The number of steps in an epoch, ``⌈n / B⌉`` (the last batch may be short)."""
        return -(-self.n // self.batch_size)

    @property
    def mode(self) -> str:
        """``"min"`` for a monitored loss, ``"max"`` for a monitored metric."""
        return "min" if self.monitor.endswith("loss") else "max"

    @property
    def history_names(self) -> list[str]:
        """What the history records each epoch: ``"loss"``, the metrics, their ``"val_"``."""
        validation = self.validation is not None or self.validation_source is not None
        return history_names(self.metrics, validation)


def history_names(metrics: Metrics, validation: bool) -> list[str]:
    """``["loss", *metrics]``, and with validation data the same names prefixed ``"val_"``.

    >>> history_names({"accuracy": None}, validation=True)
    ['loss', 'accuracy', 'val_loss', 'val_accuracy']
    """
    names = ["loss", *metrics]
    return names + [f"val_{name}" for name in names] if validation else names


def check_fit_arguments(
    model,
    x,
    y,
    *,
    loss: Callable | None,
    optimizer: optax.GradientTransformation | None,
    epochs: int,
    batch_size: int | None,
    key: jax.Array | int,
    shuffle: bool,
    validation_data: tuple[Any, Any] | None,
    metrics: Metrics | None,
    patience: int | None,
    monitor: str | None,
    min_delta: float,
    restore_best: bool | None,
    scan: bool,
    progress: bool | None,
    callback: Callable | None,
    mesh: Any,
    on_nonfinite: str,
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_every: int | None,
    keep_checkpoints: int,
    resume: bool,
    precision: Precision | str | None = None,
    reshard: bool = False,
) -> tuple[Settings, Any, Any]:
    """``fit``'s arguments checked in the order of its signature: ``(settings, x, y)``,
    ``x`` and ``y`` as NumPy arrays (``None`` when ``x`` is a data source, kept in
    ``settings.source``).

    >>> import numpy as np
    >>> from funcnn import models
    >>> args = dict(loss=None, optimizer=None, epochs=10, batch_size=64, key=0, shuffle=True,
    ...             validation_data=None, metrics=None, patience=None, monitor=None,
    ...             min_delta=0.0, restore_best=None, scan=False, progress=None, callback=None,
    ...             mesh=None, on_nonfinite="raise", checkpoint_dir=None,
    ...             checkpoint_every=None, keep_checkpoints=3, resume=False)
    >>> x, y = np.zeros((10, 2), np.float32), np.zeros(10, np.int32)
    >>> settings, x, y = check_fit_arguments(models.mlp([4, 2]), x, y, **args)
    >>> settings.batch_size, settings.n_steps, settings.monitor, settings.history_names
    (10, 1, 'loss', ['loss', 'accuracy'])
    >>> check_fit_arguments(models.mlp([4, 2]), x, y, **{**args, "monitor": "val_loss"})
    Traceback (most recent call last):
    ...
    ValueError: fit: monitor must be one of ['loss', 'accuracy'], got 'val_loss'
    """
    _, default_loss, metric = model_defaults(model)
    apply = stateful_apply(model)
    source = x if is_source(x) else None
    batch_size = checks.positive_int(batch_size, "fit: batch_size", allow_none=True)
    if source is None:
        x, y = check_xy(x, y, "fit")
        n = len(x)
    else:
        n, batch_size = _source_size(source, y, batch_size)
        x = y = None  # the source is read batch by batch
    loss, optimizer = _loss_and_optimizer(loss or default_loss, optimizer)
    metrics = default_metrics(metric, metrics, "fit: metrics")
    epochs = checks.positive_int(epochs, "fit: epochs")
    patience = checks.positive_int(patience, "fit: patience", allow_none=True)
    key = checks.prng_key(key, "fit: key")
    validation_source = validation_data if is_source(validation_data) else None
    validation = None if validation_source is not None else _validation_pair(validation_data)
    has_validation = validation is not None or validation_source is not None
    monitor = _monitor(monitor, history_names(metrics, has_validation))
    checks.one_of(on_nonfinite, GUARDS, "fit: on_nonfinite")
    checkpoint_dir = _checkpoint_dir(checkpoint_dir, resume, checkpoint_every)
    policy = check_precision(precision, "fit")
    if policy is not None and policy.scaling:
        optimizer = loss_scaled(optimizer, policy)
    settings = Settings(
        apply=apply,
        loss=loss,
        metrics=metrics,
        optimizer=optimizer,
        n=n,
        epochs=epochs,
        batch_size=min(batch_size or n, n) if n else 1,
        key=key,
        shuffle=bool(shuffle),
        scan=scan,
        validation=validation,
        patience=patience,
        monitor=monitor,
        min_delta=min_delta,
        restore_best=patience is not None if restore_best is None else restore_best,
        progress=progress,
        callback=callback,
        mesh=mesh,
        on_nonfinite=on_nonfinite,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checks.positive_int(
            checkpoint_every, "fit: checkpoint_every", allow_none=True
        ),
        keep_checkpoints=checks.positive_int(keep_checkpoints, "fit: keep_checkpoints"),
        resume=checks.boolean(resume, "fit: resume"),
        precision=policy,
        reshard=checks.boolean(reshard, "fit: reshard"),
        source=source,
        validation_source=validation_source,
    )
    return settings, x, y


def _source_size(source, y, batch_size: int | None) -> tuple[int, int | None]:
    """``(n, batch_size)`` for a source: a dataset's length (and the batch size asked
    for); an iterable makes its own batches, so ``n = 0`` and no ``batch_size``."""
    if y is not None:
        raise ValueError(
            "fit: x is a data source, which yields the targets with the inputs; pass y=None"
        )
    if not is_dataset(source):
        if batch_size is not None:
            raise ValueError(
                f"fit: batch_size={batch_size}, but x is an iterable of batches, which makes "
                "its own; pass batch_size=None"
            )
        return 0, None
    n = len(source)
    if n == 0:
        raise ValueError("fit: the dataset x holds no examples; expected at least one")
    return n, batch_size


def _loss_and_optimizer(loss, optimizer):
    """The loss, which must be given or carried by the model, and the optimizer, by default
    ``optax.adam(1e-3)``."""
    if loss is None:
        raise ValueError("fit: pass loss=..., the model carries none")
    checks.function(loss, "fit: loss")
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    if not hasattr(optimizer, "update"):
        raise TypeError(f"fit: optimizer must be an optax transformation, got {optimizer!r}")
    return loss, optimizer


def _validation_pair(validation_data) -> tuple[np.ndarray, np.ndarray] | None:
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
    x_val, y_val = validation_data
    return check_xy(x_val, y_val, "fit: validation_data")


def _monitor(monitor: str | None, known: list[str]) -> str:
    """The monitored quantity: by default ``"val_loss"`` with validation data, else ``"loss"``."""
    monitor = monitor or ("val_loss" if "val_loss" in known else "loss")
    if monitor not in known:
        raise ValueError(f"fit: monitor must be one of {known}, got {monitor!r}")
    return monitor


def _checkpoint_dir(checkpoint_dir, resume, checkpoint_every) -> Path | None:
    """The checkpoint folder, if given; ``resume`` and ``checkpoint_every`` need one."""
    if checkpoint_dir is None:
        if resume or checkpoint_every is not None:
            raise ValueError("fit: resume and checkpoint_every need a checkpoint_dir")
        return None
    checkpoint_dir = checks.path(checkpoint_dir, "fit: checkpoint_dir")
    if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise ValueError(f"fit: checkpoint_dir {str(checkpoint_dir)!r} is not a folder")
    return checkpoint_dir


def check_state(model, state: Any, who: str) -> Any:
    """The model's state for ``who`` (``fit``, ``evaluate``, ...): ``{}`` for a stateless
    model; a stateful one needs the state from ``init_with_state``."""
    stateful = isinstance(model, Layer) and model.stateful
    if state is None:
        if stateful:
            raise ValueError(
                f"{who}: {stateful_path(model)} keeps state; pass state=..., the state from "
                "model.init_with_state (or the one a previous run returned)"
            )
        return {}
    if not isinstance(state, dict):
        raise TypeError(f"{who}: state must be a dict of arrays, got {type(state).__name__}")
    if state and not stateful:
        raise ValueError(f"{who}: the model keeps no state, got a state with keys {sorted(state)}")
    return state


@functools.lru_cache(maxsize=64)
def _traced_output(apply, loss, treedef, leaves, x_spec, y_spec):
    """The model's output shape on one example, and the loss traced on it (no compile)."""
    tree = jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(*s) for s in leaves])
    x1 = jax.ShapeDtypeStruct(*x_spec)
    out = jax.eval_shape(lambda t, xx: apply(*t, xx, train=False)[0], tree, x1)
    jax.eval_shape(loss, out, jax.ShapeDtypeStruct(*y_spec))
    return out


def check_labels(settings: Settings, params, state, x: np.ndarray, y: np.ndarray) -> None:
    """Trace the model and loss on one example (no compile) and check the targets ``y`` and,
    with validation data, ``y_val``, against the model's outputs and the loss.

    Integer targets for ``c > 1`` outputs must be class labels in ``[0, c)``, whatever the
    loss; the targets of a loss of :mod:`funcnn.losses` must lie in its domain
    (:func:`funcnn.losses.check_targets`: binary labels in ``[0, 1]`` for the binary
    cross-entropies, ...). The trace is cached by the model, loss and shapes, so a repeated
    ``fit`` costs nothing.
    """
    if x is not None:  # None: a source, whose batches are checked as they come
        out = _output(settings, params, state, x, y)
        _check_targets(settings.loss, y, out.shape, "y")
    if settings.validation is not None:
        x_val, y_val = settings.validation
        out_val = _output(settings, params, state, x_val, y_val)
        _check_targets(settings.loss, y_val, out_val.shape, "y_val")


def target_checker(settings: Settings, params, state) -> Callable[[Any, Any, str], None]:
    """``check(x, y, name)``: one batch's targets ``y`` (called ``name`` in errors) checked
    against the model's outputs on ``x`` and the loss, as :func:`check_labels` checks a
    whole set. The model is traced once per batch shape; after that a check is a look at
    ``y``'s values."""
    treedef, specs = _specs(params, state)
    outputs: dict[tuple, Any] = {}

    def check(x, y, name: str) -> None:
        x, y = np.asarray(x), np.asarray(y)
        shapes = (x.shape[1:], x.dtype, y.shape[1:], y.dtype)
        if shapes not in outputs:
            outputs[shapes] = _output_of(settings, treedef, specs, x, y)
        _check_targets(settings.loss, y, (len(y), *outputs[shapes].shape[1:]), name)

    return check


def _specs(params, state) -> tuple:
    """``(treedef, ((shape, dtype), ...))`` of ``(params, state)``, for a cached trace."""
    leaves, treedef = jax.tree_util.tree_flatten((params, state))
    return treedef, tuple((np.shape(a), jnp.result_type(a)) for a in leaves)


def _output(settings: Settings, params, state, x: np.ndarray, y: np.ndarray):
    """The model's output (shape and dtype) on one example of ``x``, the loss traced on it."""
    treedef, specs = _specs(params, state)
    return _output_of(settings, treedef, specs, x, y)


def _output_of(settings: Settings, treedef, specs, x: np.ndarray, y: np.ndarray):
    x_spec, y_spec = ((1,) + x.shape[1:], x.dtype), ((1,) + y.shape[1:], y.dtype)
    trace_args = (settings.apply, settings.loss, treedef, specs, x_spec, y_spec)
    try:
        return _traced_output(*trace_args)
    except TypeError as err:
        if "unhashable" not in str(err):
            raise
        return _traced_output.__wrapped__(*trace_args)


def _check_targets(loss, y: np.ndarray, out_shape: tuple, name: str) -> None:
    """Class labels for ``c > 1`` outputs, then the loss's own domain."""
    if np.issubdtype(y.dtype, np.integer) and len(out_shape) == y.ndim + 1 and out_shape[-1] > 1:
        c = out_shape[-1]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= c:
            raise ValueError(
                f"fit: {name} holds class labels in [{lo}, {hi}], but the model has {c} "
                f"outputs; expected labels in [0, {c})"
            )
    losses.check_targets(loss, y, out_shape, "fit", name)
