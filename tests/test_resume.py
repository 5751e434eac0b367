"""Resumable fit: a run killed at any point and resumed ends bit-identical to an unbroken one."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from funcnn import checkpoint, data, models
from funcnn.train import fit
from tests.checkpoint_forgery import npy_declaring, patch_method, rebuild, take_apart
from tests.reliability_support import CACHE_ENV, assert_trees_identical, use_compile_cache

use_compile_cache()

ROOT = Path(__file__).resolve().parents[1]

# The training run of the kill test. The subprocess and this test import the same file, so
# both sides run the same model, data and settings.
SCRIPT = """
import sys

import jax
import optax

from funcnn import data, models
from funcnn.train import fit

EPOCHS = 60
MODEL = models.mlp([8, 2], "tanh", dropout=0.1)
PARAMS = MODEL.init(jax.random.key(0), (-1, 2))[1]
OPTIMIZER = optax.adam(0.01)
# what a checkpoint of this run holds
TEMPLATE = {
    "params": PARAMS, "opt_state": OPTIMIZER.init(PARAMS), "key": jax.random.key(3),
    "best_params": PARAMS,
}


def run(folder, resume, callback=None, epochs=EPOCHS):
    x, y = data.moons(96, key=0)
    (x, y), val = data.train_val_split(x, y, 0.25, key=1)
    return fit(
        MODEL, PARAMS, x, y, optimizer=OPTIMIZER, epochs=epochs, batch_size=7, key=3,
        validation_data=val, patience=10_000, checkpoint_dir=folder, checkpoint_every=4,
        resume=resume, callback=callback, progress=False,
    )


if __name__ == "__main__":
    epochs = int(sys.argv[3]) if sys.argv[3:] else EPOCHS
    hold = sys.argv[4:] == ["hold"]

    def report(epoch, logs):
        print(epoch, flush=True)
        if hold and epoch == 1:  # hold the folder until the test says go on
            print("holding", flush=True)
            sys.stdin.readline()

    run(sys.argv[1], sys.argv[2] == "1", report, epochs)
    print("done", flush=True)
