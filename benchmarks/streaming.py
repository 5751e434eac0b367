"""Training from disk: bounded memory on a dataset 4× the budget, and the speed of streaming.

    python benchmarks/streaming.py [--budget-mib 512] [--scale 4.2] [--rounds 7] [--epochs 5]
    python benchmarks/streaming.py --quick   # a 40 MiB file, 2 rounds of 2 epochs: the harness

Two measurements:

* **Bounded memory.** A fresh process (so that the peak resident memory is its own) writes
  ``--scale`` × ``--budget-mib`` of digit-like data (default 4.2 × 512 MiB, 2.1 GiB) chunk by
  chunk with ``NpyWriter`` into a temporary folder: 8×8 float32 images, each a copy of one of
  the 1,797 ``data.digits()`` shifted by up to a pixel each way, its ink scaled by 0.8–1.2 and
  Gaussian noise (σ = 0.05) added, clipped to [0, 1], with its digit's int32 label. Then
  ``fit(models.mlp([64, 10]), params, NpyDataset(..., transform=flatten), batch_size=2048,
  epochs=1, progress=False)`` streams one whole epoch of it. Printed: the process's resident
  memory after the imports, the peak while writing and before ``fit``, and its peak over its
  whole life (``VmHWM`` in ``/proc/self/status``), against the budget and the file's size
  (what the arrays alone would take in memory); the run passes when the peak is under the
  budget. The folder is removed at the end.
* **Speed.** The LeNet of ``fit_overhead.py``'s lenet workload (``examples/cnn_digits.py``'s
  network on the 8×8 digits, the 1,408 training images, batch 64, Adam 3e-3), trained with
  ``scan=False`` (the mode convolutional networks use on a CPU) from the arrays in memory,
  ``fit(model, params, x, y, ...)``, and from the same arrays written to ``.npy`` shards of
  512 rows, ``fit(model, params, NpyDataset(...), ...)``. One call of ``--epochs`` epochs is
  timed, divided by the epochs, after a warm-up call of each (compilation excluded); the two
  alternate round by round, medians printed, with the ratio streaming ÷ in memory (the target
  is ≤ 1.15). The warm-up calls must give identical params and history, bit for bit: both
  sides shuffle the same way and take the same steps.

The exit status is 1 when the peak is over the budget or the two runs differ; a ratio over
its target is reported, not failed (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # run.py and fit_overhead.py, this checkout's funcnn

MIB = 1 << 20
ROW_BYTES = 8 * 8 * 4 + 4  # a float32 8×8 image and its int32 label
CHUNK_ROWS = 32_768  # rows generated and appended at once: 8 MiB of images
SHARD_ROWS = 1 << 20  # rows per shard of the big dataset: 256 MiB of images
TARGET_RATIO = 1.15
DIGITS = "digits.npz"  # data.digits() handed to the memory run: scikit-learn stays out of it


def status(key: str) -> float:
    """A field of ``/proc/self/status`` in MiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def digit_like(padded, labels, rng, m: int):
    """``m`` jittered digits: ``(m, 8, 8, 1)`` float32 images and their int32 labels."""
    import numpy as np

    pick = rng.integers(0, len(padded), m)
    dy, dx = (rng.integers(0, 3, m)[:, None, None] for _ in range(2))
    r = np.arange(8)
    x = padded[pick[:, None, None], dy + r[None, :, None], dx + r[None, None, :]]
    x *= rng.uniform(0.8, 1.2, (m, 1, 1)).astype(np.float32)
    x += np.float32(0.05) * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x, 0, 1, out=x)[..., None], labels[pick]


