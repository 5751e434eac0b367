"""A training script for tests/test_streaming_processes.py: ``fit`` on data sources, run in
subprocesses.

``python tests/streaming_worker.py scan OUT DATA``: one process with 4 CPU devices trains on
the ``.npy`` shards in ``DATA`` over a mesh with ``scan=True``.

``python -m funcnn.distributed.launch -n 2 --cpu-devices 2 tests/streaming_worker.py multi
OUT DATA``: two processes joined by ``jax.distributed`` train over a mesh of their 4 devices,
first on the shards in ``DATA`` (each process recording the rows it reads), then on a Grain
pipeline sharded by JAX process; last, each process tries a ``batch_size`` that does not
split over the 4 devices, writes the error and exits with it (the launch fails).

Each writes ``OUT/<mode>_<process>.npz`` (the trained params) and ``OUT/<mode>_<process>.json``
(what it saw); the test compares them with one-process runs of the same training.
"""

from __future__ import annotations

import json
import os
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


def bad_batch_size(out, folder) -> None:
    """``fit`` with BAD_BATCH: write the error, wait (30 s at most) for the other process's,
    then raise it, so that each process has written its own before the launch stops them."""
    model, params, _, _ = problem()
    pid, ds, mesh = jax.process_index(), open_shards(folder), distributed.make_mesh()
    try:
        fit(model, params, ds, batch_size=BAD_BATCH, mesh=mesh, **options())
    except ValueError as err:
        (Path(out) / f"error_{pid}.txt").write_text(str(err))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(Path(out).glob("error_*.txt"))) < 2:
            time.sleep(0.05)
        raise
    (Path(out) / f"error_{pid}.txt").write_text("no error")


def multi(out, folder) -> None:
    """Two processes: the dataset, then the Grain pipeline, then the bad batch size."""
    import grain

    distributed.initialize()
    mesh = distributed.make_mesh()
    pid = jax.process_index()
    model, params, x, y = problem()
    reader = Recording(open_shards(folder))
    on_disk = fit(model, params, reader, batch_size=BATCH, mesh=mesh, **options())
    pipeline = grain_pipeline(x, y, grain.sharding.ShardByJaxProcess())
    streamed = fit(model, params, pipeline, mesh=mesh, **options())
    info = {
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "reads": reader.reads,
        "grain_rows": [len(bx) for bx, _ in pipeline],
        "history": {"dataset": on_disk.history, "grain": streamed.history},
    }
    save(out, f"multi_{pid}", {"dataset": on_disk.params, "grain": streamed.params}, info)
    bad_batch_size(out, folder)


if __name__ == "__main__":
    {"scan": scan, "multi": multi}[sys.argv[1]](sys.argv[2], sys.argv[3])
