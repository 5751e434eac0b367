"""The loop of epochs: whole epochs or segments of steps, each epoch's logs, progress and
callbacks.

With ``scan=True`` an epoch of ``⌈n / B⌉`` steps is one compiled call: its full batches as
one ``lax.scan``, a short last batch, and the validation pass, with the epoch's flags and
logs packed into one array that the host reads once. Where no host decision is due between
epochs (no early stopping, callback, progress bar or checkpoint), all the remaining epochs
are that one call. A checkpoint due mid-epoch splits the epoch into segments instead; without
``scan`` each step is one compiled call, and the host reads the epoch's flags, logs and
validation once, at its end.

The epoch's training loss and metrics are means over its examples,
``Σ_i n_i l_i / Σ_i n_i`` over its finite steps ``i`` (``n_i`` their batch sizes).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import early_stopping
from .evaluation import EVAL_CHUNK, chunk_means, chunk_sizes, compiled_eval, mean_over_chunks
from .programs import Programs, unpack
from .settings import Settings
from .sources import source_chunks
from .state import Checkpoints, RunState
from .step import check_finite_start, raise_at_first_nonfinite


class Run(NamedTuple):
    """What stays fixed while a run trains.

    * ``settings``: ``fit``'s checked arguments;
    * ``programs``: the epoch's compiled programs;
    * ``xs``, ``ys``: the training set on the device;
    * ``val``: the validation set on the device, ``(xv, yv)`` (``(None, None)`` without);
    * ``checkpoints``: the checkpoint folder (``None`` without ``checkpoint_dir``).
    """

    settings: Settings
    programs: Programs
    xs: Any
    ys: Any
    val: tuple
    checkpoints: Checkpoints | None


def train_epochs(run: Run, state: RunState, run_one: Callable | None = None) -> None:
    """Run epochs from ``state``'s position until ``epochs`` or early stopping, with a
    progress bar when asked for; refuse first params that are not finite (under a guard:
    :func:`~funcnn.train.step.check_finite_start`). ``run_one(run, state, bar)`` runs the
    next epoch (and moves ``state`` past it): :func:`run_epoch` for arrays."""
    run_one = run_one or run_epoch
    settings = run.settings
    check_finite_start(state.params, state.model_state, settings.on_nonfinite)
    bar = progress_bar(settings.epochs, settings.progress, min(state.epochs_run, settings.epochs))
    try:
        while state.epoch < settings.epochs and not state.stopped:
            run_one(run, state, bar)
    finally:
        if bar is not None:
            bar.close()


def run_epoch(run: Run, state: RunState, bar) -> None:
    """Epoch ``state.epoch`` (and the ones after it that can run in the same call), from
    its step ``state.step`` on, then each one's end."""
    if whole_epoch(run.settings, state):
        first = state.epoch
        for e, (sizes, finite, logs, val) in enumerate(run_whole_epochs(run, state, bar), first):
            state.record(sizes, finite, logs)
            end_epoch(run, state, e, bar, val)
        return
    epoch = state.epoch
    while state.step < run.settings.n_steps:
        run_segment(run, state, epoch)
    end_epoch(run, state, epoch, bar, validation_logs(run, state))


