"""Data sources for ``fit`` besides arrays in memory, and their batches on the way in.

Two kinds of source:

* a **dataset** read at random (an object with ``len(ds)`` and ``ds.read(indices) -> (x, y)``,
  such as :class:`funcnn.data.NpyDataset` on ``.npy`` shards or :class:`funcnn.data.IdxDataset`
  on IDX files, whose reads keep memory bounded): ``fit`` shuffles and batches it exactly as
  it does arrays in memory, so that the two runs are equal step for step, and reads only the
  rows of each batch;
* an **iterable of batches** ``(x, y)``, iterated afresh each epoch (a list of batches, a
  Grain ``DataLoader``, ``MapDataset`` or ``IterDataset``), or a function
  ``epoch -> iterable`` (for a new order each epoch). Its batches are used as they come; the
  last one of an epoch may be short. An iterator with ``get_state`` / ``set_state`` (Grain's)
  has its position saved in each checkpoint; another is fast-forwarded on resume, which is
  exact when it yields the same batches each time.

A background thread reads the next batches and puts them on the device while the current
step runs (:func:`prefetch`, ``PREFETCH`` batches ahead). In a run over several processes each
process reads only its rows of each batch (a dataset), or its own batches (an iterable, such
as a Grain pipeline sharded by JAX process), and the global batch is assembled from them.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import compiler
from ..data import shuffle as shuffle_indices

PREFETCH = 2  # batches (or chunks of batches) read and placed ahead of the step
READ_BYTES = 4 * 2**20  # a dataset is read several batches at a time, up to this many bytes
MAX_GROUP = 64  # ... and this many batches


def is_dataset(x: Any) -> bool:
    """``x`` is read at random: it has ``__len__`` and ``read(indices)``."""
    return hasattr(x, "read") and hasattr(x, "__len__")


def is_iterable_source(x: Any) -> bool:
    """``x`` is an iterable of batches (or a function ``epoch -> iterable``), not an array."""
    if isinstance(x, list):  # a list of batches (x, y), not a nested list of numbers
        first = x[0] if x else None
        if isinstance(first, dict):  # batches of another form, refused by name in fit
            return True
        return isinstance(first, tuple) and bool(first) and all(np.ndim(a) > 0 for a in first)
    if isinstance(x, (np.ndarray, jax.Array, tuple, str)) or hasattr(x, "__array__"):
        return False
    return callable(x) or hasattr(x, "__iter__")


def is_source(x: Any) -> bool:
    """``x`` is a source rather than an array of inputs."""
    return is_dataset(x) or is_iterable_source(x)


class Batch(NamedTuple):
    """One step's data as it reaches the loop: the step ``s`` of its epoch, the inputs and
    targets (host or device arrays; for a scan, ``k`` batches stacked), and the source's
    position after it (``None`` where there is none to save)."""

    step: int
    x: Any
    y: Any
    position: Any


def dataset_batches(
    ds,
    key,
    epoch: int,
    first: int,
    batch_size: int,
    shuffle: bool,
    rows: Callable[[int], slice] | None = None,
) -> Iterator[Batch]:
    """Epoch ``epoch``'s batches of the dataset ``ds`` from step ``first``, in the order
    ``fit`` gives arrays: ``perm_e = data.shuffle(fold_in(fold_in(key, e), 0), n)`` and step
    ``s`` reads ``perm_e[s·B : (s + 1)·B]`` (only its ``rows(size)`` in a run over several
    processes, ``size`` the batch's). Consecutive batches are read together, up to
    :data:`READ_BYTES` at a time, which bounds the memory this takes."""
    n = len(ds)
    if shuffle:  # 4 bytes an example on the host, computed by one compiled program
        perm = np.asarray(epoch_permutation(key, epoch, n))
    else:
        perm = np.arange(n)
    n_steps, s, group = -(-n // batch_size), first, 1
    while s < n_steps:  # `group` batches a read, as many as READ_BYTES holds
        stop = min(s + group, n_steps)
        idx = [perm[t * batch_size : (t + 1) * batch_size] for t in range(s, stop)]
        if rows is not None:
            idx = [i[rows(len(i))] for i in idx]
        x, y = ds.read(np.concatenate(idx))
        at = np.cumsum([0] + [len(i) for i in idx])
        for t, (a, b) in enumerate(zip(at[:-1], at[1:]), s):
            yield Batch(t, x[a:b], y[a:b], None)
        per_batch = (x.nbytes + y.nbytes) / (stop - s)
        s, group = stop, int(min(MAX_GROUP, max(1, READ_BYTES // max(per_batch, 1))))


def epoch_order(key, epoch, n: int, shuffle: bool):
    """``k_e = fold_in(key, e)`` and epoch ``e``'s order of the ``n`` examples:
    ``data.shuffle(fold_in(k_e, 0), n)``, or ``0 .. n − 1`` without shuffling."""
    epoch_key = jax.random.fold_in(key, epoch)
    if not shuffle:
        return epoch_key, jnp.arange(n, dtype=jnp.int32)
    return epoch_key, shuffle_indices(jax.random.fold_in(epoch_key, 0), n)


@functools.partial(compiler.jit, static_argnums=2)
def epoch_permutation(key, epoch, n: int) -> jax.Array:
    """Epoch ``e``'s shuffled order (:func:`epoch_order`), compiled once per ``n``."""
    return epoch_order(key, epoch, n, True)[1]


def iterable_batches(source, epoch: int, first: int, saved: Any) -> Iterator[Batch]:
    """Epoch ``epoch``'s batches of an iterable source from step ``first``: a fresh iterator
    of ``source`` (or of ``source(epoch)``), moved to ``saved`` (a position from a
    checkpoint) when it can be, else past its first ``first`` batches. Each batch carries the
    iterator's position after it."""
    iterator = iter(
        source(epoch) if callable(source) and not hasattr(source, "__iter__") else source
    )
    stateful = hasattr(iterator, "get_state") and hasattr(iterator, "set_state")
    if first and stateful and saved is not None:
        iterator.set_state(decode_position(saved))
    elif first:
        for _ in itertools.islice(iterator, first):
            pass
    for s in itertools.count(first):
        try:
            batch = next(iterator)
        except StopIteration:
            return
        x, y = split_batch(batch, epoch, s)
        yield Batch(s, x, y, encode_position(iterator.get_state()) if stateful else None)


def split_batch(batch: Any, epoch: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """A source's batch as the pair ``(x, y)`` of NumPy arrays with a common leading size."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"fit: the source's batch {s} of epoch {epoch} is a {type(batch).__name__}"
            f"{f' of {len(batch)}' if isinstance(batch, (tuple, list)) else ''}; "
            "expected a pair (x, y) of arrays"
        )
    x, y = (np.asarray(a) for a in batch)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"fit: the source's batch {s} of epoch {epoch} has x of shape {x.shape} and y of "
            f"shape {y.shape}; expected arrays with the same leading size > 0"
        )
    return x, y


def encode_position(state: Any) -> Any:
    """An iterator's state as JSON (bytes become ``{"bytes": base64}``)."""
    if isinstance(state, bytes):
        return {"bytes": base64.b64encode(state).decode("ascii")}
    return state


def decode_position(saved: Any) -> Any:
    """The iterator's state from :func:`encode_position`'s JSON."""
    if isinstance(saved, dict) and set(saved) == {"bytes"}:
        return base64.b64decode(saved["bytes"])
    return saved


class ShapeCheck:
    """Every batch of an epoch has the first one's shapes, but for a short last one."""

    def __init__(self):
        self.first: Batch | None = None
        self.short: Batch | None = None

    def __call__(self, b: Batch, epoch: int) -> None:
        if self.first is None:
            self.first = b
            return
        first, where = self.first, f"fit: the source's batches changed shape in epoch {epoch}"
        if self.short is not None:
            raise ValueError(
                f"{where}: batch {b.step} follows batch {self.short.step}, which was short "
                f"({len(self.short.x)} rows against {len(first.x)}); only the last batch of "
                "an epoch may be shorter"
            )
        if describe(b, 1) != describe(first, 1) or len(b.x) > len(first.x):
            raise ValueError(
                f"{where}: batch {b.step} has {describe(b)}, the first had {describe(first)}; "
                "every batch of an epoch must have the first one's shapes (the last may be "
                "shorter)"
            )
        if len(b.x) < len(first.x):
            self.short = b


def describe(b: Batch, axis: int = 0) -> str:
    """``x float32(64, 2), y int32(64,)``: a batch's dtypes and shapes from ``axis`` on."""
    return f"x {b.x.dtype}{b.x.shape[axis:]}, y {b.y.dtype}{b.y.shape[axis:]}"


def chunks(batches: Iterator[Batch], size: int, ends: Callable[[int], bool]) -> Iterator[Batch]:
    """Consecutive batches of one shape stacked ``size`` at a time, for one ``lax.scan``
    each: a chunk also ends after a step ``s`` with ``ends(s)`` (a checkpoint due) and before
    a batch of another shape (a short last one, which makes a chunk of its own)."""
    group: list[Batch] = []

    def stacked() -> Batch:
        xs, ys = np.stack([b.x for b in group]), np.stack([b.y for b in group])
        return Batch(group[0].step, xs, ys, group[-1].position)

    for b in batches:
        if group and b.x.shape != group[0].x.shape:
            yield stacked()
            group = []
        group.append(b)
        if len(group) == size or ends(b.step):
            yield stacked()
            group = []
    if group:
        yield stacked()


def prefetch(items: Iterator[Batch], place: Callable[[Batch], Batch], depth: int = PREFETCH):
    """Iterate ``items`` in a background thread, ``place`` each (onto the device) there, and
    yield them ``depth`` ahead of their use; an error in the thread is raised here."""
    done = object()
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                box.put(place(item))
            box.put(done)
        except BaseException as err:  # handed to the consumer, raised there
            box.put(err)

    thread = threading.Thread(target=produce, daemon=True, name="funcnn-prefetch")
    thread.start()
    try:
        while (item := box.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def source_chunks(source, epoch: int, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A validation source's data in pieces ``(x, y)``: a dataset in chunks of ``chunk``
    examples, an iterable batch by batch (its epoch ``epoch``)."""
    if is_dataset(source):
        index = np.arange(len(source))
        for i in range(0, len(source), chunk):
            yield source.read(index[i : i + chunk])
    else:
        for b in iterable_batches(source, epoch, 0, None):
            yield b.x, b.y


def source_fingerprint(source) -> list:
    """``[[n], kind, CRC-32]`` of a source, in the form of an array's fingerprint: a
    dataset's length, type and the CRC-32 of its own ``fingerprint()`` (its files, sizes
    and sampled rows); an iterable's type alone (it cannot be read without being used up).

    >>> source_fingerprint([(np.zeros((2, 1)), np.zeros(2))])
    [[0], 'list', 0]
    """
    kind = type(source).__name__
    if not is_dataset(source):
        return [[0], kind, 0]
    own = source.fingerprint() if hasattr(source, "fingerprint") else None
    return [[len(source)], kind, zlib.crc32(json.dumps(own, sort_keys=True, default=str).encode())]