"""


def _load_script(tmp_path: Path):
    path = tmp_path / "train_run.py"
    path.write_text(SCRIPT)
    spec = importlib.util.spec_from_file_location("train_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def _latest(folder: Path) -> Path:
    return max(folder.glob("step_*.npz"))


def _assert_same_result(a, b) -> None:
    assert_trees_identical(a.params, b.params)
    assert_trees_identical(a.opt_state, b.opt_state)
    assert a.history == b.history
    assert (a.best_epoch, a.epochs_run) == (b.best_epoch, b.epochs_run)


def test_killed_three_times_then_resumed_is_bit_identical(tmp_path):
    script, module = _load_script(tmp_path)
    folder = tmp_path / "run"
    env = {**os.environ, **CACHE_ENV, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    rng = random.Random(0)
    targets = sorted(rng.sample(range(3, module.EPOCHS - 25), 3))
    for i, target in enumerate(targets):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(folder), "1" if i else "0"],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            for line in proc.stdout:  # wait until the run is past epoch `target`
                if line.strip() == "done" or int(line) >= target:
                    break
            # then kill it at a random moment: mid-step, mid-save or between
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.05))
            except subprocess.TimeoutExpired:
                pass
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
        latest = _latest(folder)
        checkpoint.load(latest, like=module.TEMPLATE)
        meta = checkpoint.load_meta(latest)
        # 72 examples in batches of 7: 11 steps an epoch, the last one short
        assert meta["epoch"] * 11 + meta["step"] == int(latest.stem[5:])
        assert 0 < meta["epoch"] < module.EPOCHS
    resumed = module.run(folder, True)
    unbroken = module.run(tmp_path / "unbroken", False)
    _assert_same_result(resumed, unbroken)
    assert len(list(folder.glob("step_*.npz"))) == 3  # keep_checkpoints default
    assert not list(folder.glob(".*.tmp"))


SHORT = 4  # the epochs of a run the lock tests start: they hold it after epoch 1


def _start_holding(script: Path, folder: Path) -> subprocess.Popen:
    """A run of ``SHORT`` epochs on ``folder`` in a subprocess, stopped in its callback
    after epoch 1."""
    env = {**os.environ, **CACHE_ENV, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder), "0", str(SHORT), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    for line in proc.stdout:
        if line.strip() in ("holding", "done"):
            break
    assert line.strip() == "holding", "the run ended before it held the folder"
    return proc


def test_a_second_fit_on_a_folder_in_use_is_refused(tmp_path):
    script, module = _load_script(tmp_path)
    folder = tmp_path / "run"
    proc = _start_holding(script, folder)
    try:
        before = sorted(p.name for p in folder.iterdir())
        for resume in (True, False):  # a restart, and a fresh run started by mistake
            with pytest.raises(checkpoint.FolderLockedError) as err:
                module.run(folder, resume, epochs=SHORT)
            assert str(folder) in str(err.value) and f"process {proc.pid}" in str(err.value)
            assert err.value.pid == proc.pid
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing touched
        proc.stdin.write("go on\n")
        proc.stdin.flush()
        assert proc.stdout.read().split()[-1] == "done"  # the first run ends undisturbed
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
    meta = checkpoint.load_meta(_latest(folder))
    assert meta["epochs_run"] == SHORT  # its checkpoints alone, whole
    again = module.run(folder, True, epochs=SHORT)  # free again; the run is finished
    assert again.epochs_run == SHORT


def test_a_folder_whose_writer_was_killed_resumes_at_once(tmp_path):
    script, module = _load_script(tmp_path)
    folder = tmp_path / "run"
    proc = _start_holding(script, folder)
    try:
        proc.send_signal(signal.SIGKILL)  # the lock dies with its holder
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
    assert (folder / ".lock").read_text().strip() == str(proc.pid)  # the dead holder's note
    resumed = module.run(folder, True, epochs=SHORT)  # at once, no stale lock to remove
    _assert_same_result(resumed, module.run(tmp_path / "unbroken", False, epochs=SHORT))


# ------------------------------------------------------------ in-process resumption

X, Y = data.blobs(40, key=2, std=1.0)
VAL = data.blobs(16, key=5, std=1.0)
MODEL = models.mlp([6, 2], "tanh", dropout=0.2)
PARAMS = MODEL.init(jax.random.key(1), (-1, 2))[1]
ADAM = optax.adam(0.05)  # one optimizer object: fit's compiled programs are reused


def _fit(folder, **kw):
    kw = {
        "optimizer": ADAM,
        "epochs": 6,
        "batch_size": 10,  # 4 steps an epoch
        "key": 9,
        "validation_data": VAL,
        "patience": 3,
        "checkpoint_dir": folder,
        "progress": False,
        **kw,
    }
    return fit(MODEL, PARAMS, X, Y, **kw)


@pytest.mark.parametrize("scan", [False, True])
def test_resuming_from_every_kept_checkpoint_matches_the_unbroken_run(tmp_path, scan):
    unbroken = _fit(tmp_path / "all", scan=scan, checkpoint_every=2, keep_checkpoints=100)
    saved = sorted((tmp_path / "all").glob("step_*.npz"))
    assert [int(p.stem[5:]) for p in saved][:3] == [2, 4, 6]
    for path in saved[:3]:  # mid-epoch, epoch end, mid-epoch
        folder = tmp_path / path.stem
        folder.mkdir()
        shutil.copy(path, folder)
        resumed = _fit(folder, scan=scan, checkpoint_every=2, resume=True)
        _assert_same_result(resumed, unbroken)


def test_checkpointing_does_not_change_a_loop_mode_run(tmp_path):
    _assert_same_result(_fit(None, epochs=3), _fit(tmp_path, epochs=3, checkpoint_every=3))


def test_early_stopping_state_and_best_checkpoint(tmp_path):
    result = _fit(tmp_path, epochs=30, patience=2)
    assert result.epochs_run < 30
    assert result.epochs_run == result.best_epoch + 3
    losses = result.history["val_loss"]
    assert result.best_epoch == int(np.argmin(losses))
    like = {"params": PARAMS, "opt_state": optax.adam(0.05).init(PARAMS), "key": jax.random.key(9)}
    best = checkpoint.load(tmp_path / "best.npz", like={**like, "best_params": PARAMS})
    assert_trees_identical(best["params"], result.params)
    assert checkpoint.load_meta(tmp_path / "best.npz")["best_epoch"] == result.best_epoch
    assert len(list(tmp_path.glob("step_*.npz"))) == 3
    # resuming a finished run hands back the same result without training further
    again = _fit(tmp_path, epochs=30, patience=2, resume=True)
    _assert_same_result(again, result)


def _flip_a_data_byte(path: Path) -> None:
    """A flipped bit in an array's bytes: the header reads, only ``load`` sees the damage."""
    w = np.asarray(checkpoint.load(path)["['params']['hidden_0']['w']"])
    data = bytearray(path.read_bytes())
    data[data.index(w.tobytes()) + 5] ^= 0x10
    path.write_bytes(bytes(data))
    checkpoint.load_meta(path)


