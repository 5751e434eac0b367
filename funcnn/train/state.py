"""The state of a run, and its checkpoint policy.

:class:`RunState` is everything a run needs to continue exactly; :class:`Checkpoints`
saves it to a folder and restores it from there:

* after every ``checkpoint_every`` optimizer steps ``g`` (counted over the whole run), as
  ``step_<g>.npz``, keeping the newest ``keep_checkpoints`` (without ``checkpoint_every``:
  after every epoch);
* at the last epoch (the asked number, or the one early stopping ends with);
* as ``best.npz`` after each epoch that improves the monitored quantity.

Each save is atomic (:func:`funcnn.checkpoint.save`), so a run killed at any point leaves
the last complete checkpoint, and resuming from it ends bit-identical to an unbroken run.
A damaged checkpoint is skipped with a warning, for the newest one that reads. The folder
is locked for the run's life (:class:`funcnn.checkpoint.FolderLock`, taken by process 0
alone in a multi-process run): a second run on it is refused. Each checkpoint carries the
run's configuration (:func:`run_config`): a resumed run must have the same ``n``,
``batch_size``, ``shuffle``, data and optimizer.

A sharded run (several processes, or params split over a mesh:
:func:`~funcnn.train.checkpoint_store.sharded_run`) keeps the same policy with Orbax's
folders, ``step_<g>/`` and ``best/``, every process writing its shards
(:mod:`funcnn.train.checkpoint_store`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import DTypeLike

from .. import checkpoint
from .checkpoint_store import FileStore, ShardedFileStore, saved_kinds, sharded_layout
from .programs import fresh_copies
from .settings import Settings
from .sources import source_fingerprint


class RunState:
    """Everything a run needs to continue exactly: what a checkpoint holds.

    ``model_state`` is the model's own state (BatchNorm's running statistics; ``{}`` for
    most models). ``epoch`` / ``step`` are the position of the next step; ``sizes``,
    ``finite`` and ``logs`` record the steps already taken in the current epoch; ``wait``,
    ``best_value``, ``best_epoch``, ``best_params`` (with ``best_model_state``) and
    ``stopped`` are early stopping's. ``data_state`` is the position of the data
    iterator, as JSON (``None``: none recorded; checkpoints older than it read as ``None``).
    """

    def __init__(self, params, opt_state, key, history: dict[str, list[float]], model_state):
        self.params, self.opt_state, self.key, self.history = params, opt_state, key, history
        self.model_state = model_state
        self.epoch = self.step = self.wait = self.epochs_run = 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_params = None
        self.best_model_state = None
        self.stopped = False
        self.data_state: Any = None
        self.new_epoch()

    def new_epoch(self) -> None:
        self.sizes: list[int] = []
        self.finite: list[bool] = []
        self.logs: dict[str, list[float]] = {}

    def record(self, sizes, finite, logs: dict[str, Any]) -> None:
        """Add steps to the current epoch: their batch sizes, finite flags and logs."""
        self.sizes += [int(v) for v in sizes]
        self.finite += [bool(v) for v in finite]
        for k, v in logs.items():
            self.logs.setdefault(k, []).extend(float(u) for u in np.ravel(v))

    _META: tuple[str, ...] = ("epoch", "step", "wait", "epochs_run", "best_value")
    _META += ("best_epoch", "stopped", "history", "sizes", "finite", "logs")

    def tree(self) -> dict[str, Any]:
        """The arrays of a checkpoint: params, optimizer state, key (and best params), and
        the model's state when it has one."""
        tree = {"params": self.params, "opt_state": self.opt_state, "key": self.key}
        if self.model_state:
            tree["model_state"] = self.model_state
        if self.best_params is not None:
            tree["best_params"] = self.best_params
            if self.model_state:
                tree["best_model_state"] = self.best_model_state
        return tree

    def meta(self, config: dict) -> dict[str, Any]:
        """The rest of a checkpoint, as JSON: position, history, early stopping, config."""
        meta = {name: getattr(self, name) for name in self._META}
        meta |= {"data_state": self.data_state, "config": config}
        return {**meta, "has_best_params": self.best_params is not None}

    def restore(self, tree: dict[str, Any], meta: dict[str, Any]) -> None:
        for name in self._META:
            setattr(self, name, meta[name])
        self.data_state = meta.get("data_state")  # absent from older checkpoints
        self.params, self.opt_state, self.key = tree["params"], tree["opt_state"], tree["key"]
        self.model_state = tree.get("model_state", {})
        self.best_params = tree.get("best_params")
        self.best_model_state = tree.get("best_model_state")


