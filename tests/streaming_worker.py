"""A training script for tests/test_streaming_processes.py: ``fit`` on data sources, run in
subprocesses.

``python tests/streaming_worker.py scan OUT DATA``: one process with 4 CPU devices trains on
the ``.npy`` shards in ``DATA`` over a mesh with ``scan=True``.

``python -m funcnn.distributed.launch -n 2 --cpu-devices 2 tests/streaming_worker.py MODE
OUT DATA``, two processes joined by ``jax.distributed`` over a mesh of their 4 devices:

* ``multi-kill``: a run on a Grain ``DataLoader`` per process (:class:`Loaders`) with
  checkpoints in ``OUT/killed``; process 1 SIGKILLs itself mid-epoch 1, after the checkpoint
  of step 8 (the launch fails);
* ``multi``: training on the shards in ``DATA`` (each process recording the rows it reads),
  then on a Grain pipeline sharded by JAX process; then the loaders' unbroken run, the killed
  run resumed, and a run on a relative ``checkpoint_dir`` (one epoch, resumed for the
  second); last, what each process must refuse (:func:`source_errors`): a ``batch_size`` that
  does not split over the 4 devices, and sources whose lengths differ between the processes,
  each error written as ``OUT/<case>_<process>.json``; the last one is raised (the launch
  fails).

Each writes ``OUT/<mode>_<process>.npz`` (the trained params) and ``OUT/<mode>_<process>.json``
(what it saw); the test compares them with one-process runs of the same training.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__" and sys.argv[1] == "scan":  # before jax starts its backend
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from funcnn import data, distributed, fit, models  # noqa: E402

N, BATCH, EPOCHS = 44, 8, 2  # 5 batches of 8 and a short last one of 4 (over 4 devices)
PROCESSES = 2
BAD_BATCH = 6  # does not split over 4 devices
LOCAL = BATCH // PROCESSES  # a process's rows of a global batch
EVERY = 4  # checkpoint_every for the loaders: after steps 4 and 8, both mid-epoch
KILL_BATCH = 5  # process 1 dies reading this batch of epoch 1, after step 8's checkpoint
# (the prefetch thread reads at most 3 batches past the step being taken: batch 5 is read
# once the step of batch 1 of epoch 1, step 8 of the run, and its checkpoint are done)


def problem():
    """The model, its initial params and the data, the same in every process."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=N).astype(np.int32)
    model = models.mlp([16, 3], dropout=0.1)
    _, params = model.init(jax.random.key(0), (-1, 4))
    return model, params, x, y


def options() -> dict:
    """``fit``'s settings shared by every run: momentum SGD, dropout on (key 1)."""
    return dict(optimizer=optax.sgd(0.1, momentum=0.9), epochs=EPOCHS, key=1, progress=False)


def write_shards(folder) -> data.NpyDataset:
    """The problem's data as ``.npy`` shards of 10 rows in ``folder``."""
    _, _, x, y = problem()
    return data.write_npy_shards(x, y, folder, rows_per_shard=10)


def open_shards(folder) -> data.NpyDataset:
    """The dataset :func:`write_shards` wrote into ``folder``."""
    folder = Path(folder)
    return data.NpyDataset(sorted(folder.glob("x-*.npy")), sorted(folder.glob("y-*.npy")))


class Recording:
    """A dataset that records the indices of each read of the dataset it wraps."""

    def __init__(self, inner):
        self.inner, self.reads = inner, []

    def __len__(self):
        return len(self.inner)

    def read(self, indices):
        self.reads.append(np.asarray(indices).tolist())
        return self.inner.read(indices)