def _forge(path: Path, change) -> None:
    raw, header = take_apart(path.read_bytes())
    change(raw, header)
    path.write_bytes(rebuild(raw, header))


DAMAGE = {
    "torn": lambda path: path.write_bytes(b"PK\x03\x04 torn"),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:-100]),
    "data": _flip_a_data_byte,
    "compression": lambda path: path.write_bytes(patch_method(path.read_bytes(), 0, 14)),
    "dtype": lambda path: _forge(path, lambda raw, h: h["dtypes"].update({"['key']": "x"})),
    "shape": lambda path: _forge(
        path, lambda raw, h: raw.update({"['key']": npy_declaring((10**15,), "<u4", b"")})
    ),
    "meta": lambda path: _forge(path, lambda raw, h: h["meta"].pop("epoch")),
}


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A folder after two epochs, and the unbroken run of three."""
    root = tmp_path_factory.mktemp("runs")
    _fit(root / "two", epochs=2)
    return root / "two", _fit(root / "unbroken", epochs=3)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_past_every_kind_of_damage(tmp_path, two_epochs, damage):
    folder = tmp_path / "run"
    shutil.copytree(two_epochs[0], folder)
    DAMAGE[damage](_latest(folder))
    with pytest.warns(UserWarning, match="skipping an unreadable checkpoint") as caught:
        resumed = _fit(folder, epochs=3, resume=True)
    assert caught[0].filename == __file__  # the warning points at the call of fit
    _assert_same_result(resumed, two_epochs[1])


def test_resume_with_no_readable_checkpoint_is_refused(tmp_path, two_epochs):
    folder = tmp_path / "run"
    shutil.copytree(two_epochs[0], folder)
    for path in folder.glob("step_*.npz"):
        _flip_a_data_byte(path)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable checkpoint"):
        _fit(folder, epochs=3, resume=True)


def test_resume_with_an_empty_folder_starts_afresh(tmp_path):
    _assert_same_result(_fit(tmp_path / "a", epochs=2, resume=True), _fit(tmp_path / "b", epochs=2))


def test_resume_refuses_a_run_with_other_settings(tmp_path):
    _fit(tmp_path, epochs=1)
    with pytest.raises(ValueError, match="batch_size=10, this call batch_size=8"):
        _fit(tmp_path, epochs=2, batch_size=8, resume=True)
    with pytest.raises(ValueError, match="pass resume=True"):
        _fit(tmp_path, epochs=2)
    wider = models.mlp([6, 3], "tanh")  # the same run, but a model with another output
    other = wider.init(jax.random.key(1), (-1, 2))[1]
    with pytest.raises(ValueError, match=r"\['output'\]\['b'\] has shape \(2,\)"):
        fit(
            wider,
            other,
            X,
            Y,
            optimizer=ADAM,
            epochs=2,
            batch_size=10,
            validation_data=VAL,
            patience=3,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_resume_works_with_jit_disabled(tmp_path):
    # 36 examples in batches of 8: four scanned steps and a short one an epoch
    x = np.random.default_rng(0).normal(size=(36, 3)).astype(np.float32)
    model = models.mlp([8, 1], "tanh", "linear")
    params = model.init(jax.random.key(0), (-1, 3))[1]
    kw = {"optimizer": optax.sgd(0.05), "epochs": 2, "batch_size": 8, "scan": True}
    kw |= {"checkpoint_every": 1, "keep_checkpoints": 10}
    with jax.disable_jit():
        unbroken = fit(model, params, x, x.sum(1), checkpoint_dir=tmp_path / "a", **kw)
        folder = tmp_path / "b"
        folder.mkdir()
        shutil.copy(tmp_path / "a" / "step_0000000006.npz", folder)  # epoch 1, step 1
        resumed = fit(model, params, x, x.sum(1), checkpoint_dir=folder, resume=True, **kw)
    _assert_same_result(resumed, unbroken)
