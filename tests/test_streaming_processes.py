"""``fit`` streaming its data over several processes, against one-process runs.

The sharded runs happen in subprocesses (``tests/streaming_worker.py``): two processes joined
by ``jax.distributed`` with two CPU devices each (a launch in which process 1 is killed
mid-run, then one launch for the dataset on disk, the Grain pipeline sharded by process, the
Grain loaders with checkpoints, the killed run resumed, a relative checkpoint folder, and the
sources each process must refuse), and one process with four CPU devices (a dataset scanned
over the mesh). The references are the same training runs here, in this process, on one
device: the arrays in memory, and the lists of the global batches.
"""

from __future__ import annotations

import base64
import json
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
from process_support import run_cached  # noqa: E402

STEPS = -(-worker.N // worker.BATCH)  # batches an epoch: 5 of 8 and a last one of 4


def _run(command: list[str], timeout: float, cache: Path) -> subprocess.CompletedProcess:
    return run_cached(command, timeout, cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The problem's data as ``.npy`` shards on disk."""
    folder = tmp_path_factory.mktemp("shards")
    worker.write_shards(folder)
    return folder


def _launch(mode: str, out: Path, shards: Path, cache: Path) -> subprocess.CompletedProcess:
    """2 processes × 2 devices running the worker's ``mode``; the launcher's timeout and
    ours guard against a hang."""
    command = [sys.executable, "-m", "funcnn.distributed.launch", "-n", "2", "--cpu-devices"]
    command += ["2", "--timeout", "90", str(WORKER), mode, str(out), str(shards)]
    return _run(command, 100, cache)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, shards, cache):
    """The Grain loaders' run with checkpoints, process 1 killed in epoch 1."""
    out = tmp_path_factory.mktemp("multi")
    return _launch("multi-kill", out, shards, cache), out


@pytest.fixture(scope="module")
def two_processes(killed, shards, cache):
    """The dataset, the Grain pipeline, the loaders (the killed run resumed, a relative
    checkpoint folder), then the sources to refuse, the last one raised (the launch fails)."""
    out = killed[1]
    return _launch("multi", out, shards, cache), out


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
    loaders = [_global_batches(x, y, e) for e in range(worker.EPOCHS)]
    loaded = fit(model, params, lambda e: loaders[e], **worker.options())
    return {"dataset": arrays, "grain": listed, "loader": loaded}


def _global_batches(x, y, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Epoch ``epoch``'s global batches of the worker's Grain loaders, process by process."""
    parts = [
        list(worker.grain_loader(x, y, grain.sharding.ShardOptions(p, worker.PROCESSES), epoch))
        for p in range(worker.PROCESSES)
    ]
    return [tuple(np.concatenate(side) for side in zip(*step)) for step in zip(*parts)]


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


def _refusals(run: tuple, case: str) -> list[dict]:
    """Each process's record of the error it raised in ``case``."""
    _, out = run
    return [json.loads((out / f"{case}_{p}.json").read_text()) for p in (0, 1)]


def test_a_batch_size_that_does_not_split_over_the_devices_is_refused_in_each_process(
    two_processes,
):
    for record in _refusals(two_processes, "bad_batch"):
        message = record["message"]
        assert message.startswith(
            f"fit: batch_size = {worker.BAD_BATCH} is not divisible by the 4 devices"
        ), message


@pytest.mark.parametrize("case, rows", [("fewer_batches", [2, 0]), ("last_batch_size", [2, 4])])
def test_sources_of_unequal_lengths_fail_in_each_process_rather_than_wait(
    two_processes, case, rows
):
    done, _ = two_processes
    # the last case's error ends the launch: its status, not the launcher's timeout (124)
    assert done.returncode == 1, done.stdout[-4000:]
    assert "launch: a process exited with 1" in done.stdout
    for record in _refusals(two_processes, case):
        message = record["message"]
        assert message.startswith(
            "fit: the processes' sources disagree at batch 5 of epoch 0: their local batches "
            f"have {rows} rows"
        ), message
        assert record["seconds"] < 20  # a whole run of 6 steps: nobody waited on the other


def _same_as_unbroken(run: tuple, name: str) -> dict:
    """Both processes' params and history of run ``name`` equal the loaders' unbroken run's,
    bit for bit; process 0's info."""
    for p in (0, 1):
        arrays, info = _results(run, f"multi_{p}")
        unbroken = sorted(k for k in arrays if k.startswith("['loader']"))
        assert unbroken
        for key in unbroken:
            mine = key.replace("['loader']", f"['{name}']", 1)
            np.testing.assert_array_equal(arrays[mine], arrays[key], err_msg=mine)
        assert info["history"][name] == info["history"]["loader"]
    return _results(run, "multi_0")[1]


def test_a_killed_run_resumes_each_process_at_its_own_loader_position(
    killed, two_processes, one_device
):
    done, out = killed  # process 1 SIGKILLed itself where it meant to: the launch failed
    assert done.returncode != 0 and "launch: a process exited with" in done.stdout
    dying = json.loads((out / "dying.json").read_text())
    assert dying == {"process": 1, "batch": worker.KILL_BATCH}, done.stdout[-4000:]
    info = _same_as_unbroken(two_processes, "resumed")
    for p in (0, 1):
        arrays, mine = _results(two_processes, f"multi_{p}")
        _compare(arrays, mine["history"], one_device, ("loader",))
        assert mine["resumed_asked"] == [1]  # resumed in epoch 1, not started afresh
    assert info["killed_steps"] == ["step_0000000004", "step_0000000008"]
    state = info["killed_data_state"]  # at step 8: batch 1 of epoch 1 done
    assert state["done"] == STEPS
    positions = state["positions"]
    assert len(positions) == 2 and positions[0] != positions[1]
    assert state["position"] == positions[0]  # process 0's own, which it wrote
    for p, position in enumerate(positions):
        loader = json.loads(base64.b64decode(position["bytes"]))
        assert f"shard_index={p}, shard_count=2" in loader["sampler"], loader
        assert "seed=11" in loader["sampler"], loader  # epoch 1's order
    assert info["full_data_state"] == state  # where the unbroken run was at step 8


def test_a_relative_checkpoint_dir_takes_sharded_checkpoints_and_resumes(two_processes):
    info = _same_as_unbroken(two_processes, "relative")
    assert info["relative_first_steps"] == ["step_0000000004", "step_0000000006"]
    assert info["relative_asked"] == [1]
    assert info["relative_steps"] == [f"step_{g:010d}" for g in (6, 8, 12)]
    assert not (ROOT / "relative").exists()  # under the worker's folder, not the launch's


def test_a_scanned_dataset_over_four_devices_trains_as_the_arrays(
    tmp_path, shards, cache, one_device
):
    done = _run([sys.executable, str(WORKER), "scan", str(tmp_path), str(shards)], 60, cache)
    assert done.returncode == 0, done.stdout[-4000:]
    arrays, info = _results((done, tmp_path), "scan_0")
    assert info["devices"] == 4 and info["specs"] == ["P()"]
    _compare(arrays, info["history"], one_device, ("dataset",))
