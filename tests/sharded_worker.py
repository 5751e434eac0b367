"""Sharded checkpoint runs for tests/test_sharded_checkpoints.py, in subprocesses.

One process with 4 CPU devices, params split over a 2 × 2 ``(data, model)`` mesh:

* ``python tests/sharded_worker.py kill OUT``: a run with ``checkpoint_dir=OUT/run`` that
  kills itself (SIGKILL) in the callback of epoch 1;
* ``python tests/sharded_worker.py devices OUT``: an unbroken run, the killed one resumed
  (past an unfinalized step folder put there first), a copy of the killed one resumed
  on a 4 × 1 mesh with and without ``reshard``, and a data-parallel run (params whole on
  every device) resumed from its file checkpoints.

Two processes joined by ``jax.distributed`` (``python -m funcnn.distributed.launch -n 2
--cpu-devices 2 tests/sharded_worker.py MODE OUT``), both on one shared folder:

* ``multi-kill``: process 1 kills itself in the callback of epoch 1 (the launcher stops 0);
* ``multi``: an unbroken 2-process run, and the killed one resumed.

Each mode writes ``OUT/<mode>_<process>.npz`` (final params, optimizer state, history) and
``OUT/<mode>_<process>.json`` (what the test checks besides).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
from pathlib import Path

if __name__ == "__main__" and sys.argv[1] in ("kill", "devices"):  # before jax starts
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from funcnn import distributed, fit, models  # noqa: E402

N, BATCH, EPOCHS, EVERY, KEEP, KILL_EPOCH = 32, 8, 3, 2, 2, 1
MIN_SIZE = 64  # the hidden layer's (4, 32) weight is split over "model"; nothing else
UNFINALIZED = "step_0000000099.orbax-checkpoint-tmp-1234567"


OPTIMIZER = optax.adam(1e-2)  # one object: fit's compiled programs are cached by it


@functools.cache
def problem():
    """The model, its initial params and the data, the same in every process (one model
    object too, for fit's cache of compiled programs)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=N)
    model = models.mlp([32, 3], dropout=0.1)
    _, params = model.init(jax.random.key(0), (-1, 4))
    return model, params, x, y


def train(folder, mesh, *, callback=None, resume=False, reshard=False):
    """``fit`` with dropout, Adam, checkpoints every EVERY steps (and at epoch ends), the
    best epoch kept; params split by ``shard_params`` over ``mesh``."""
    model, params, x, y = problem()
    return fit(
        model,
        distributed.shard_params(params, mesh, min_size=MIN_SIZE),
        x,
        y,
        optimizer=OPTIMIZER,
        epochs=EPOCHS,
        batch_size=BATCH,
        key=1,
        mesh=mesh,
        patience=EPOCHS,  # never stops; keeps the best params (and writes "best")
        monitor="loss",
        callback=callback,
        checkpoint_dir=None if folder is None else str(folder),
        checkpoint_every=EVERY if folder is not None else None,
        keep_checkpoints=KEEP,
        resume=resume,
        reshard=reshard,
    )


def kill_at(epoch: int, process: int | None = None):
    """A callback that SIGKILLs this process after ``epoch`` (only in ``process``, if given)."""

    def callback(e, logs):
        if e == epoch and process in (None, jax.process_index()):
            os.kill(os.getpid(), signal.SIGKILL)

    return callback


def _host(tree):
    """Each leaf whole, as numpy, in every process."""
    return jax.tree.map(
        lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), tree
    )


def result_arrays(name: str, result) -> dict[str, np.ndarray]:
    """``{name + path: array}`` of the params and optimizer state, plus the loss history."""
    leaves = jax.tree_util.tree_flatten_with_path(_host((result.params, result.opt_state)))[0]
    arrays = {name + jax.tree_util.keystr(k): v for k, v in leaves}
    arrays[name + "/loss"] = np.asarray(result.history["loss"])
    return arrays


def steps_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("step_"))


def write(out: Path, mode: str, arrays: dict, info: dict) -> None:
    pid = jax.process_index()
    np.savez(out / f"{mode}_{pid}.npz", **arrays)
    (out / f"{mode}_{pid}.json").write_text(json.dumps(info))


def unfinalized(folder: Path) -> None:
    """A step folder Orbax had not yet renamed when its run died: the newest step's files,
    half of them, under the temporary name of a later step."""
    newest = max(p for p in folder.iterdir() if p.name.startswith("step_"))
    shutil.copytree(newest, folder / UNFINALIZED)
    for i, f in enumerate(sorted(p for p in (folder / UNFINALIZED).rglob("*") if p.is_file())):
        if i % 2:
            f.unlink()


def devices(out: Path) -> None:
    """One process, 4 devices: unbroken, resumed, resumed on another mesh."""
    mesh = distributed.make_mesh(2, 2)
    info = {"killed_steps": steps_in(out / "run")}
    shutil.copytree(out / "run", out / "other")  # for the 4 × 1 mesh, before resuming
    arrays = result_arrays("full", train(out / "full", mesh))
    unfinalized(out / "run")
    info["steps_before_resume"] = steps_in(out / "run")
    resumed = train(out / "run", mesh, resume=True)
    arrays |= result_arrays("resumed", resumed)
    info["steps_after_resume"] = steps_in(out / "run")
    info["best"] = sorted(p.name for p in (out / "run" / "best").iterdir())
    info["spec"] = str(resumed.params["hidden_0"]["w"].sharding.spec)
    other = distributed.make_mesh(4, 1)
    try:
        train(out / "other", other, resume=True)
    except ValueError as err:
        info["refused"] = str(err)
    arrays |= result_arrays("reshard", train(out / "other", other, resume=True, reshard=True))
    info["files"] = data_parallel_files(out / "files")
    write(out, "devices", arrays, info)


def data_parallel_files(folder: Path) -> list[str]:
    """A data-parallel run (params whole on every device) keeps its checkpoints in files;
    resumed, it goes on: the files then there."""
    model, params, x, y = problem()
    mesh = distributed.make_mesh(4, 1)
    kw = dict(optimizer=OPTIMIZER, batch_size=BATCH, key=1, mesh=mesh, checkpoint_dir=folder)
    fit(model, params, x, y, epochs=1, **kw)
    fit(model, params, x, y, epochs=2, resume=True, **kw)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def multi(out: Path) -> None:
    """Two processes: unbroken, and the killed run resumed, on one shared folder each."""
    mesh = distributed.make_mesh(2, 2)
    info = {"processes": jax.process_count(), "killed_steps": steps_in(out / "run")}
    arrays = result_arrays("full", train(out / "full", mesh))
    arrays |= result_arrays("resumed", train(out / "run", mesh, resume=True))
    info["steps_after_resume"] = steps_in(out / "run")
    write(out, "multi", arrays, info)


def main(mode: str, out: str) -> None:
    if mode.startswith("multi"):
        distributed.initialize()
    folder = Path(out)
    if mode == "devices":
        devices(folder)
    elif mode == "multi":
        multi(folder)
    else:  # "kill", "multi-kill": process 1 (or the only one) dies at KILL_EPOCH
        process = 1 if mode == "multi-kill" else None
        train(folder / "run", distributed.make_mesh(2, 2), callback=kill_at(KILL_EPOCH, process))
        raise SystemExit(f"{mode}: the run should have been killed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
