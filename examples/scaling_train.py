"""Training on several processes: the data on disk, each process reading its part of it,
one folder of checkpoints that every process writes its part of.

Run it through the launcher, which starts the processes and tells each who it is (here two
processes with two CPU devices each; plain ``python`` runs it as one process)::

    python -m funcnn.distributed.launch -n 2 --cpu-devices 2 examples/scaling_train.py --quick

Run it again with more ``--epochs`` and it continues where the last run stopped. What runs
where (``P`` processes, global batches of ``B``):

* process 0 writes the training set as ``.npy`` shards, a chunk at a time; the others wait;
* ``--source dataset``: ``fit`` shuffles the dataset (the same order in every process) and
  each process reads only its ``B / P`` rows of each batch; ``--source grain``: each process
  iterates a Grain pipeline over its own examples (``ds[p::P]``), ``B / P`` rows a step;
* each step's rows, one block per process, make one global batch split over all the devices;
  XLA averages the gradients across them inside the step;
* every process writes its part of each checkpoint into one folder, ``OUT/checkpoints-SOURCE``
  (through Orbax when there are several; process 0 writes the metadata and holds the
  folder's lock). On several hosts, OUT must be a folder they share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils

from funcnn import data, distributed, fit, models


class CountingDataset(data.NpyDataset):
    """An NpyDataset that counts the rows this process reads."""

    rows_read = 0

    def read(self, indices):
        self.rows_read += len(indices)
        return super().read(indices)


def write_shards(folder: Path, n: int, chunk: int) -> CountingDataset:
    """Process 0 writes ``n`` examples as .npy shards, one chunk in memory at a time; every
    process then opens them (on several hosts, ``folder`` must be shared)."""
    if jax.process_index() == 0 and not (folder / "x-00000.npy").exists():
        with data.NpyWriter(folder, ((2,), np.float32), ((), np.int32), rows_per_shard=chunk) as w:
            for start in range(0, n, chunk):
                x, y = data.spirals(chunk, key=start)  # a chunk made (or read) at a time
                w.append(x, y)
    multihost_utils.sync_global_devices("shards written")  # the others wait for process 0
    return CountingDataset(sorted(folder.glob("x-*.npy")), sorted(folder.glob("y-*.npy")))


def grain_source(ds, local_batch: int):
    """``epoch -> pipeline`` over this process's examples, a new order each epoch."""
    import grain

    mine = grain.MapDataset.source(ds)[jax.process_index() :: jax.process_count()]
    return lambda epoch: mine.shuffle(seed=epoch).batch(local_batch, drop_remainder=True)


class Stop(Exception):
    """Raised after the epoch ``--stop-after-epoch``: the run ends there, as a killed job
    would, and the next run resumes from its last checkpoint."""


def main(argv: list[str] | None = None) -> int:
    distributed.initialize()  # first: join the other processes
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run, for a smoke test")
    parser.add_argument("--out", default="funcnn-out/scaling_train", help="data and checkpoints")
    parser.add_argument("--source", choices=["dataset", "grain"], default="dataset")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--stop-after-epoch", type=int, default=None, help="to try a resume")
    args = parser.parse_args(argv)
    n, batch_size = (1024, 64) if args.quick else (65536, 256)
    epochs = args.epochs or (2 if args.quick else 10)
    out = Path(args.out)
    p, count = jax.process_index(), jax.process_count()

    mesh = distributed.make_mesh()  # every device of every process on the "data" axis
    ds = write_shards(out / "data", n, chunk=n // 4)
    if args.source == "dataset":
        source, batch = ds, batch_size  # fit batches it; this process reads its rows
        rows = distributed.local_rows(batch_size, mesh)
        print(f"process {p}/{count}: rows {rows.start}:{rows.stop} of each batch of {batch}")
    else:
        local = batch_size // count  # this process's rows of each global batch
        source, batch = grain_source(ds, local), None  # the pipeline makes the batches
        print(f"process {p}/{count}: examples {p}, {p + count}, ... in batches of {local}")

    folder = out / f"checkpoints-{args.source}"  # one folder, shared by every process
    print(f"process {p}/{count}: {'resuming' if any(folder.glob('step_*')) else 'starting'}")

    def report(epoch, logs):  # after each epoch, in every process
        print(
            f"process {p}/{count}: epoch {epoch}, loss {logs['loss']:.6f}, {ds.rows_read} rows read"
        )
        if epoch == args.stop_after_epoch:
            raise Stop

    model = models.mlp([32, 3])
    _, params = model.init(jax.random.key(0), (-1, 2))  # the same params in every process
    try:
        fit(
            model,
            params,
            source,
            batch_size=batch,
            optimizer=optax.adam(1e-2),
            epochs=epochs,
            mesh=mesh,
            checkpoint_dir=folder,
            checkpoint_every=5,  # steps, counted over the run
            resume=True,  # continue the run saved there; an empty folder starts afresh
            callback=report,
            progress=False,
        )
    except Stop:
        print(f"process {p}/{count}: stopped; run again to resume")
    if p == 0:
        print(f"checkpoints in {folder}: {sorted(f.name for f in folder.glob('step_*'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