class Rows:
    """Arrays as a sequence of examples ``(x[i], y[i])``, a source for Grain."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __repr__(self):  # the same in every run: Grain checks a restored loader's source by it
        return f"Rows({len(self.x)})"


def grain_pipeline(x, y, shard):
    """The examples shuffled (the same order in every process), the ``shard`` (a Grain
    ``ShardOptions``) of them taken (every ``shard_count``-th from ``shard_index``), in
    batches of this process's part of a global batch of BATCH."""
    import grain

    ds = grain.MapDataset.source(Rows(x, y)).shuffle(seed=3)
    return ds[shard.shard_index :: shard.shard_count].batch(BATCH // shard.shard_count)


def host(tree):
    """A host copy of a (replicated) global array, read from this process's devices."""
    return jax.tree.map(
        lambda a: np.asarray(a if a.is_fully_addressable else a.addressable_data(0)), tree
    )


def save(out, name: str, trees: dict, info: dict) -> None:
    """``trees`` as ``OUT/<name>.npz`` (keys such as ``['dataset']['hidden_0']['w']``) and
    ``info`` as ``OUT/<name>.json``."""
    leaves = jax.tree_util.tree_flatten_with_path(host(trees))[0]
    np.savez(Path(out) / f"{name}.npz", **{jax.tree_util.keystr(k): v for k, v in leaves})
    (Path(out) / f"{name}.json").write_text(json.dumps(info))


def scan(out, folder) -> None:
    """One process, 4 devices: the dataset over the mesh, scanned."""
    model, params, _, _ = problem()
    ds, mesh = open_shards(folder), distributed.make_mesh()
    result = fit(model, params, ds, batch_size=BATCH, mesh=mesh, scan=True, **options())
    specs = sorted({str(a.sharding.spec) for a in jax.tree.leaves(result.params)})
    info = {"devices": jax.device_count(), "specs": specs, "history": {"dataset": result.history}}
    save(out, "scan_0", {"dataset": result.params}, info)


def grain_loader(x, y, shard, epoch: int):
    """A Grain ``DataLoader`` of the ``shard`` (a ``ShardOptions``) of the examples, shuffled
    with a seed of ``epoch``'s, in batches of that shard's part of a global batch of BATCH."""
    import grain

    sampler = grain.samplers.IndexSampler(
        len(x), shard_options=shard, shuffle=True, num_epochs=1, seed=10 + epoch
    )
    batch = grain.transforms.Batch(BATCH // shard.shard_count)
    return grain.DataLoader(
        data_source=Rows(x, y), sampler=sampler, operations=[batch], worker_count=0
    )


class Loaders:
    """``fit``'s source: epoch -> this process's :func:`grain_loader` of that epoch; the
    epochs asked for are kept in ``asked`` (a resumed run skips those done). With ``kill``
    (a file), process 1's loader of epoch 1 dies at KILL_BATCH (:class:`Dying`)."""

    def __init__(self, kill: Path | None = None):
        import grain

        _, _, self.x, self.y = problem()
        self.shard = grain.sharding.ShardOptions(jax.process_index(), jax.process_count())
        self.kill, self.asked = kill, []

    def __call__(self, epoch: int):
        self.asked.append(epoch)
        loader = grain_loader(self.x, self.y, self.shard, epoch)
        if self.kill and epoch == 1 and jax.process_index() == 1:
            return Dying(loader, KILL_BATCH, self.kill)
        return loader


class Dying:
    """A loader whose iterator SIGKILLs this process as batch ``at`` is read from it, after
    writing the file ``note``; it hands on the loader's iterator's position (``get_state`` /
    ``set_state``)."""

    def __init__(self, loader, at: int, note: Path):
        self.loader, self.at, self.note = loader, at, note

    def __iter__(self):
        self.inner, self.read = iter(self.loader), 0
        return self

    def __next__(self):
        if self.read == self.at:
            self.note.write_text(json.dumps({"process": jax.process_index(), "batch": self.at}))
            os.kill(os.getpid(), signal.SIGKILL)
        self.read += 1
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def train_loaders(folder, *, kill: Path | None = None, resume=False, epochs: int = EPOCHS):
    """``fit`` on :class:`Loaders` over the 4 devices with checkpoints in ``folder`` every
    EVERY steps: ``(result, epochs asked of the source)``."""
    model, params, _, _ = problem()
    source, settings = Loaders(kill), options() | {"epochs": epochs}
    result = fit(
        model,
        params,
        source,
        mesh=distributed.make_mesh(),
        checkpoint_dir=folder,
        checkpoint_every=EVERY,
        resume=resume,
        **settings,
    )
    return result, source.asked


def steps_in(folder) -> list[str]:
    """The step checkpoints (Orbax's finalized folders) in ``folder``."""
    return sorted(p.name for p in Path(folder).glob("step_*") if p.name[5:].isdigit())


def data_state(folder, step: str):
    """The ``data_state`` in the meta of the checkpoint ``step`` in ``folder``."""
    document = json.loads((Path(folder) / step / "meta" / "metadata").read_text())
    return document["meta"]["data_state"]


def loader_runs(out) -> tuple[dict, dict]:
    """The loaders' unbroken run, the killed run (``multi-kill``) resumed, and a run on a
    relative ``checkpoint_dir`` (from OUT): one epoch, then resumed for the second.
    ``(params, info)``, ``info`` with what the checkpoints held."""
    out, here = Path(out), os.getcwd()
    killed = steps_in(out / "killed")
    info = {"killed_steps": killed, "killed_data_state": data_state(out / "killed", killed[-1])}
    full, _ = train_loaders(str(out / "full"))
    resumed, info["resumed_asked"] = train_loaders(str(out / "killed"), resume=True)
    os.chdir(out)
    try:
        train_loaders("relative", epochs=1)
        info["relative_first_steps"] = steps_in("relative")
        relative, info["relative_asked"] = train_loaders("relative", resume=True)
    finally:
        os.chdir(here)
    info |= {"relative_steps": steps_in(out / "relative"), "full_steps": steps_in(out / "full")}
    info["full_data_state"] = data_state(out / "full", "step_0000000008")
    results = {"loader": full, "resumed": resumed, "relative": relative}
    info["history"] = {name: r.history for name, r in results.items()}
    return {name: r.params for name, r in results.items()}, info


def refused(out, case: str, train, last: bool = False) -> None:
    """Run ``train``, which should raise a ``ValueError`` in every process: its message and
    the seconds it took as ``OUT/<case>_<process>.json``. The ``last`` case waits (30 s at
    most) for every process's file, then raises, so that the launch fails only after all
    have written theirs."""
    pid, start, error = jax.process_index(), time.monotonic(), None
    try:
        train()
    except ValueError as err:
        error = err
    record = {"message": str(error or "no error"), "seconds": time.monotonic() - start}
    (Path(out) / f"{case}_{pid}.json").write_text(json.dumps(record))
    if last:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(Path(out).glob(f"{case}_*.json"))) < 2:
            time.sleep(0.05)
        if error is not None:
            raise error


def source_errors(out, folder) -> None:
    """What each process refuses: BAD_BATCH on the dataset; a Grain pipeline one batch
    shorter in process 1 (5 batches of 4 rows against 6, the last of 2); a list of batches
    whose last one has 4 rows in process 1, 2 in process 0 (raised: the launch fails)."""
    import grain

    model, params, x, y = problem()
    pid, mesh = jax.process_index(), distributed.make_mesh()

    def train(source, **kw):
        return lambda: fit(model, params, source, mesh=mesh, **kw, **options())

    refused(out, "bad_batch", train(open_shards(folder), batch_size=BAD_BATCH))
    rows = 20 if pid == 1 else 22
    fewer = grain.MapDataset.source(Rows(x[:rows], y[:rows])).batch(LOCAL)
    refused(out, "fewer_batches", train(fewer))
    rows = 24 if pid == 1 else 22
    xs, ys = x[:rows], y[:rows]
    listed = [(xs[i : i + LOCAL], ys[i : i + LOCAL]) for i in range(0, rows, LOCAL)]
    refused(out, "last_batch_size", train(listed), last=True)


def multi(out, folder) -> None:
    """Two processes: the dataset, the Grain pipeline, the loaders with checkpoints, then
    the sources each process must refuse."""
    import grain

    distributed.initialize()
    mesh = distributed.make_mesh()
    pid = jax.process_index()
    model, params, x, y = problem()
    reader = Recording(open_shards(folder))
    on_disk = fit(model, params, reader, batch_size=BATCH, mesh=mesh, **options())
    pipeline = grain_pipeline(x, y, grain.sharding.ShardByJaxProcess())
    streamed = fit(model, params, pipeline, mesh=mesh, **options())
    loaded, loader_info = loader_runs(out)
    info = {
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "reads": reader.reads,
        "grain_rows": [len(bx) for bx, _ in pipeline],
        "history": {"dataset": on_disk.history, "grain": streamed.history},
    }
    info["history"] |= loader_info.pop("history")
    info |= loader_info
    trees = {"dataset": on_disk.params, "grain": streamed.params, **loaded}
    save(out, f"multi_{pid}", trees, info)
    source_errors(out, folder)


def multi_kill(out, folder) -> None:
    """Two processes: the loaders' run with checkpoints in ``OUT/killed``, process 1 killed
    in epoch 1 (:class:`Dying`)."""
    distributed.initialize()
    train_loaders(str(Path(out) / "killed"), kill=Path(out) / "dying.json")
    raise SystemExit("multi-kill: process 1 should have been killed")


if __name__ == "__main__":
    modes = {"scan": scan, "multi": multi, "multi-kill": multi_kill}
    modes[sys.argv[1]](sys.argv[2], sys.argv[3])
