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
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import checkpoint
from .settings import Settings


class RunState:
    """Everything a run needs to continue exactly: what a checkpoint holds.

    ``model_state`` is the model's own state (BatchNorm's running statistics; ``{}`` for
    most models). ``epoch`` / ``step`` are the position of the next step; ``sizes``,
    ``finite`` and ``logs`` record the steps already taken in the current epoch; ``wait``,
    ``best_value``, ``best_epoch``, ``best_params`` (with ``best_model_state``) and
    ``stopped`` are early stopping's.
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

    _META = ("epoch", "step", "wait", "epochs_run", "best_value", "best_epoch", "stopped")
    _META += ("history", "sizes", "finite", "logs")

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
        return {**meta, "config": config, "has_best_params": self.best_params is not None}

    def restore(self, tree: dict[str, Any], meta: dict[str, Any]) -> None:
        for name in self._META:
            setattr(self, name, meta[name])
        self.params, self.opt_state, self.key = tree["params"], tree["opt_state"], tree["key"]
        self.model_state = tree.get("model_state", {})
        self.best_params = tree.get("best_params")
        self.best_model_state = tree.get("best_model_state")


def start_state(settings: Settings, params, opt_state, model_state=None) -> RunState:
    """The state before the first step: copies of ``params``, the model's state and
    ``opt_state`` (default ``optimizer.init(params)``), placed over the mesh if there is one."""
    params = jax.tree_util.tree_map(jnp.array, params)  # our own copy: buffers get donated
    model_state = jax.tree_util.tree_map(jnp.array, model_state or {})
    opt_state = (
        settings.optimizer.init(params)
        if opt_state is None
        else jax.tree_util.tree_map(jnp.array, opt_state)
    )
    if settings.mesh is not None:
        from .. import distributed

        params, model_state, opt_state = distributed.place(
            (params, model_state, opt_state), settings.mesh
        )
    history = {name: [] for name in settings.history_names}
    return RunState(params, opt_state, settings.key, history, model_state)


class Checkpoints:
    """A run's checkpoint folder: ``step_<g>.npz`` after ``g`` steps (the last ``keep``)
    and ``best.npz``, the state after the best epoch by the monitored quantity.

    ``every`` is ``checkpoint_every`` (``None``: at every epoch end); ``config`` the
    settings a resumed run must share: ``n``, ``batch_size`` and ``shuffle``.
    """

    def __init__(self, folder: Path, keep: int, every: int | None, config: dict):
        self.folder, self.keep, self.every, self.config = folder, keep, every, config
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.npz.*.tmp"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)

    def steps(self) -> list[tuple[int, Path]]:
        """The step checkpoints ``(g, path)``, oldest first."""
        found = [(f.stem[5:], f) for f in self.folder.glob("step_*.npz")]
        return sorted((int(g), f) for g, f in found if g.isdigit())

    def save(self, g: int, state: RunState) -> None:
        path = self.folder / f"step_{g:010d}.npz"
        checkpoint.save(path, state.tree(), meta=state.meta(self.config))
        for _, old in self.steps()[: -self.keep]:
            old.unlink(missing_ok=True)

    def save_best(self, state: RunState) -> None:
        checkpoint.save(self.folder / "best.npz", state.tree(), meta=state.meta(self.config))

    def after_steps(self, g: int, mid_epoch: bool, state: RunState) -> None:
        """After ``g`` steps in all: save mid-epoch when ``g`` is a multiple of ``every``
        (an epoch's end saves in :meth:`after_epoch`)."""
        if self.every and mid_epoch and g % self.every == 0:
            self.save(g, state)

    def after_epoch(self, g: int, improved: bool, last: bool, state: RunState) -> None:
        """After an epoch ending at step ``g``: ``best.npz`` if it ``improved``; a step
        checkpoint at the ``last`` epoch, at every epoch without ``every``, or when ``g``
        is a multiple of ``every``."""
        if improved:
            self.save_best(state)
        if last or self.every is None or g % self.every == 0:
            self.save(g, state)

    def restore(self, state: RunState, stacklevel: int = 1) -> bool:
        """Load the newest readable checkpoint into ``state``; False if there is none.

        An unreadable one is skipped with a warning; ``stacklevel`` counts as in
        :func:`warnings.warn`, from the caller of this method.
        """
        where = f"fit: checkpoint_dir {str(self.folder)!r}"
        for _, path in reversed(self.steps()):
            try:
                meta = checkpoint.load_meta(path)
            except ValueError as err:
                message = f"{where}: skipping an unreadable checkpoint: {err}"
                warnings.warn(message, stacklevel=stacklevel + 1)
                continue
            self.check_same_run(meta, state)
            like = state.tree()
            if meta["has_best_params"]:
                like["best_params"] = state.params
                if state.model_state:
                    like["best_model_state"] = state.model_state
            state.restore(checkpoint.load(path, like=like), meta)
            return True
        if self.steps():
            raise ValueError(f"{where}: no readable checkpoint to resume from")
        return False

    def check_same_run(self, meta: dict[str, Any], state: RunState) -> None:
        """The saved run has this run's ``n``, ``batch_size``, ``shuffle`` and history."""
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


def open_checkpoints(settings: Settings, state: RunState) -> Checkpoints | None:
    """The run's checkpoint folder (``None`` without ``checkpoint_dir``).

    With ``resume``, the newest checkpoint there is loaded into ``state`` (an empty folder
    starts afresh); without, a folder that holds checkpoints is refused.
    """
    if settings.checkpoint_dir is None:
        return None
    config = {"n": settings.n, "batch_size": settings.batch_size, "shuffle": settings.shuffle}
    runs = Checkpoints(
        settings.checkpoint_dir, settings.keep_checkpoints, settings.checkpoint_every, config
    )
    if settings.resume:
        runs.restore(state, stacklevel=3)  # here (1) <- fit (2) <- fit's caller (3)
    elif runs.steps():
        raise ValueError(
            f"fit: checkpoint_dir {str(settings.checkpoint_dir)!r} already holds checkpoints; "
            "pass resume=True to continue that run, or give an empty folder"
        )
    return runs
