"""Sharded checkpoints (Orbax) for fit: killed runs resumed, against unbroken references.

The sharded runs happen in subprocesses (``tests/sharded_worker.py``): one process with four
CPU devices and params split over a 2 × 2 mesh, and two processes joined by
``jax.distributed`` writing to one shared folder. Each kills itself with SIGKILL mid-run and
is resumed; the references are the unbroken runs, and the same training run here, in this
process, on one device. The store itself, and the policy around it, are checked here too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("orbax.checkpoint")

from funcnn import checkpoint, distributed  # noqa: E402
from funcnn.checkpoint import sharded  # noqa: E402
from funcnn.train import checkpoint_store  # noqa: E402
from funcnn.train.state import Checkpoints, RunState  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "sharded_worker.py"
sys.path.insert(0, str(WORKER.parent))
import sharded_worker as worker  # noqa: E402
from process_support import run_cached  # noqa: E402


def _run(command: list[str], timeout: float, cache: Path) -> subprocess.CompletedProcess:
    return run_cached(command, timeout, cache)


def _launch(mode: str, out: Path, cache: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "funcnn.distributed.launch", "-n", "2", "--cpu-devices"]
    command += ["2", "--timeout", "100", str(WORKER), mode, str(out)]
    return _run(command, 110, cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, cache):
    """4 devices: the killed run, then ``devices`` (unbroken, resumed, other mesh)."""
    out = tmp_path_factory.mktemp("one")
    killed = _run([sys.executable, str(WORKER), "kill", str(out)], 100, cache)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-4000:]
    done = _run([sys.executable, str(WORKER), "devices", str(out)], 100, cache)
    assert done.returncode == 0, done.stdout[-4000:]
    info = json.loads((out / "devices_0.json").read_text())
    return info, dict(np.load(out / "devices_0.npz"))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, cache):
    """2 processes × 2 devices: process 1 killed, then ``multi`` (unbroken and resumed)."""
    out = tmp_path_factory.mktemp("two")
    killed = _launch("multi-kill", out, cache)
    assert killed.returncode != 0 and "exited with -9" in killed.stdout, killed.stdout[-4000:]
    done = _launch("multi", out, cache)
    assert done.returncode == 0, done.stdout[-4000:]
    infos = [json.loads((out / f"multi_{p}.json").read_text()) for p in (0, 1)]
    return infos, [dict(np.load(out / f"multi_{p}.npz")) for p in (0, 1)]


@pytest.fixture(scope="module")
def one_device():
    """The same training run here, in this process, on one device, without checkpoints."""
    return worker.result_arrays("full", worker.train(None, distributed.make_mesh()))


def _same(a: dict, b: dict, prefix_a: str, prefix_b: str, atol: float | None = None) -> None:
    names = sorted(k[len(prefix_a) :] for k in a if k.startswith(prefix_a))
    assert names and names == sorted(k[len(prefix_b) :] for k in b if k.startswith(prefix_b))
    for name in names:
        u, v = a[prefix_a + name], b[prefix_b + name]
        if atol is None:
            np.testing.assert_array_equal(u, v, err_msg=name)
        else:
            np.testing.assert_allclose(u, v, atol=atol, rtol=0, err_msg=name)


# ------------------------------------------------------------ one process, four devices


def test_a_killed_sharded_run_resumes_bit_identical(one_process, one_device):
    info, arrays = one_process
    _same(arrays, arrays, "full", "resumed")  # bit for bit
    _same(arrays, one_device, "full", "full", atol=1e-5)
    assert info["spec"] == "P(None, 'model')"  # resumed onto its split placement


def test_keep_last_k_and_one_best(one_process):
    info, _ = one_process
    assert info["killed_steps"] == ["step_0000000004", "step_0000000006"]
    assert info["steps_after_resume"] == ["step_0000000010", "step_0000000012"]
    assert len(info["best"]) == 1


def test_an_unfinalized_step_is_skipped_and_removed(one_process):
    info, _ = one_process
    assert worker.UNFINALIZED in info["steps_before_resume"]  # newest by its number
    assert worker.UNFINALIZED not in info["steps_after_resume"]  # resumed from step 6


def test_another_mesh_needs_reshard(one_process):
    info, arrays = one_process
    message = info["refused"]
    assert "mesh {'data': 2, 'model': 2}" in message
    assert "mesh {'data': 4, 'model': 1}" in message
    assert "pass reshard=True" in message
    _same(arrays, arrays, "full", "reshard", atol=1e-6)


def test_a_data_parallel_run_keeps_file_checkpoints_and_resumes(one_process):
    info, _ = one_process
    assert info["files"] == ["best.npz", "step_0000000004.npz", "step_0000000008.npz"]


# ------------------------------------------------------------------- two processes


def test_two_killed_processes_resume_like_unbroken_runs(two_processes, one_process, one_device):
    infos, arrays = two_processes
    assert [i["processes"] for i in infos] == [2, 2]
    assert infos[0]["killed_steps"] == ["step_0000000004", "step_0000000006"]
    assert infos[0]["steps_after_resume"] == ["step_0000000010", "step_0000000012"]
    _same(arrays[0], arrays[1], "resumed", "resumed")  # both processes hold the same
    _same(arrays[0], arrays[0], "full", "resumed", atol=1e-5)
    _same(arrays[0], one_process[1], "resumed", "full", atol=1e-5)
    _same(arrays[0], one_device, "resumed", "full", atol=1e-5)


# ------------------------------------------------------------- the store, in this process


def _tree(mesh, scale: int = 1):
    w = distributed.replicate(scale * jnp.arange(6.0).reshape(2, 3), mesh)
    return {"w": w, "key": jax.random.key(7), "n": scale * np.arange(3)}


def test_the_store_saves_restores_and_keeps_the_newest(tmp_path):
    mesh = distributed.make_mesh()
    store = sharded.ShardedStore(tmp_path, keep=2)
    for g in (1, 2, 3):
        store.save(g, _tree(mesh, g), meta={"g": g})
    store.save("best", _tree(mesh))
    store.save("best", _tree(mesh, 5), meta={"best": True})
    assert store.steps() == [2, 3] and store.load_meta(3) == {"g": 3}
    like = {**_tree(mesh), "key": jax.random.key(0)}
    back = store.restore(3, like)
    np.testing.assert_array_equal(back["w"], 3 * np.arange(6.0).reshape(2, 3))
    assert back["w"].sharding == like["w"].sharding
    assert isinstance(back["n"], np.ndarray) and list(back["n"]) == [0, 3, 6]
    assert (
        jax.random.key_data(back["key"]).tolist()
        == jax.random.key_data(_tree(mesh)["key"]).tolist()
    )
    assert store.load_meta("best") == {"best": True}
    assert float(store.restore("best", like)["w"][1, 2]) == 25.0
    assert len(list((tmp_path / "best").iterdir())) == 1
    store.close()


def test_the_store_refuses_another_layout_unless_resharding(tmp_path):
    mesh = distributed.make_mesh()
    store = sharded.ShardedStore(tmp_path)
    store.save(0, _tree(mesh))
    unplaced = {**_tree(mesh), "w": jnp.zeros((2, 3))}
    with pytest.raises(sharded.LayoutError, match="pass reshard=True"):
        store.restore(0, unplaced)
    assert float(store.restore(0, unplaced, reshard=True)["w"][1, 2]) == 5.0
    with pytest.raises(ValueError, match=r"\['w'\] is float32\(2, 3\) there, but like expects"):
        store.restore(0, {**_tree(mesh), "w": jnp.zeros((3, 2))})
    store.close()


def test_unfinalized_steps_are_not_steps_and_damaged_ones_are_checkpoint_errors(tmp_path):
    mesh = distributed.make_mesh()
    store = sharded.ShardedStore(tmp_path)
    store.save(1, _tree(mesh))
    store.save(2, _tree(mesh))
    store.close()
    partial = tmp_path / "step_0000000007.orbax-checkpoint-tmp-99"
    (partial / "arrays").mkdir(parents=True)
    for f in (tmp_path / "step_0000000002" / "arrays").rglob("*"):  # a step's arrays, torn
        if f.is_file():
            f.write_bytes(b"torn")
    store = sharded.ShardedStore(tmp_path)
    assert store.steps() == [1, 2]
    assert store.load_meta(2) == {}
    with pytest.raises(checkpoint.CheckpointError, match="step 2: unreadable"):
        store.restore(2, _tree(mesh))
    (tmp_path / "step_0000000001" / "meta" / "metadata").write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="step 1"):
        store.load_meta(1)
    store.save(3, _tree(mesh))
    assert not partial.exists()  # removed before the first save
    store.close()


def test_a_missing_orbax_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    with pytest.raises(ImportError, match=r'pip install "funcnn\[scale\]"'):
        sharded.ShardedStore("anywhere")


# ------------------------------------------------------------ the policy, in this process


def _state(scale: float = 1.0) -> RunState:
    params = {"w": jnp.full((2, 3), scale), "b": jnp.zeros(3)}
    state = RunState(params, optax.sgd(0.1).init(params), jax.random.key(3), {"loss": []}, {})
    state.epoch, state.data_state = 1, {"position": int(scale)}
    return state


CONFIG = {"n": 8, "batch_size": 4, "shuffle": True, "data": {}, "optimizer": None}


def test_a_damaged_sharded_step_is_skipped_for_an_older_one(tmp_path):
    layout = sharded.layout(_state().tree())
    runs = Checkpoints(tmp_path, 3, None, CONFIG, layout=layout)
    runs.save(4, _state(4.0))
    runs.save(8, _state(8.0))
    runs.close()
    for f in (tmp_path / "step_0000000008" / "arrays").rglob("*"):
        if f.is_file():
            f.write_bytes(b"torn")
    runs = Checkpoints(tmp_path, 3, None, CONFIG, layout=layout)
    state = _state(0.0)
    with pytest.warns(UserWarning, match="skipping an unreadable checkpoint"):
        assert runs.restore(state)
    runs.close()
    assert float(state.params["w"][0, 0]) == 4.0 and state.data_state == {"position": 4}
    assert checkpoint_store.saved_kinds(tmp_path) == {"sharded"}


def test_data_state_is_carried_and_absent_in_old_checkpoints(tmp_path):
    runs = Checkpoints(tmp_path, 3, None, CONFIG)
    runs.save(4, _state(4.0))
    state = _state(0.0)
    assert runs.restore(state) and state.data_state == {"position": 4}
    meta = checkpoint.load_meta(tmp_path / "step_0000000004.npz")
    del meta["data_state"]  # a checkpoint written before the field
    checkpoint.save(tmp_path / "step_0000000004.npz", _state(4.0).tree(), meta=meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runs.restore(state) and state.data_state is None
    runs.close()