def start_state(settings: Settings, params, opt_state, model_state=None) -> RunState:
    """The state before the first step: copies of ``params``, the model's state and
    ``opt_state`` (default ``optimizer.init(params)``), placed over the mesh if there is one."""
    # our own copies, as one compiled call: their buffers get donated
    try:
        copies = fresh_copies(settings.optimizer, opt_state is None)
    except TypeError:  # an unhashable optimizer: compiled afresh
        copies = fresh_copies.__wrapped__(settings.optimizer, opt_state is None)
    params, model_state, opt_state = copies(params, model_state or {}, opt_state)
    if settings.mesh is not None:
        from .. import distributed

        params, model_state, opt_state = distributed.place(
            (params, model_state, opt_state), settings.mesh
        )
    history: dict[str, list[float]] = {name: [] for name in settings.history_names}
    return RunState(params, opt_state, settings.key, history, model_state)


class Checkpoints:
    """A run's checkpoint folder: step checkpoints after ``g`` steps (the last ``keep``) and
    the best one, the state after the best epoch by the monitored quantity.

    ``every`` is ``checkpoint_every`` (``None``: at every epoch end); ``config`` the
    settings a resumed run must share (:func:`run_config`). Opening takes the folder's lock
    (a second run is refused with :class:`funcnn.checkpoint.FolderLockedError`; in a
    multi-process run only process 0 takes it) and only then opens the store, which removes
    the temporary files of a run killed mid-write; :meth:`close` releases both.

    The store: ``step_<g>.npz`` and ``best.npz`` (:class:`~funcnn.train.checkpoint_store.
    FileStore`); with ``layout``, the run's placement as it started, Orbax's sharded folders
    (:class:`~funcnn.train.checkpoint_store.ShardedFileStore`), which refuse a checkpoint of
    another layout unless ``reshard``.
    """

    def __init__(
        self,
        folder: Path,
        keep: int,
        every: int | None,
        config: dict,
        *,
        layout: dict[str, Any] | None = None,
        reshard: bool = False,
    ):
        self.folder, self.keep, self.every, self.config = folder, keep, every, config
        folder.mkdir(parents=True, exist_ok=True)
        self.lock = None
        if jax.process_index() == 0:  # one holder for all the processes of a run
            self.lock = checkpoint.FolderLock(folder, "fit: checkpoint_dir")
        try:
            if layout is None:
                self.store: FileStore | ShardedFileStore = FileStore(folder, keep)
            else:
                self.store = ShardedFileStore(folder, keep, layout, reshard)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the store and the folder's lock (the end of the run, or an error)."""
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
        if self.lock is not None:
            self.lock.release()

    def steps(self) -> list[int]:
        """The steps ``g`` of the step checkpoints, oldest first."""
        return self.store.steps()

    def save(self, g: int, state: RunState) -> None:
        self.store.save(g, state.tree(), state.meta(self.config))

    def save_best(self, state: RunState) -> None:
        self.store.save_best(state.tree(), state.meta(self.config))

    def after_steps(self, g: int, mid_epoch: bool, state: RunState) -> None:
        """After ``g`` steps in all: save mid-epoch when ``g`` is a multiple of ``every``
        (an epoch's end saves in :meth:`after_epoch`)."""
        if self.every and mid_epoch and g % self.every == 0:
            self.save(g, state)

    def after_epoch(self, g: int, improved: bool, last: bool, state: RunState) -> None:
        """After an epoch ending at step ``g``: the best checkpoint if it ``improved``; a
        step checkpoint at the ``last`` epoch, at every epoch without ``every``, or when
        ``g`` is a multiple of ``every``."""
        if improved:
            self.save_best(state)
        if last or self.every is None or g % self.every == 0:
            self.save(g, state)

    def restore(self, state: RunState, stacklevel: int = 1) -> bool:
        """Load the newest readable checkpoint into ``state``; False if there is none.

        An unreadable one (any :class:`funcnn.checkpoint.CheckpointError`, whether its
        header or only its data is damaged) is skipped with a warning; ``stacklevel``
        counts as in :func:`warnings.warn`, from the caller of this method. A readable one
        of another run (:meth:`check_same_run`) is an error.
        """
        where = f"fit: checkpoint_dir {str(self.folder)!r}"
        for g in reversed(self.steps()):
            meta = self._readable(functools.partial(self._meta, g), stacklevel)
            if meta is None:
                continue
            self.check_same_run(meta, state)
            like = state.tree()
            # the key comes back on the default device, uncommitted like a new one, so that
            # it goes with params placed over a mesh
            like["key"] = jax.ShapeDtypeStruct(state.key.shape, state.key.dtype)
            if meta["has_best_params"]:
                like["best_params"] = state.params
                if state.model_state:
                    like["best_model_state"] = state.model_state
            load = functools.partial(self.store.load, g, like, meta)
            tree = self._readable(load, stacklevel)
            if tree is not None:
                state.restore(tree, meta)
                return True
        if self.steps():
            raise ValueError(f"{where}: no readable checkpoint to resume from")
        return False

    def _readable(self, read, stacklevel: int):
        """``read()``, or ``None`` with a warning when the checkpoint is damaged."""
        try:
            return read()
        except checkpoint.CheckpointError as err:
            where = f"fit: checkpoint_dir {str(self.folder)!r}"
            message = f"{where}: skipping an unreadable checkpoint: {err}"
            warnings.warn(message, stacklevel=stacklevel + 2)
            return None

    def _meta(self, g: int) -> dict[str, Any]:
        meta = self.store.load_meta(g)
        check_run_meta(meta, f"fit: checkpoint_dir {str(self.folder)!r}: step {g}")
        return meta

    def check_same_run(self, meta: dict[str, Any], state: RunState) -> None:
        """The saved run has this run's ``n``, ``batch_size``, ``shuffle``, history, data
        and optimizer (the last two when the checkpoint records them)."""
        where = f"fit: checkpoint_dir {str(self.folder)!r}"
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
        check_same_config(meta["config"], self.config, where)


