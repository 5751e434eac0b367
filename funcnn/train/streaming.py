"""``fit``'s epochs over a source (:mod:`funcnn.train.sources`): batches read and placed
ahead in a thread, steps taken as they arrive.

Without ``scan`` each batch is one compiled step; with it, up to :data:`CHUNK_STEPS`
consecutive batches of one shape are stacked and run as one ``lax.scan``. The step ``s`` of
epoch ``e`` draws its key from ``fold_in(fold_in(key, e), s + 1)`` as with arrays, so a
dataset read from disk trains exactly as the same arrays in memory. The host reads the
steps' flags and logs once per epoch, and where a checkpoint is due (or, under
``on_nonfinite="raise"``, once per scanned chunk).

The run counts its steps over all epochs for ``checkpoint_every``: ``e · ⌈n / B⌉ + s`` for a
dataset; for an iterable, whose epochs may differ in length, the count of the epochs done is
kept with the iterator's position in the run state (``data_state``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import processes
from .epochs import Run, end_epoch, host_read, validation_logs
from .settings import Settings, target_checker
from .sources import (
    Batch,
    ShapeCheck,
    chunks,
    dataset_batches,
    is_dataset,
    iterable_batches,
    prefetch,
)
from .state import RunState
from .step import raise_at_first_nonfinite

CHUNK_STEPS = 32  # batches stacked into one scanned chunk


def run_source_epoch(run: Run, state: RunState, bar) -> None:
    """Epoch ``state.epoch`` over the source, from its step ``state.step`` on, then its end."""
    settings, epoch = run.settings, state.epoch
    before = steps_before(settings, state)
    # the targets' check traced here, in this thread, not in the reader's
    check_targets = target_checker(settings, state.params, state.model_state)
    items = checked(settings, epoch, source_batches(settings, state, epoch), check_targets)
    if settings.scan:
        items = chunks(items, CHUNK_STEPS, lambda s: due(settings, before + s + 1))
    together = jax.process_count() > 1 and not is_dataset(settings.source)
    try:
        taken = take_steps(run, state, items, before, together)
    except processes.SourcesDisagree:
        raise  # every process raises it at once
    except Exception:
        if together:  # the others learn of it at their next step, rather than wait for ever
            processes.report_failure()
        raise
    if taken == 0:
        raise ValueError(
            f"fit: the source yielded no batch in epoch {epoch}; expected at least one (an "
            "iterator that is used up after one pass needs to be given as a re-iterable "
            "object or as a function epoch -> iterable)"
        )
    if not is_dataset(settings.source):
        state.data_state = {"done": before + taken, "position": None}
    end_epoch(run, state, epoch, bar, validation_logs(run, state), before + taken)


def take_steps(run: Run, state: RunState, items, before: int, together: bool) -> int:
    """The epoch's steps over ``items`` into ``state``, read and checkpointed where due;
    returns the epoch's step count. Over several processes on an iterable source
    (``together``), the processes agree on each batch's size before its step, and every
    process's position goes into a checkpoint."""
    settings, epoch = run.settings, state.epoch
    epoch_key = jax.random.fold_in(state.key, epoch)
    pending: list = []
    taken, live = state.step, jnp.asarray(True)
    # over several processes a batch is placed after the processes agree on its size
    placing = (lambda b: b) if together else (lambda b: place(settings, b, epoch))
    for b in prefetch(items, placing):
        if together:
            processes.agree_on_batch(len(b.x), epoch, b.step)
            b = place(settings, b, epoch)
        entry, live = take(run, state, b, epoch_key, live)
        pending.append(entry)
        taken = b.step + len(entry.sizes)
        if due(settings, before + taken) or (settings.scan and settings.on_nonfinite == "raise"):
            settle(run, state, epoch, pending, b.position)
            state.step, pending = taken, []
            if run.checkpoints is not None and due(settings, before + taken):
                if together and state.data_state is not None:  # into the meta process 0 writes
                    state.data_state["positions"] = processes.gather_json(b.position)
                run.checkpoints.after_steps(before + taken, True, state)
    if together:
        processes.agree_on_batch(0, epoch, taken)  # every process's source ended here
    settle(run, state, epoch, pending, None)
    return taken


def steps_before(settings: Settings, state: RunState) -> int:
    """The steps of the run before epoch ``state.epoch``."""
    if is_dataset(settings.source):
        return state.epoch * settings.n_steps
    return (state.data_state or {}).get("done", 0)


def due(settings: Settings, g: int) -> bool:
    """A checkpoint is due after ``g`` steps of the run."""
    every = settings.checkpoint_every
    return every is not None and g % every == 0


def source_batches(settings: Settings, state: RunState, epoch: int) -> Iterator[Batch]:
    """The epoch's host batches from step ``state.step``: this process's rows of them, in a
    run over several processes."""
    source = settings.source
    if is_dataset(source):
        rows = None
        if settings.mesh is not None and jax.process_count() > 1:
            from .. import distributed

            def rows(size):  # noqa: F811 (this process's rows of a batch of `size`)
                return distributed.local_rows(size, settings.mesh)

        return dataset_batches(
            source, state.key, epoch, state.step, settings.batch_size, settings.shuffle, rows
        )
    saved = state.data_state or {}
    positions = saved.get("positions")  # one per process, in a run over several
    position = positions[jax.process_index()] if positions else saved.get("position")
    return iterable_batches(source, epoch, state.step, position)


