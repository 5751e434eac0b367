"""``fit``: minibatch gradient descent over epochs, as a short sequence of named steps.

``fit`` checks its arguments into :class:`~funcnn.train.settings.Settings`, puts the data
on the device, takes the compiled programs of an epoch from their cache, starts (or
resumes) the run state, and trains epoch after epoch (:mod:`funcnn.train.epochs`) until
the asked number or early stopping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from . import early_stopping
from .epochs import Run, run_epoch, train_epochs
from .model import Metrics
from .precision import Precision, scaled_opt_state
from .programs import device_data, epoch_programs
from .settings import check_fit_arguments, check_labels, check_state
from .state import open_checkpoints, start_state
from .streaming import run_source_epoch


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
    * ``state``: the model's state that goes with ``params`` (BatchNorm's running
      statistics; ``{}`` for a stateless model).
    """

    params: Any
    opt_state: Any
    history: dict[str, list[float]]
    best_epoch: int | None
    epochs_run: int
    state: Any = None


def fit(
    model,
    params,
    x,
    y=None,
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
    state: Any = None,
    precision: Precision | str | None = None,
    reshard: bool = False,
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
      model: a :class:`~funcnn.core.Layer` (a :class:`~funcnn.core.Model`'s ``loss`` /
        ``metric`` are the defaults) or an apply function.
      params: the initial params (not modified).
      x: the training inputs, ``(n, ...)`` with ``n > 0``; or a data source
        (:mod:`funcnn.train.sources`, ``docs/scaling.md``) that yields inputs and targets
        together: a dataset read at random (``len(ds)``, ``ds.read(indices)``, such as
        :class:`funcnn.data.NpyDataset` on files larger than memory), batched and shuffled
        here exactly as arrays are; or an iterable of ``(x, y)`` batches (a list, a Grain
        pipeline, a function ``epoch -> iterable``), used as it comes, its iterator's
        position saved in checkpoints when it has ``get_state`` / ``set_state``.
      y: the training targets, ``(n, ...)``: ``len(y) == len(x)``; ``None`` for a source.
      loss: ``loss(outputs, targets)``; defaults to ``model.loss``.
      optimizer: an optax optimizer; defaults to ``optax.adam(1e-3)``.
      epochs: the number of passes over the data.
      batch_size: ``1`` is SGD, ``None`` (or ``n``) full-batch GD, between: minibatch SGD;
        ``None`` for an iterable source, which makes its own batches.
      key: a PRNG key or int seed for the shuffles and dropout.
      shuffle: reshuffle every epoch (arrays and datasets; an iterable shuffles itself).
      validation_data: ``(x_val, y_val)``, or a source as ``x`` can be, evaluated after
        each epoch with ``train=False``.
      metrics: ``name -> fn(outputs, targets)``; defaults to ``{"accuracy": model.metric}``.
      patience: stop after this many epochs without improvement of ``monitor`` and restore
        the best params.
      monitor: what early stopping watches: ``"val_loss"`` (default with validation data),
        ``"loss"``, or a metric such as ``"val_accuracy"`` (maximized).
      min_delta: the smallest change that counts as an improvement.
      restore_best: hand back the best params rather than the last; default: when
        ``patience`` is given.
      scan: run each epoch, its validation on arrays included, as one compiled call (a
        ``lax.scan`` over its minibatches) with one read of the device (a validation source
        is read after the epoch's steps, and a checkpoint due mid-epoch splits the epoch
        where it falls); when nothing needs the host
        between epochs (no ``progress`` bar, ``callback``, ``patience``, ``restore_best``
        or ``checkpoint_dir``), all the epochs are one call. The fastest mode for dense
        networks. On a CPU, XLA runs convolutions inside a loop body far
        slower than in a step called once per batch (12× for a small ResNet on the digits,
        in hand-written JAX alike; ``docs/benchmarks.md``), so convolutional networks train
        faster there without it.
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
      state: the model's initial state, for a model that keeps one (BatchNorm): the state
        from ``model.init_with_state``. Training updates it step by step in training mode;
        validation reads it in evaluation mode; checkpoints, early stopping's best epoch and
        the result carry it beside the params.
      precision: mixed precision, a :class:`~funcnn.train.Precision` or a dtype name
        (``"bfloat16"``, ``"float16"``): the model computes in that dtype, params, optimizer
        state and loss stay float32. Under float16 the loss is scaled dynamically; the scale
        rides in the optimizer state (checkpointed with it), and a step it skips for
        non-finite gradients is handled, not a non-finite step for ``on_nonfinite`` (whose
        check then covers the new params and state). ``None``: the params' own dtype.
      reshard: with ``resume``, allow a sharded checkpoint written over another mesh
        layout to be restored onto this run's (each array resharded as it loads); without
        it such a checkpoint is refused.

    Returns:
      a :class:`FitResult` ``(params, opt_state, history, best_epoch, epochs_run, state)``.

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
    settings, x, y = check_fit_arguments(
        model,
        x,
        y,
        loss=loss,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=batch_size,
        key=key,
        shuffle=shuffle,
        validation_data=validation_data,
        metrics=metrics,
        patience=patience,
        monitor=monitor,
        min_delta=min_delta,
        restore_best=restore_best,
        scan=scan,
        progress=progress,
        callback=callback,
        mesh=mesh,
        on_nonfinite=on_nonfinite,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        resume=resume,
        precision=precision,
        reshard=reshard,
    )
    model_state = check_state(model, state, "fit")
    check_labels(settings, params, model_state, x, y)
    xs, ys, val = device_data(settings, x, y)
    programs = epoch_programs(settings, x, y)
    opt_state = scaled_opt_state(settings.precision, opt_state)
    run_state = start_state(settings, params, opt_state, model_state)
    checkpoints = open_checkpoints(settings, run_state, x, y)  # locks; resumes into run_state
    run_one = run_epoch if settings.source is None else run_source_epoch
    try:
        train_epochs(Run(settings, programs, xs, ys, val, checkpoints), run_state, run_one)
    finally:
        if checkpoints is not None:
            checkpoints.close()  # the folder's lock, released on an error too
    params, model_state = early_stopping.final_params(settings, run_state)
    return FitResult(
        params,
        run_state.opt_state,
        run_state.history,
        run_state.best_epoch,
        run_state.epochs_run,
        model_state,
    )