_META_TYPES = {"epoch": int, "step": int, "wait": int, "epochs_run": int, "stopped": bool}
_META_TYPES |= {"history": dict, "sizes": list, "finite": list, "logs": dict}
_META_TYPES |= {"config": dict, "has_best_params": bool}


def check_run_meta(meta: dict[str, Any], where: str) -> None:
    """A checkpoint's meta is one ``fit`` wrote: every field there, of its type; else a
    :class:`funcnn.checkpoint.CheckpointError` (the file is skipped like a damaged one).

    >>> try:
    ...     check_run_meta({"epoch": 3}, "fit: 'ck.npz'")
    ... except checkpoint.CheckpointError as err:
    ...     print(err)
    fit: 'ck.npz': not a checkpoint of fit (its meta lacks or garbles step)
    """
    bad = [name for name, kind in _META_TYPES.items() if not isinstance(meta.get(name), kind)]
    bad += [name for name in ("best_value", "best_epoch") if name not in meta]
    config = meta.get("config")
    if isinstance(config, dict):
        bad += [f"config.{k}" for k in ("n", "batch_size", "shuffle") if k not in config]
    if bad:
        raise checkpoint.CheckpointError(
            f"{where}: not a checkpoint of fit (its meta lacks or garbles {bad[0]})"
        )


# ------------------------------------------------------------ what a resumed run must share