def memory_child(folder: Path, budget_mib: float, file_mib: float, batch: int) -> int:
    """Part 1, in its own process: write ``file_mib`` of data to ``folder``, stream an epoch."""
    import jax
    import numpy as np
    import optax

    from funcnn import data, fit, models

    jax.devices()  # the backend started: part of what any training process holds
    after_imports = status("VmRSS")
    with np.load(folder / DIGITS) as digits:  # data.digits(), saved by the parent
        images, labels = digits["x"], digits["y"]
    padded = np.pad(images[..., 0], ((0, 0), (1, 1), (1, 1)))
    n = -(-int(file_mib * MIB) // ROW_BYTES)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    specs = ((8, 8, 1), np.float32), ((), np.int32)
    with data.NpyWriter(folder, *specs, rows_per_shard=SHARD_ROWS) as writer:
        for i in range(0, n, CHUNK_ROWS):
            writer.append(*digit_like(padded, labels, rng, min(CHUNK_ROWS, n - i)))
    writing = time.perf_counter() - start
    after_writing, peak_writing = status("VmRSS"), status("VmHWM")
    paths = writer.paths
    size = {side: sum(p.stat().st_size for p in paths[side]) for side in paths}
    total = (size["x"] + size["y"]) / MIB
    print(
        f"bounded memory: {n:,} digit-like 8×8 float32 images and int32 labels, written in "
        f"chunks of {CHUNK_ROWS:,} rows to {len(paths['x'])} + {len(paths['y'])} .npy shards: "
        f"{total:,.0f} MiB (x {size['x'] / MIB:,.0f}, y {size['y'] / MIB:,.0f}) in "
        f"{writing:.1f} s, {total / writing:.0f} MiB/s"
    )
    print(
        f"  training in memory would hold at least the arrays: {n * ROW_BYTES / MIB:,.0f} MiB, "
        f"{n * ROW_BYTES / MIB / budget_mib:.2f}× the budget of {budget_mib:,.0f} MiB"
    )

    def flatten(x, y):
        return x.reshape(len(x), -1), y

    ds = data.NpyDataset(paths["x"], paths["y"], transform=flatten)
    model = models.mlp([64, 10])
    _, params = model.init(jax.random.key(0), (-1, 64))
    before_fit, peak_before_fit = status("VmRSS"), status("VmHWM")
    print(
        f"  resident memory: {after_imports:.0f} MiB after the imports, {after_writing:.0f} MiB "
        f"after writing (peak {peak_writing:.0f}), {before_fit:.0f} MiB before fit (peak "
        f"{peak_before_fit:.0f})"
    )
    steps = -(-n // batch)
    start = time.perf_counter()
    result = fit(
        model, params, ds, epochs=1, batch_size=batch, optimizer=optax.adam(3e-3), progress=False
    )
    jax.block_until_ready(result.params)
    seconds = time.perf_counter() - start
    after_fit, peak = status("VmRSS"), status("VmHWM")
    history = result.history
    print(
        f"  fit: mlp([64, 10]) on the flattened images, one epoch streamed from disk, batch "
        f"{batch} ({steps:,} steps), Adam 3e-3: {seconds:.1f} s (compilation included), "
        f"{n / seconds:,.0f} examples/s; loss {history['loss'][-1]:.4f}, accuracy "
        f"{history['accuracy'][-1]:.4f}; resident memory after it {after_fit:.0f} MiB"
    )
    ok = peak < budget_mib
    print(
        f"memory result: peak RSS {peak:.0f} MiB (VmHWM) against a budget of "
        f"{budget_mib:,.0f} MiB and a file of {total:,.0f} MiB: "
        f"{'ok, under the budget' if ok else 'OVER THE BUDGET'}"
    )
    return 0 if ok else 1


def bounded_memory(args, file_mib: float) -> int:
    """Part 1 in a fresh process, its data in a temporary folder removed afterwards; the
    parent loads the digits (scikit-learn's import would weigh on the child's memory)."""
    import numpy as np

    from funcnn import data

    folder = Path(tempfile.mkdtemp(prefix="funcnn-streaming-", dir=args.tmp_dir))
    try:
        np.savez(folder / DIGITS, **dict(zip("xy", data.digits())))
        command = [sys.executable, __file__, "--device", args.device, "--batch", str(args.batch)]
        command += ["--budget-mib", str(args.budget_mib), "--file-mib", str(file_mib)]
        sys.stdout.flush()
        return subprocess.run(command + ["--memory-child", str(folder)]).returncode
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def same(a, b) -> bool:
    """Two ``(history, params)`` are equal bit for bit."""
    import jax
    import numpy as np

    (ha, pa), (hb, pb) = a, b
    leaves_a, leaves_b = jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)
    return (
        ha.keys() == hb.keys()
        and all(np.array_equal(ha[k], hb[k]) for k in ha)
        and len(leaves_a) == len(leaves_b)
        and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))
    )


