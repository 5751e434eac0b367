"""The loop of epochs: segments of steps, each epoch's logs, progress and callbacks.

An epoch of ``⌈n / B⌉`` steps runs in segments: with ``scan=True`` its full batches as one
compiled ``lax.scan`` (and a short last batch as one loop step), without it one compiled
call per step; the host reads a segment's flags and logs once, at its end. A segment also
ends where a checkpoint is due, every ``checkpoint_every`` steps counted over the run.

The epoch's training loss and metrics are means over its examples,
``Σ_i n_i l_i / Σ_i n_i`` over its finite steps ``i`` (``n_i`` their batch sizes).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from . import early_stopping
from .evaluation import evaluate_in_chunks
from .programs import Programs
from .settings import Settings
from .state import Checkpoints, RunState
from .step import check_finite_start, raise_at_first_nonfinite


class Run(NamedTuple):
    """What stays fixed while a run trains.

    * ``settings``: ``fit``'s checked arguments;
    * ``programs``: the epoch's compiled programs;
    * ``xs``, ``ys``: the training set on the device;
    * ``eval_fn``: the compiled validation loss and metrics (``None`` without validation);
    * ``checkpoints``: the checkpoint folder (``None`` without ``checkpoint_dir``).
    """

    settings: Settings
    programs: Programs
    xs: Any
    ys: Any
    eval_fn: Callable | None
    checkpoints: Checkpoints | None


def train_epochs(run: Run, state: RunState) -> None:
    """Run epochs from ``state``'s position until ``epochs`` or early stopping, with a
    progress bar when asked for; refuse first params that are not finite (under a guard:
    :func:`~funcnn.train.step.check_finite_start`)."""
    settings = run.settings
    check_finite_start(state.params, state.model_state, settings.on_nonfinite)
    bar = progress_bar(settings.epochs, settings.progress, min(state.epochs_run, settings.epochs))
    try:
        while state.epoch < settings.epochs and not state.stopped:
            run_epoch(run, state, bar)
    finally:
        if bar is not None:
            bar.close()


def run_epoch(run: Run, state: RunState, bar) -> None:
    """Epoch ``state.epoch``, from its step ``state.step`` on, then its end."""
    epoch = state.epoch
    while state.step < run.settings.n_steps:
        run_segment(run, state, epoch)
    end_epoch(run, state, epoch, bar)


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
    finite = np.asarray(finite, bool)
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


def end_epoch(run: Run, state: RunState, epoch: int, bar) -> None:
    """After the last step of ``epoch``: its logs into the history, the bar and callback,
    early stopping, and the epoch's checkpoints."""
    settings = run.settings
    logs = epoch_logs(run, state, epoch)
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
        run.checkpoints.after_epoch(state.epoch * settings.n_steps, improved, last, state)


def epoch_logs(run: Run, state: RunState, epoch: int) -> dict[str, float]:
    """The epoch's mean training loss and metrics, and the validation ones (``"val_"``).

    Warns of the steps skipped as non-finite with ``on_nonfinite="skip"``.
    """
    settings = run.settings
    skipped = state.finite.count(False)
    if skipped and settings.on_nonfinite == "skip":
        # the warning points at fit's caller: here (1) <- end_epoch <- run_epoch
        # <- train_epochs <- fit (5) <- fit's caller (6)
        warnings.warn(f"fit: skipped {skipped} non-finite steps in epoch {epoch}", stacklevel=6)
    logs = epoch_means(state.sizes, state.finite, state.logs)
    if run.eval_fn is not None:
        assert settings.validation is not None  # eval_fn is made only with validation data
        val = evaluate_in_chunks(run.eval_fn, state.params, state.model_state, *settings.validation)
        logs.update({f"val_{k}": v for k, v in val.items()})
    return logs


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