def checked(settings: Settings, epoch: int, batches, check_targets) -> Iterator[Batch]:
    """The batches, each checked: one shape through the epoch (but a short last one), and
    targets the model and loss accept (``check_targets``: class labels in range, ...)."""
    same_shape = ShapeCheck()
    for b in batches:
        same_shape(b, epoch)
        name = f"y of the source's batch {b.step} of epoch {epoch}"
        check_targets(b.x, b.y, name)
        yield b


def place(settings: Settings, b: Batch, epoch: int) -> Batch:
    """A batch (or a stacked chunk) on the device: split over the mesh's ``"data"`` axis
    when there is one (this process's rows make its part, over several processes)."""
    if settings.mesh is None:
        if jax.default_backend() == "cpu":  # the host's memory is the device's
            return b
        x, y = jax.device_put((b.x, b.y))
        return b._replace(x=x, y=y)
    from .. import distributed

    if settings.scan:
        if jax.process_count() > 1:
            raise ValueError(
                "fit: scan=True with a source over several processes is not supported; pass "
                "scan=False"
            )
        sharding = jax.sharding.NamedSharding(
            settings.mesh, jax.sharding.PartitionSpec(None, "data")
        )
        return b._replace(x=jax.device_put(b.x, sharding), y=jax.device_put(b.y, sharding))
    if not settings.n:  # an iterable's batch: each process's is its part of P times its rows
        rows = f"the global size of the source's batch {b.step} of epoch {epoch}"
        size = len(b.x) * jax.process_count()
        distributed.check_divisible(size, settings.mesh, argument=rows, who="fit")
    if jax.process_count() > 1:
        x, y = distributed.shard_local_batch((b.x, b.y), settings.mesh)
    else:
        x, y = distributed.shard_batch((b.x, b.y), settings.mesh)
    return b._replace(x=x, y=y)


class Taken(NamedTuple):
    """Steps taken, not yet read: their batch sizes, finite flags and logs (on the device),
    and for a scanned chunk under ``on_nonfinite="raise"`` what replays it,
    ``(start, batch, k_e)`` (``None`` otherwise, so that no batch outlives its steps)."""

    sizes: list[int]
    finite: Any
    logs: dict
    replay: tuple | None


def take(run: Run, state: RunState, b: Batch, epoch_key, live) -> tuple[Taken, Any]:
    """The step (or scanned chunk of steps) of ``b`` from ``state``'s params, which move on:
    ``(taken, live)``, ``live`` the guard's flag (false after a non-finite step under
    ``"raise"``)."""
    programs = run.programs
    start = state.params, state.model_state, state.opt_state
    if run.settings.scan:
        *trained, logs, finite = programs.batch_scan(epoch_key, *start, b.x, b.y, b.step)
        sizes = [b.x.shape[1]] * b.x.shape[0]
    else:
        *trained, logs, finite, live = programs.batch_step(
            *start, live, b.x, b.y, b.step, epoch_key
        )
        sizes = [b.x.shape[0]]  # one step: scalar flags and logs, made rows when read
    state.params, state.model_state, state.opt_state = trained
    # only a scanned chunk under "raise" may need a replay: nothing else keeps the batch
    replay = (
        (start, b, epoch_key)
        if run.settings.scan and run.settings.on_nonfinite == "raise"
        else None
    )
    return Taken(sizes, finite, logs, replay), live


def settle(run: Run, state: RunState, epoch: int, pending: list, position: Any) -> None:
    """Read the pending steps' flags and logs (one read) into the epoch's record; under
    ``on_nonfinite="raise"`` a non-finite step raises :class:`NonFiniteError` with the last
    finite params (a scanned chunk replayed step by step up to it)."""
    if not pending:
        return
    finite, logs = host_read(([p.finite for p in pending], [p.logs for p in pending]))
    finite = np.concatenate([np.atleast_1d(np.asarray(f, bool)) for f in finite])
    if run.settings.on_nonfinite == "raise" and not finite.all():
        if run.settings.scan:  # under "raise" a scanned chunk is read on its own
            replay_chunk(run, state, pending[0])
        raise_at_first_nonfinite(
            finite, epoch, state.step, state.params, state.opt_state, state.model_state
        )
    sizes = [size for p in pending for size in p.sizes]
    rows = {k: np.concatenate([np.atleast_1d(v[k]) for v in logs]) for k in logs[0]}
    state.record(sizes, finite, rows)
    if position is not None:
        state.data_state = {"done": steps_before(run.settings, state), "position": position}


def replay_chunk(run: Run, state: RunState, entry: Taken) -> None:
    """Replay a scanned chunk step by step from its start: the guarded steps stop moving
    the params at its first non-finite step."""
    assert entry.replay is not None  # kept for every scanned chunk under "raise"
    (start, b, epoch_key), live = entry.replay, jnp.asarray(True)
    state.params, state.model_state, state.opt_state = start
    for i in range(b.x.shape[0]):
        *trained, _, _, live = run.programs.batch_step(
            state.params,
            state.model_state,
            state.opt_state,
            live,
            b.x[i],
            b.y[i],
            b.step + i,
            epoch_key,
        )
        state.params, state.model_state, state.opt_state = trained