def speed(args, epochs: int, rounds: int) -> int:
    """Part 2: LeNet's epoch from the arrays in memory against the same data from shards."""
    import jax
    from fit_overhead import make_setup

    import funcnn as fn

    s = make_setup("lenet", epochs, args.quick)
    print(
        f"speed: LeNet-5 (16, 32 filters of 3×3) on the 8×8 digits, {len(s.x):,} training "
        f"images, batch {s.batch}, Adam 3e-3, scan=False, {epochs} epochs a call, "
        f"{rounds} interleaved rounds, medians"
    )
    folder = Path(tempfile.mkdtemp(prefix="funcnn-streaming-", dir=args.tmp_dir))
    try:
        ds = fn.data.write_npy_shards(s.x, s.y, folder, rows_per_shard=512)
        sources = {"in memory": (s.x, s.y), "streaming": (ds,)}

        def train(name):
            r = fn.fit(
                s.model,
                s.params,
                *sources[name],
                scan=False,
                epochs=epochs,
                batch_size=s.batch,
                optimizer=s.optimizer,
                progress=False,
            )
            jax.block_until_ready(r.params)
            return r.history, r.params

        first = {}
        for name in sources:
            t = time.perf_counter()
            first[name] = train(name)
            print(f"  first call, {name:9s}: {time.perf_counter() - t:6.2f} s (compile included)")
        identical = same(first["in memory"], first["streaming"])
        loss = first["in memory"][0]["loss"][-1]
        print(
            f"  identical params and history, in memory and streaming: "
            f"{'yes' if identical else 'NO'} (loss {loss:.6f} after {epochs} epochs"
            f"{', every param bit for bit' if identical else ''})"
        )
        times = {name: [] for name in sources}
        order = list(sources)
        for k in range(rounds):
            for name in order[k % 2 :] + order[: k % 2]:
                t = time.perf_counter()
                train(name)
                times[name].append((time.perf_counter() - t) / epochs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    memory, streaming = (statistics.median(times[name]) * 1e3 for name in sources)
    ratio = streaming / memory
    spread = {name: f"{min(t) * 1e3:.1f}–{max(t) * 1e3:.1f}" for name, t in times.items()}
    rows = f"in memory {spread['in memory']}, streaming {spread['streaming']}"
    print(f"  ms per epoch, every round: {rows}")
    print(
        f"speed result: in memory {memory:.1f} ms, streaming {streaming:.1f} ms per epoch: "
        f"streaming ÷ in memory {ratio:.3f} (target ≤ {TARGET_RATIO}): "
        f"{'ok' if ratio <= TARGET_RATIO else 'over the target'}"
    )
    return 0 if identical else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-mib", type=float, default=512, help="resident memory budget")
    ap.add_argument("--scale", type=float, default=4.2, help="file size ÷ budget (default 4.2)")
    ap.add_argument("--file-mib", type=float, default=None, help="file size (overrides --scale)")
    ap.add_argument("--batch", type=int, default=2048, help="batch of the memory run")
    ap.add_argument("--rounds", type=int, default=None, help="default 7 (--quick: 2)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs a call (default 5)")
    ap.add_argument("--parts", default="memory,speed", help="memory, speed or both")
    ap.add_argument("--quick", action="store_true", help="a 40 MiB file, few rounds: for tests")
    ap.add_argument("--tmp-dir", default=None, help="where the data is written (default: TMPDIR)")
    ap.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if not parts or set(parts) - {"memory", "speed"}:
        ap.error(f"--parts: expected memory, speed or both, got {args.parts!r}")
    file_mib = args.file_mib or (40 if args.quick else args.scale * args.budget_mib)

    from run import setup_device

    setup_device(args.device, "float32")
    if args.memory_child is not None:
        return memory_child(Path(args.memory_child), args.budget_mib, file_mib, args.batch)
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
    failed = 0
    if "memory" in parts:
        failed |= bounded_memory(args, file_mib)
    if "speed" in parts:
        epochs = args.epochs or (2 if args.quick else 5)
        failed |= speed(args, epochs, args.rounds or (2 if args.quick else 7))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