def whole_epoch(settings: Settings, state: RunState) -> bool:
    """The epoch runs as one call: ``scan`` mode, from its first step, no checkpoint due
    before its end (nor between its full batches and a short last one), and validation (if
    any) on arrays: a validation source is read on the host after the epoch's steps."""
    every, done = settings.checkpoint_every, state.epoch * settings.n_steps
    next_due = math.inf if every is None else (done // every + 1) * every - done
    return (
        settings.scan
        and settings.validation_source is None
        and state.step == 0
        and next_due >= settings.n_steps
    )


def epochs_at_once(run: Run, state: RunState, bar) -> int:
    """How many epochs the next call runs: all the remaining ones when nothing needs the
    host between them (no progress bar, callback, early stopping, best params to keep or
    checkpoints), else one."""
    settings = run.settings
    between = (bar, settings.callback, settings.patience, run.checkpoints)
    if settings.restore_best or any(v is not None for v in between):
        return 1
    return settings.epochs - state.epoch


def run_whole_epochs(run: Run, state: RunState, bar) -> list[tuple]:
    """The next :func:`epochs_at_once` epochs in one compiled call and one host read:
    ``state``'s params, model state and optimizer state move past them, and each epoch's
    ``(sizes, finite, logs, val)`` comes back for its end.

    With ``on_nonfinite="raise"`` a non-finite step anywhere sends the run back to the
    start of the call, to replay its epochs segment by segment up to that step (which
    raises :class:`NonFiniteError` there).
    """
    settings, first, count = run.settings, state.epoch, epochs_at_once(run, state, bar)
    start = state.params, state.model_state, state.opt_state
    *trained, rows = run.programs.epochs(
        *start, run.xs, run.ys, state.key, first, *run.val, count=count
    )
    rows = np.asarray(host_read(rows))  # the call's one read: flags, logs, validation, per epoch
    names = ["loss", *settings.metrics]
    layout = (
        (["finite"], settings.n_steps),
        (names, settings.n_steps),
        (names, n_val_chunks(settings)),
    )
    epochs = [unpack(row, *layout) for row in rows]
    if settings.on_nonfinite == "raise" and not all(e[0]["finite"].all() for e in epochs):
        for e in range(first, first + count):  # replays, and raises at the first bad step
            while state.step < settings.n_steps:
                run_segment(run, state, e)
            end_epoch(run, state, e, bar, validation_logs(run, state))
    state.params, state.model_state, state.opt_state = trained
    b, n = settings.batch_size, settings.n
    sizes = [min(b, n - s * b) for s in range(settings.n_steps)]
    return [
        (sizes, flags["finite"] > 0, logs, val_means(settings, val)) for flags, logs, val in epochs
    ]


def n_val_chunks(settings: Settings) -> int:
    """How many chunks of :data:`EVAL_CHUNK` the validation set makes (0 without one)."""
    if settings.validation is None:
        return 0
    return len(chunk_sizes(len(settings.validation[0]), EVAL_CHUNK))


def host_read(tree: Any) -> Any:
    """Every read of the device by the loop of epochs goes through here (but a validation
    source's, in :func:`~funcnn.train.evaluation.mean_over_chunks`): one ``jax.device_get``
    of a call's results, after which nothing waits on the device."""
    return jax.device_get(tree)


def segment_end(settings: Settings, epoch: int, first: int) -> int:
    """Where the steps run from ``first`` stop: epoch end, scan end, or a checkpoint."""
    n_full, n_steps, every = settings.n_full, settings.n_steps, settings.checkpoint_every
    stop = n_full if settings.scan and first < n_full else n_steps
    if every is not None:
        done = epoch * n_steps + first
        stop = min(stop, (done // every + 1) * every - epoch * n_steps)
    return stop


def run_segment(run: Run, state: RunState, epoch: int) -> None:
    """Steps ``state.step .. stop − 1`` of ``epoch`` into ``state``; a checkpoint if due.

    With ``on_nonfinite="raise"`` a non-finite step raises :class:`NonFiniteError`,
    carrying the state from just before it.
    """
    settings, first = run.settings, state.step
    stop = segment_end(settings, epoch, first)
    run_steps = steps_by_scan if settings.scan and stop <= settings.n_full else steps_by_loop
    start = state.params, state.model_state, state.opt_state
    (params, model_state, opt_state), sizes, finite, logs = run_steps(
        run, start, state.key, epoch, first, stop
    )
    finite, logs = host_read((finite, logs))  # the segment's one read
    finite = np.asarray(finite, bool)
    if settings.on_nonfinite == "raise":
        raise_at_first_nonfinite(finite, epoch, first, params, opt_state, model_state)
    state.params, state.model_state, state.opt_state = params, model_state, opt_state
    state.step = stop
    state.record(sizes, finite, {k: np.asarray(v) for k, v in logs.items()})
    if run.checkpoints is not None:
        run.checkpoints.after_steps(epoch * settings.n_steps + stop, stop < settings.n_steps, state)


def steps_by_scan(run: Run, start: tuple, key, epoch: int, first: int, stop: int):
    """Full-batch steps ``first .. stop − 1`` as one ``lax.scan`` from
    ``start = (params, model_state, opt_state)``: ``(that triple after, sizes, finite, logs)``.

    In ``"raise"`` mode the scan runs on past a non-finite step; it is then replayed up to
    that step, so that the triple is the last finite one.
    """
    settings, programs = run.settings, run.programs
    *trained, logs, finite = programs.scan_steps(
        *start, run.xs, run.ys, key, epoch, first, length=stop - first
    )
    finite = np.asarray(host_read(finite), bool)
    if settings.on_nonfinite == "raise" and not finite.all():
        bad = int(np.argmin(finite))
        trained = start
        if bad:
            *trained, _, _ = programs.scan_steps(
                *start, run.xs, run.ys, key, epoch, first, length=bad
            )
    return tuple(trained), [settings.batch_size] * (stop - first), finite, logs


def steps_by_loop(run: Run, start: tuple, key, epoch: int, first: int, stop: int):
    """Steps ``first .. stop − 1``, one compiled call each (the last batch of
    ``n − s·B < B`` examples, if short), from ``start = (params, model_state, opt_state)``:
    ``(that triple after, sizes, finite, logs)``."""
    settings, programs = run.settings, run.programs
    epoch_key, perm = programs.order(key, epoch)
    sizes, flags, step_logs, live = [], [], [], jnp.asarray(True)
    trained = start
    for s in range(first, stop):
        size = min(settings.batch_size, settings.n - s * settings.batch_size)
        *trained, logs, finite, live = programs.loop_step(
            *trained, live, run.xs, run.ys, perm, s, epoch_key, size=size
        )
        sizes.append(size)
        flags.append(finite)
        step_logs.append(logs)
    logs = {k: [v[k] for v in step_logs] for k in step_logs[0]}
    return tuple(trained), sizes, flags, logs


def end_epoch(
    run: Run, state: RunState, epoch: int, bar, val: dict[str, float], g: int | None = None
) -> None:
    """After the last step of ``epoch``, the ``g``-th of the run (default: ``(epoch + 1) ·
    ⌈n / B⌉``): its logs and validation logs ``val`` (``"val_"`` names) into the history,
    the bar and callback, early stopping, and the epoch's checkpoints."""
    settings = run.settings
    logs = epoch_logs(settings, state, epoch) | val
    for name in settings.history_names:
        state.history[name].append(logs[name])
    state.epoch, state.step, state.epochs_run = epoch + 1, 0, epoch + 1
    state.new_epoch()
    if bar is not None:
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
    if settings.callback is not None:
        settings.callback(epoch, logs)
    improved = early_stopping.watch(settings, state, epoch, logs[settings.monitor])
    if run.checkpoints is not None:
        last = state.stopped or state.epoch == settings.epochs
        g = state.epoch * settings.n_steps if g is None else g
        run.checkpoints.after_epoch(g, improved, last, state)


def epoch_logs(settings: Settings, state: RunState, epoch: int) -> dict[str, float]:
    """The epoch's mean training loss and metrics; warns of the steps skipped as non-finite
    with ``on_nonfinite="skip"``."""
    skipped = state.finite.count(False)
    if skipped and settings.on_nonfinite == "skip":
        # the warning points at fit's caller: here (1) <- end_epoch <- run_epoch
        # <- train_epochs <- fit (5) <- fit's caller (6)
        warnings.warn(f"fit: skipped {skipped} non-finite steps in epoch {epoch}", stacklevel=6)
    return epoch_means(state.sizes, state.finite, state.logs)


def validation_logs(run: Run, state: RunState) -> dict[str, float]:
    """The validation loss and metrics (``"val_"``) of ``state``'s params, ``{}`` without
    validation data: for arrays one compiled call and one host read; for a source one
    compiled call per chunk or batch, and one host read."""
    settings = run.settings
    if settings.validation_source is not None:
        fn = compiled_eval(settings.apply, settings.loss, tuple(settings.metrics.items()))
        chunks = source_chunks(settings.validation_source, state.epoch, EVAL_CHUNK)
        means = mean_over_chunks(fn, state.params, state.model_state, chunks)
        if means is None:
            raise ValueError(
                f"fit: the validation source yielded no data in epoch {state.epoch}; "
                "expected at least one batch"
            )
        return {f"val_{k}": v for k, v in means.items()}
    if settings.validation is None:
        return {}
    packed = host_read(run.programs.validate(state.params, state.model_state, *run.val))
    names = ["loss", *settings.metrics]
    return val_means(settings, unpack(np.asarray(packed), (names, n_val_chunks(settings)))[0])


def val_means(settings: Settings, chunk_logs: dict) -> dict[str, float]:
    """The validation chunks' means, weighted by their sizes, under ``"val_"`` names."""
    if settings.validation is None:
        return {}
    sizes = chunk_sizes(len(settings.validation[0]), EVAL_CHUNK)
    return {f"val_{k}": v for k, v in chunk_means(sizes, chunk_logs).items()}


def epoch_means(sizes: list[int], finite: list[bool], logs: dict[str, list[float]]):
    """``Σ_i n_i l_i / Σ_i n_i`` over the epoch's finite steps ``i`` (``n_i`` their batch sizes).

    NaN when no step counted (every step skipped as non-finite).

    >>> epoch_means([4, 4, 2], [True, False, True], {"loss": [1.0, float("nan"), 4.0]})
    {'loss': 2.0}
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


def progress_bar(epochs: int, progress: bool | None, initial: int = 0):
    """A tqdm bar over ``epochs`` (``progress=None``: only when stderr is a terminal);
    ``None`` when off or tqdm is not installed."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra
        return None
    return tqdm(total=epochs, initial=initial, unit="epoch", leave=True)