def run_config(settings: Settings, params, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What a checkpoint records of its run, and a resumed run must match: ``n``,
    ``batch_size``, ``shuffle``, the data's fingerprint (:func:`data_fingerprint`) and the
    optimizer's (:func:`optimizer_fingerprint`)."""
    arrays = {"x": x, "y": y} if settings.source is None else {}
    if settings.validation is not None:
        arrays |= {"x_val": settings.validation[0], "y_val": settings.validation[1]}
    sources = {"x": settings.source, "validation": settings.validation_source}
    return {
        "n": settings.n,
        "batch_size": settings.batch_size,
        "shuffle": settings.shuffle,
        "data": data_fingerprint(arrays)
        | {k: source_fingerprint(v) for k, v in sources.items() if v is not None},
        "optimizer": optimizer_fingerprint(settings.optimizer, params),
    }


def data_fingerprint(arrays: dict[str, Any]) -> dict[str, list]:
    """``{name: [shape, dtype, CRC-32 of the bytes]}`` of each array.

    The CRC-32 covers every byte (``zlib.crc32`` runs at several GB/s, so this costs a
    fraction of putting the data on the device): another dataset of the same shape, or the
    same one shuffled or changed in one value, has another fingerprint.

    >>> data_fingerprint({"x": np.zeros((2, 3), np.float32)})
    {'x': [[2, 3], 'float32', 2747386400]}
    """
    out = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        out[name] = [list(a.shape), a.dtype.name, zlib.crc32(a.reshape(-1).view(np.uint8).data)]
    return out


def optimizer_fingerprint(optimizer: optax.GradientTransformation, params) -> list | None:
    """What tells one optimizer from another, hyperparameters and schedule included: a
    summary of its first three updates on a small probe; ``None`` when it cannot run there.

    The probe is one ``2 × 3`` leaf (or, for an optimizer that needs the structure of
    ``params``, such as ``optax.multi_transform``, that structure with each leaf cut to at
    most 2 along each axis), with fixed values ``θ_0`` and gradients
    ``g_t = (t + 1) cos((t + 2) θ_t)``. Step ``t``'s updates ``u`` (all leaves, flattened)
    give ``Σ_i w_i max(u_i, 0)`` and ``Σ_i w_i max(−u_i, 0)`` with fixed weights
    ``w_i = 1 + i / m``: six numbers, compared to a relative 1e-4 (:func:`same_optimizer`).
    It runs on the CPU where there is one, op by op: a few milliseconds once its
    operations are compiled (the first time in a process, under a second).

    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> adam = optimizer_fingerprint(optax.adam(1e-3), params)
    >>> [same_optimizer(adam, optimizer_fingerprint(o, params))
    ...  for o in (optax.adam(1e-3), optax.adam(2e-3), optax.sgd(1e-3))]
    [True, False, False]
    """
    try:
        with _on_cpu():
            try:
                steps = _probe_updates(optimizer, _probe_leaf((2, 3), np.float32, 0))
            except Exception:  # an optimizer bound to the structure of the params
                leaves, treedef = jax.tree_util.tree_flatten(params)
                probe = [_probe_leaf(np.shape(a), _dtype(a), i) for i, a in enumerate(leaves)]
                steps = _probe_updates(optimizer, jax.tree_util.tree_unflatten(treedef, probe))
            steps = jax.device_get(steps)
    except Exception:  # an optimizer that needs more than (grads, state, params)
        return None
    return [value for updates in steps for value in _update_summary(updates)]


def _on_cpu():
    try:
        return jax.default_device(jax.devices("cpu")[0])
    except RuntimeError:  # no CPU backend: the default device
        return contextlib.nullcontext()


def _probe_updates(optimizer: optax.GradientTransformation, probe) -> list:
    """The updates of three steps of ``optimizer`` from ``probe``."""
    opt_state, steps = optimizer.init(probe), []
    for t in range(3):
        grads = jax.tree_util.tree_map(lambda p, t=t: (t + 1) * jnp.cos((t + 2) * p), probe)
        updates, opt_state = optimizer.update(grads, opt_state, probe)
        probe = optax.apply_updates(probe, updates)
        steps.append(updates)
    return steps


def _dtype(leaf) -> DTypeLike:
    dtype = getattr(leaf, "dtype", np.float32)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else np.float32


def _probe_leaf(shape: tuple[int, ...], dtype, i: int) -> jax.Array:
    """``θ_0``: ``0.5 + 0.25 sin(1 + k + 7i)`` over the ``k``-th value of leaf ``i``, each
    axis cut to at most 2."""
    shape = tuple(min(d, 2) for d in shape)
    values = 0.5 + 0.25 * np.sin(1.0 + np.arange(math.prod(shape)) + 7 * i)
    return jnp.asarray(values.reshape(shape), dtype)


def _update_summary(updates) -> list[float]:
    leaves = [np.ravel(np.asarray(u, np.float64)) for u in jax.tree_util.tree_leaves(updates)]
    u = np.concatenate(leaves) if leaves else np.zeros(0)
    w = 1.0 + np.arange(u.size) / max(u.size, 1)
    return [float(w @ np.maximum(u, 0.0)), float(w @ np.maximum(-u, 0.0))]


def same_optimizer(saved: list | None, now: list | None) -> bool:
    """Two optimizer fingerprints agree to a relative 1e-4 (``True`` when either is
    ``None``: the optimizer could not be probed, or the checkpoint predates fingerprints).

    >>> same_optimizer([1.0, 2e-3], [1.0 + 1e-7, 2e-3]), same_optimizer([1.0], [2.0])
    (True, False)
    """
    if saved is None or now is None:
        return True
    a, b = np.asarray(saved, np.float64), np.asarray(now, np.float64)
    if a.shape != b.shape:
        return False
    scale = float(np.nanmax(np.abs(np.concatenate([a, b])), initial=0.0))
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-6 * scale, equal_nan=True))


