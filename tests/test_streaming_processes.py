"""``fit`` streaming its data over several processes, against one-process runs.

The sharded runs happen in subprocesses (``tests/streaming_worker.py``): two processes joined
by ``jax.distributed`` with two CPU devices each (one launch for the dataset on disk, the
Grain pipeline sharded by process and the bad batch size), and one process with four CPU
devices (a dataset scanned over the mesh). The references are the same training runs here,
in this process, on one device: the arrays in memory, and the list of the global batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("grain")

import grain  # noqa: E402

from funcnn import fit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "streaming_worker.py"
sys.path.insert(0, str(WORKER.parent))
import streaming_worker as worker  # noqa: E402
from process_support import run_group  # noqa: E402

STEPS = -(-worker.N // worker.BATCH)  # batches an epoch: 5 of 8 and a last one of 4


def _run(command: list[str], timeout: float, cache: Path) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group (killed whole on a timeout), the compiled
    programs kept in JAX's compilation cache in ``cache``."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("XLA_FLAGS", None)
    env |= {
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    return run_group(command, timeout, env)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The problem's data as ``.npy`` shards on disk."""
    folder = tmp_path_factory.mktemp("shards")
    worker.write_shards(folder)
    return folder


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, shards, cache):
    """2 processes × 2 devices: the dataset, the Grain pipeline, then the bad batch size
    (so the launch fails). The launcher's timeout and ours guard against a hang."""
    out = tmp_path_factory.mktemp("multi")
    command = [sys.executable, "-m", "funcnn.distributed.launch", "-n", "2", "--cpu-devices"]
    command += ["2", "--timeout", "60", str(WORKER), "multi", str(out), str(shards)]
    return _run(command, 70, cache), out


def _results(run: tuple, name: str) -> tuple[dict, dict]:
    """``(arrays, info)`` a worker wrote as ``name``; its output where it wrote none."""
    done, out = run
    assert (out / f"{name}.json").exists(), done.stdout[-4000:]
    return dict(np.load(out / f"{name}.npz")), json.loads((out / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def one_device():
    """The in-memory run (as the dataset is trained) and the run on the list of the Grain
    pipeline's global batches, each process's rows in process order (as
    ``shard_local_batch`` assembles them over a mesh whose devices are ordered by process)."""
    model, params, x, y = worker.problem()
    arrays = fit(model, params, x, y, batch_size=worker.BATCH, **worker.options())
    parts = [
        list(worker.grain_pipeline(x, y, grain.sharding.ShardOptions(p, worker.PROCESSES)))
        for p in range(worker.PROCESSES)
    ]
    batches = [tuple(np.concatenate(side) for side in zip(*step)) for step in zip(*parts)]
    assert [len(bx) for bx, _ in batches] == [worker.BATCH] * (STEPS - 1) + [4]
    listed = fit(model, params, batches, **worker.options())
    return {"dataset": arrays, "grain": listed}


def _compare(arrays: dict, history: dict, expected: dict, names: tuple) -> None:
    for name in names:
        tree = {name: expected[name].params}
        for path, want in jax.tree_util.tree_flatten_with_path(tree)[0]:
            key = jax.tree_util.keystr(path)
            np.testing.assert_allclose(
                arrays[key], np.asarray(want), atol=1e-5, rtol=0, err_msg=key
            )
        for k, want in expected[name].history.items():
            np.testing.assert_allclose(history[name][k], want, rtol=1e-5, err_msg=f"{name} {k}")


def test_each_process_reads_only_its_rows_of_each_batch(two_processes):
    reads = [_results(two_processes, f"multi_{p}")[1]["reads"] for p in (0, 1)]
    # several batches a read: each process reads half of every batch of 8 and half of the
    # short last one of 4, so half of the N examples an epoch
    rows = [[i for r in mine for i in r] for mine in reads]
    half = worker.N // 2
    for mine in rows:
        assert len(mine) == half * worker.EPOCHS
    for e in range(worker.EPOCHS):
        a, b = (mine[e * half : (e + 1) * half] for mine in rows)
        assert not set(a) & set(b)  # the two processes' rows are disjoint
        assert sorted(a + b) == list(range(worker.N)), f"epoch {e}"  # every example once


def test_a_dataset_over_two_processes_trains_as_the_arrays_in_memory(two_processes, one_device):
    results = [_results(two_processes, f"multi_{p}") for p in (0, 1)]
    for arrays, info in results:
        assert info["devices"] == 4 and info["processes"] == 2
        _compare(arrays, info["history"], one_device, ("dataset",))
    (a, _), (b, _) = results
    for key in a:  # the replicated params are the same in both processes
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_grain_pipeline_sharded_by_process_trains_as_its_global_batches(
    two_processes, one_device
):
    for p in (0, 1):
        arrays, info = _results(two_processes, f"multi_{p}")
        assert info["grain_rows"] == [worker.BATCH // 2] * (STEPS - 1) + [2]  # its local half
        _compare(arrays, info["history"], one_device, ("grain",))


def test_a_batch_size_that_does_not_split_over_the_devices_is_refused_in_each_process(
    two_processes,
):
    done, out = two_processes
    assert done.returncode == 1, done.stdout[-4000:]  # the launcher's: the first failure
    assert "launch: a process exited with 1" in done.stdout
    for p in (0, 1):
        message = (out / f"error_{p}.txt").read_text()
        assert message.startswith(
            f"fit: batch_size = {worker.BAD_BATCH} is not divisible by the 4 devices"
        ), message


def test_a_scanned_dataset_over_four_devices_trains_as_the_arrays(
    tmp_path, shards, cache, one_device
):
    done = _run([sys.executable, str(WORKER), "scan", str(tmp_path), str(shards)], 60, cache)
    assert done.returncode == 0, done.stdout[-4000:]
    arrays, info = _results((done, tmp_path), "scan_0")
    assert info["devices"] == 4 and info["specs"] == ["P()"]
    _compare(arrays, info["history"], one_device, ("dataset",))
