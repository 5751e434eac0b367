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

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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
    check_targets = target_checker(
        settings, state.params, state.model_state
    )  # here: not in the reader
    items = checked(settings, epoch, source_batches(settings, state, epoch), check_targets)
    if settings.scan:
        items = chunks(items, CHUNK_STEPS, lambda s: due(settings, before + s + 1))
    epoch_key = jax.random.fold_in(state.key, epoch)
    pending: list = []
    taken, live = state.step, jnp.asarray(True)
    together = jax.process_count() > 1 and not is_dataset(settings.source)
    for b in prefetch(items, lambda b: place(settings, b)):
        if together:
            agree_on_batch(len(b.x), epoch, b.step)
        entry, live = take(run, state, b, epoch_key, live)
        pending.append(entry)
        taken = b.step + len(entry.sizes)
        if due(settings, before + taken) or (settings.scan and settings.on_nonfinite == "raise"):
            settle(run, state, epoch, pending, b.position)
            state.step, pending = taken, []
            if run.checkpoints is not None and due(settings, before + taken):
                if together and state.data_state is not None:  # each process's position,
                    # in the meta that process 0 writes
                    state.data_state["positions"] = gather_json(b.position)
                run.checkpoints.after_steps(before + taken, True, state)
    if together:
        agree_on_batch(0, epoch, taken)  # every process's source ended here
    if taken == 0:
        raise ValueError(
            f"fit: the source yielded no batch in epoch {epoch}; expected at least one (an "
            "iterator that is used up after one pass needs to be given as a re-iterable "
            "object or as a function epoch -> iterable)"
        )
    settle(run, state, epoch, pending, None)
    if not is_dataset(settings.source):
        state.data_state = {"done": before + taken, "position": None}
    end_epoch(run, state, epoch, bar, validation_logs(run, state), before + taken)


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
        if settings.mesh is not None and not settings.n:  # an iterable's batch, over a mesh
            from .. import distributed

            # each process's batch is its part of a global batch of P times its rows
            rows = f"the global size of the source's batch {b.step} of epoch {epoch}"
            size = len(b.x) * jax.process_count()
            distributed.check_divisible(size, settings.mesh, argument=rows, who="fit")
        name = f"y of the source's batch {b.step} of epoch {epoch}"
        check_targets(b.x, b.y, name)
        yield b


def place(settings: Settings, b: Batch) -> Batch:
    """A batch (or a stacked chunk) on the device: split over the mesh's ``"data"`` axis
    when there is one (this process's rows make its part, over several processes)."""
    if settings.mesh is None:
        return b._replace(x=jax.device_put(b.x), y=jax.device_put(b.y))
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


def agree_on_batch(rows: int, epoch: int, step: int) -> None:
    """In a run over several processes on an iterable source: every process has a batch of
    ``rows`` rows for step ``step`` (``0``: its source ended), or all raise a ``ValueError``
    (where the processes would otherwise wait on each other for ever). One small collective."""
    from jax.experimental import multihost_utils

    every = np.ravel(multihost_utils.process_allgather(np.asarray(rows, np.int32)))
    if (every != every[0]).any():
        raise ValueError(
            f"fit: the processes' sources disagree at batch {step} of epoch {epoch}: their "
            f"local batches have {every.tolist()} rows (0: the source ended); each process "
            "must yield as many batches, of the same sizes (for a Grain pipeline: shards of "
            "equal size, or drop_remainder=True)"
        )


def gather_json(value: Any) -> list:
    """Every process's JSON-able ``value``, in process order (a collective)."""
    from jax.experimental import multihost_utils

    own = np.frombuffer(json.dumps(value).encode(), np.uint8)
    longest = int(np.max(multihost_utils.process_allgather(np.asarray(len(own), np.int32))))
    padded = np.zeros(longest, np.uint8)
    padded[: len(own)] = own
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(-1, longest)
    return [json.loads(bytes(row).rstrip(b"\0").decode()) for row in every]