def check_same_config(saved: dict[str, Any], config: dict[str, Any], where: str) -> None:
    """The saved run's data and optimizer fingerprints match this run's; a checkpoint
    without them (written before fingerprints) passes."""
    saved_data, data = saved.get("data"), config["data"]
    if isinstance(saved_data, dict) and saved_data != data:
        names = sorted(set(saved_data) | set(data))
        name = next(k for k in names if saved_data.get(k) != data.get(k))
        raise ValueError(
            f"{where}: the saved run trained on other data: {name} was "
            f"{_describe(saved_data.get(name))}, this call's is {_describe(data.get(name))}; "
            "resume with the same x, y and validation_data"
        )
    if "optimizer" in saved and not same_optimizer(saved["optimizer"], config["optimizer"]):
        raise ValueError(
            f"{where}: the saved run used another optimizer (its first updates on a probe "
            f"summed to {_rounded(saved['optimizer'])}, this call's to "
            f"{_rounded(config['optimizer'])}); resume with the same optimizer, learning rate "
            "and schedule"
        )


def _describe(fingerprint: list | None) -> str:
    if not isinstance(fingerprint, list) or len(fingerprint) != 3:
        return "absent"
    shape, dtype, crc = fingerprint
    return f"{dtype}{tuple(shape)} with CRC-32 {crc}"


def _rounded(values: list | None) -> str:
    return "nothing" if values is None else str([float(f"{v:.4g}") for v in values])


def open_checkpoints(settings: Settings, state: RunState, x, y) -> Checkpoints | None:
    """The run's checkpoint folder (``None`` without ``checkpoint_dir``), locked for the run:
    the caller closes it (:meth:`~Checkpoints.close`) at the end, error or not.

    With ``resume``, the newest readable checkpoint there is loaded into ``state`` (an empty
    folder starts afresh) after checking that it is a checkpoint of this run (same settings,
    data ``x``, ``y`` and optimizer; for a sharded run, the same mesh layout unless
    ``settings.reshard``); without, a folder that holds checkpoints is refused.
    """
    if settings.checkpoint_dir is None:
        return None
    config = run_config(settings, state.params, x, y)
    layout = sharded_layout(settings.checkpoint_dir, state.tree(), settings.resume)
    runs = Checkpoints(
        settings.checkpoint_dir,
        settings.keep_checkpoints,
        settings.checkpoint_every,
        config,
        layout=layout,
        reshard=settings.reshard,
    )
    try:
        if settings.resume:
            runs.restore(state, stacklevel=3)  # here (1) <- fit (2) <- fit's caller (3)
        elif runs.steps() or saved_kinds(settings.checkpoint_dir):
            raise ValueError(
                f"fit: checkpoint_dir {str(settings.checkpoint_dir)!r} already holds "
                "checkpoints; pass resume=True to continue that run, or give an empty folder"
            )
    except BaseException:
        runs.close()
        raise
    return runs
