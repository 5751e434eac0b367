"""Data-parallel and multi-process training against a plain single-device run.

The sharded runs happen in subprocesses (``tests/distributed_worker.py``): one process with
four CPU devices, and two processes joined by ``jax.distributed`` with two devices each. The
reference is the same training run here, in this process, on one device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import distributed
from funcnn.distributed import launch

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
sys.path.insert(0, str(WORKER.parent))
import distributed_worker as worker  # noqa: E402
from process_support import run_group  # noqa: E402


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; kill the whole group on timeout or error."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("XLA_FLAGS", None)
    done = run_group(command, timeout, env)
    assert done.returncode == 0, done.stdout[-4000:]
    return done


@pytest.fixture(scope="module")
def expected():
    """The single-device run: ``train_step`` params and ``fit`` params."""
    model, params, x, y = worker.problem()
    p_step, p_fit = worker.reference(model, params, x, y)
    return {"step": p_step, "fit": p_fit, "model": p_fit}


def _compare(npz_path: Path, expected: dict, names=("step", "fit")) -> None:
    got = np.load(npz_path)
    trees = {k: expected[k] for k in names}
    for path, want in jax.tree_util.tree_flatten_with_path(trees)[0]:
        key = jax.tree_util.keystr(path)
        np.testing.assert_allclose(got[key], np.asarray(want), atol=1e-5, rtol=0, err_msg=key)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    _run([sys.executable, str(WORKER), "devices", str(out)], timeout=120)
    return out, json.loads((out / "info_0.json").read_text())


def test_four_devices_match_one_device(four_devices, expected):
    out, info = four_devices
    assert info["devices"] == 4 and info["processes"] == 1
    _compare(out / "params_0.npz", expected, ("step", "fit", "model"))


def test_batch_is_sharded_and_params_replicated(four_devices):
    _, info = four_devices
    assert info["batch_spec"] == "P('data',)"
    assert info["shard_rows"] == [worker.BATCH // 4]  # each device holds B/D rows
    assert info["fit_batch_specs"] and all("P('data',)" in s for s in info["fit_batch_specs"])
    assert info["param_specs"] == ["P()"]


def test_large_dense_weights_stay_split_over_model_axis(four_devices):
    _, info = four_devices
    assert info["model_spec_before"] == info["model_spec_after"] == "P(None, 'model')"


def test_indivisible_batch_size_is_a_clear_error(four_devices):
    _, info = four_devices
    errors = info["errors"]
    assert "batch_size = 6 is not divisible by the 4 devices" in errors["shard_batch"]
    assert errors["fit_batch_size"].startswith("fit: batch_size = 6 is not divisible by the 4")
    assert "42 mod batch_size 8" in errors["fit_last_batch"]
    assert "= 2 is not divisible by the 4 devices" in errors["fit_last_batch"]


def test_two_processes_match_one_process(tmp_path, expected):
    command = [sys.executable, "-m", "funcnn.distributed.launch", "--processes", "2"]
    command += ["--cpu-devices", "2", "--timeout", "50", str(WORKER), "multi", str(tmp_path)]
    _run(command, timeout=58)
    for pid in (0, 1):
        info = json.loads((tmp_path / f"info_{pid}.json").read_text())
        assert info["devices"] == 4 and info["processes"] == 2
        assert info["batch_spec"] == "P('data',)" and info["shard_rows"] == [2]
        _compare(tmp_path / f"params_{pid}.npz", expected)
    a, b = np.load(tmp_path / "params_0.npz"), np.load(tmp_path / "params_1.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_launcher_stops_the_others_when_one_fails(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['FUNCNN_PROCESS_ID'] == '1':\n"
        "    sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    command = [sys.executable, "-m", "funcnn.distributed.launch", "-n", "2", str(script)]
    p = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert p.returncode == 3
    assert "exited with 3" in p.stdout


def test_launcher_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        launch.main(["-n", "2", "--local", "3", "x.py"])
    with pytest.raises(SystemExit):
        launch.main(["-n", "4", "--local", "2", "x.py"])  # spans machines: needs --coordinator


def test_free_port_can_be_bound():
    port = launch.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# In this process (one device): the placement rules and their errors.


def test_make_mesh_checks_the_device_count():
    n = jax.device_count()
    assert distributed.make_mesh().shape == {"data": n, "model": 1}
    with pytest.raises(ValueError, match="data × model"):
        distributed.make_mesh(n + 1)
    with pytest.raises(ValueError, match="model must be a positive int"):
        distributed.make_mesh(model=0)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        distributed.replicated("data")


def test_shard_params_splits_only_large_dense_weights():
    mesh = distributed.make_mesh()
    params = {"big": {"w": jnp.ones((4, 8)), "b": jnp.ones(8)}, "small": {"w": jnp.ones((2, 2))}}
    placed = distributed.shard_params(params, mesh, min_size=32)
    specs = jax.tree.map(lambda a: a.sharding.spec, placed)
    assert specs["big"]["w"] == jax.sharding.PartitionSpec(None, "model")
    assert specs["big"]["b"] == specs["small"]["w"] == jax.sharding.PartitionSpec()
    assert distributed.place(placed, mesh)["big"]["w"] is placed["big"]["w"]


def test_local_rows_and_local_batch_in_one_process():
    mesh = distributed.make_mesh()
    n = jax.device_count()
    assert distributed.local_rows(4 * n, mesh) == slice(0, 4 * n)
    x = np.arange(4.0 * n).reshape(2 * n, 2)
    np.testing.assert_array_equal(np.asarray(distributed.shard_local_batch(x, mesh)), x)
    with pytest.raises(ValueError, match="same leading size"):
        distributed.shard_batch((np.zeros((2, 1)), np.zeros(3)), mesh)


def test_initialize_alone_runs_as_one_process():
    """Without the launcher's variables or a cluster, ``initialize()`` leaves the script to
    run as one process (so the same script runs under ``python`` and under the launcher)."""
    code = (
        "from funcnn import distributed; distributed.initialize(); import jax; "
        "print(jax.process_count(), jax.process_index())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCNN_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "0"]
