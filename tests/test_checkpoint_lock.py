"""One run per checkpoint folder: the folder lock, and what a resumed run must share.

The lock tests here run in one process (``flock`` locks of two open files conflict there too);
tests/test_resume.py holds the ones with a second process, killed or not.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import optax
import pytest

from funcnn import checkpoint, data, models
from funcnn.checkpoint import FolderLock, FolderLockedError
from funcnn.train import fit
from funcnn.train.state import optimizer_fingerprint, same_optimizer
from tests.checkpoint_forgery import rebuild, take_apart
from tests.reliability_support import use_compile_cache

use_compile_cache()

X, Y = data.blobs(40, key=2, std=1.0)
VAL = data.blobs(16, key=5, std=1.0)
MODEL = models.mlp([6, 2], "tanh")
PARAMS = MODEL.init(jax.random.key(1), (-1, 2))[1]
ADAM = optax.adam(0.05)  # one optimizer object: fit's compiled programs are reused


def _fit(folder, x=X, y=Y, **kw):
    kw = {"optimizer": ADAM, "epochs": 2, "batch_size": 10, "key": 9, "progress": False, **kw}
    return fit(MODEL, PARAMS, x, y, checkpoint_dir=folder, **kw)


# ---------------------------------------------------------------------------- the lock


def test_a_second_lock_is_refused_with_the_folder_and_the_holders_pid(tmp_path):
    with FolderLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(FolderLockedError) as err:
            FolderLock(tmp_path, "fit: checkpoint_dir")
        assert err.value.folder == tmp_path and err.value.pid == os.getpid()
        message = str(err.value)
        assert message.startswith(f"fit: checkpoint_dir {str(tmp_path)!r} is in use")
        assert f"process {os.getpid()} holds" in message
    assert not lock.held
    again = FolderLock(tmp_path)  # released: free for the next run
    again.release()
    again.release()  # a second release does nothing


def test_a_holder_that_wrote_no_pid_is_still_refused(tmp_path):
    with FolderLock(tmp_path):
        (tmp_path / ".lock").write_text("")  # as if it died between lock and note
        with pytest.raises(FolderLockedError, match="another process holds") as err:
            FolderLock(tmp_path)
        assert err.value.pid is None


def test_a_fit_on_a_folder_that_a_running_fit_writes_is_refused(tmp_path):
    refused = []

    def second_run(epoch, logs):  # while the first run holds the folder
        if epoch == 0:
            with pytest.raises(FolderLockedError, match=str(tmp_path)):
                _fit(tmp_path, resume=True)
            refused.append(epoch)

    first = _fit(tmp_path, callback=second_run)
    assert refused == [0]
    assert _fit(tmp_path, resume=True).history == first.history  # released at its end


def test_a_fit_that_raises_releases_the_folder(tmp_path):
    class Interrupted(Exception):
        pass

    def crash(epoch, logs):
        raise Interrupted

    with pytest.raises(Interrupted):
        _fit(tmp_path, callback=crash)
    with FolderLock(tmp_path):  # free at once: the lock went with the error
        pass
    assert _fit(tmp_path, resume=True).epochs_run == 2


def test_a_refused_resume_releases_the_folder(tmp_path):
    _fit(tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        _fit(tmp_path, batch_size=8, resume=True)
    with pytest.raises(ValueError, match="pass resume=True"):
        _fit(tmp_path)
    FolderLock(tmp_path).release()


def test_temporary_files_are_removed_only_under_the_lock(tmp_path):
    stale = tmp_path / ".step_0000000004.npz.x1y2.tmp"  # a save cut short by a crash
    stale.write_bytes(b"PK\x03\x04 half")
    with FolderLock(tmp_path):  # a live run writes there, that file may be its own
        with pytest.raises(FolderLockedError):
            _fit(tmp_path)
        assert stale.exists()
    _fit(tmp_path)  # the lock holder removes it
    assert not stale.exists()


# ---------------------------------------------------------- what a resumed run must share


def test_optimizer_fingerprints_tell_optimizers_and_learning_rates_apart():
    same = [optax.adam(1e-3), optax.adam(1e-3)]
    others = [
        optax.adam(2e-3),
        optax.adam(1e-3, b1=0.8),
        optax.adamw(1e-3),
        optax.sgd(1e-3),
        optax.sgd(1e-3, momentum=0.9),
        optax.adam(optax.linear_schedule(1e-3, 0.0, 10)),
        optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1e-3)),
    ]
    prints = [optimizer_fingerprint(o, PARAMS) for o in same + others]
    assert all(p is not None and len(p) == 6 for p in prints)
    assert prints[0] == prints[1]  # deterministic
    for i, a in enumerate(prints[1:]):
        for b in prints[i + 2 :]:
            assert not same_optimizer(a, b), (a, b)


def test_an_optimizer_bound_to_the_params_structure_is_probed_on_it():
    labels = {"hidden_0": {"w": "a", "b": "b"}, "output": {"w": "a", "b": "b"}}
    assert set(PARAMS) == set(labels)
    split = {
        lr: optax.multi_transform({"a": optax.adam(lr), "b": optax.sgd(0.1)}, labels)
        for lr in (1e-3, 2e-3)
    }
    a, b = (optimizer_fingerprint(o, PARAMS) for o in split.values())
    assert a is not None and not same_optimizer(a, b)


def test_an_optimizer_that_cannot_be_probed_is_not_compared():
    needs_value = optax.contrib.reduce_on_plateau()  # its update wants the loss too
    assert optimizer_fingerprint(needs_value, PARAMS) is None
    assert same_optimizer(None, [1.0]) and same_optimizer([1.0], None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optimizer": optax.adam(0.1)}, "another optimizer"),
        ({"optimizer": optax.sgd(0.05)}, "another optimizer"),
        ({"x": X + np.float32(1e-3)}, "other data: x was float32"),
        ({"y": np.roll(Y, 1)}, "other data: y was"),
        ({"validation_data": (VAL[0] * 2, VAL[1])}, "other data: x_val"),
    ],
)
def test_resume_with_another_optimizer_or_data_is_refused(tmp_path, change, message):
    _fit(tmp_path, validation_data=VAL)
    kw = {"validation_data": VAL, "resume": True, "epochs": 3} | change
    with pytest.raises(ValueError, match=message):
        _fit(tmp_path, **kw)


def test_resume_with_the_same_optimizer_and_data_in_new_objects_passes(tmp_path):
    unbroken = _fit(tmp_path / "a", epochs=3)
    _fit(tmp_path / "b", epochs=2)
    x, y = np.array(X), np.array(Y)  # copies: the same data
    same = optax.adam(0.05)  # another object: the same optimizer
    resumed = _fit(tmp_path / "b", x, y, epochs=3, resume=True, optimizer=same)
    assert resumed.history == unbroken.history


def test_a_checkpoint_without_fingerprints_still_resumes(tmp_path):
    """Checkpoints written before fingerprints (format 1, or a config without them)."""
    unbroken = _fit(tmp_path / "a", epochs=3)
    folder = tmp_path / "b"
    _fit(folder, epochs=2)
    for path in folder.glob("*.npz"):
        raw, header = take_apart(path.read_bytes())
        for name in ("data", "optimizer"):
            del header["meta"]["config"][name]
        path.write_bytes(rebuild(raw, header))
    assert "data" not in checkpoint.load_meta(folder / "best.npz")["config"]
    resumed = _fit(folder, epochs=3, resume=True)
    assert resumed.history == unbroken.history
