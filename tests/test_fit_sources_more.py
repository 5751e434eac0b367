"""More of ``fit`` on sources and of ``scan=True``: a stateful model, mixed precision, a
validation source beside arrays, early stopping and callbacks on sources, checkpoints
between the full batches and a short last one, a mesh, batches of other forms, empty
validation sources, and repeated runs of another length."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import data, distributed, models

HERE = Path(__file__).resolve().parent
X, Y = data.spirals(100, key=0)
VAL = data.spirals(60, key=1)
OPTIONS = dict(optimizer=optax.sgd(0.1), progress=False)


class Rows:
    """A dataset read at random from arrays."""

    def __init__(self, x, y):
        self.x, self.y = np.asarray(x), np.asarray(y)

    def __len__(self):
        return len(self.x)

    def read(self, idx):
        return self.x[idx], self.y[idx]


def mlp():
    model = models.mlp([8, 2], activation="tanh")
    return model, model.init(jax.random.key(0), (-1, 2))[1]


def leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def assert_same_run(a, b, exact=True):
    for p, q in zip(leaves((a.params, a.state)), leaves((b.params, b.state)), strict=True):
        if exact:
            np.testing.assert_array_equal(p, q)
        else:
            np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=0 if exact else 1e-5)
    assert (a.best_epoch, a.epochs_run) == (b.best_epoch, b.epochs_run)


@pytest.mark.parametrize("scan", [False, True])
def test_a_stateful_model_on_a_dataset_trains_as_on_the_arrays(scan):
    model = fn.serial(fn.Dense(8), fn.BatchNorm(), fn.Relu(), fn.Dense(2))
    _, params, state = model.init_with_state(jax.random.key(0), (-1, 2))
    kw = dict(loss=fn.losses.softmax_cross_entropy, state=state, batch_size=32, epochs=3)
    kw |= dict(scan=scan, validation_data=VAL, **OPTIONS)
    arrays = fn.fit(model, params, X, Y, **kw)
    assert_same_run(arrays, fn.fit(model, params, Rows(X, Y), **kw))
    batches = [(X[i : i + 32], Y[i : i + 32]) for i in range(0, 100, 32)]
    unshuffled = fn.fit(model, params, X, Y, **{**kw, "shuffle": False})
    iterable = fn.fit(model, params, batches, **{**kw, "batch_size": None})
    assert_same_run(unshuffled, iterable, exact=False)


@pytest.mark.parametrize("scan", [False, True])
def test_bfloat16_on_a_dataset_trains_as_on_the_arrays(scan):
    model, params = mlp()
    kw = dict(batch_size=32, epochs=2, scan=scan, precision="bfloat16", validation_data=VAL)
    arrays = fn.fit(model, params, X, Y, **kw, **OPTIONS)
    assert_same_run(arrays, fn.fit(model, params, Rows(X, Y), **kw, **OPTIONS))


def test_a_validation_source_beside_scanned_arrays_fills_the_history():
    # the whole-epoch program validates arrays only: with a validation source the epoch's
    # validation is read from the source after its steps
    model, params = mlp()
    kw = dict(batch_size=32, epochs=3, scan=True, **OPTIONS)
    arrays = fn.fit(model, params, X, Y, validation_data=VAL, **kw)
    assert_same_run(arrays, fn.fit(model, params, X, Y, validation_data=Rows(*VAL), **kw))
    pieces = [(VAL[0][i : i + 20], VAL[1][i : i + 20]) for i in range(0, 60, 20)]
    assert_same_run(arrays, fn.fit(model, params, X, Y, validation_data=pieces, **kw), False)


def test_early_stopping_callback_and_progress_on_sources():
    model, params = mlp()
    batches = [(X[i : i + 32], Y[i : i + 32]) for i in range(0, 100, 32)]
    kw = dict(epochs=8, validation_data=VAL, patience=2, monitor="val_accuracy", **OPTIONS)
    for scan in (False, True):
        listed = fn.fit(model, params, batches, scan=scan, **kw)
        generated = fn.fit(model, params, lambda e: (b for b in batches), scan=scan, **kw)
        assert_same_run(listed, generated)
        assert listed.epochs_run < 8
        seen = []
        options = dict(batch_size=32, epochs=3, scan=scan, validation_data=VAL)
        run = fn.fit(
            model,
            params,
            Rows(X, Y),
            callback=lambda e, logs, seen=seen: seen.append((e, logs)),
            optimizer=optax.sgd(0.1),
            progress=True,
            **options,
        )
        assert [e for e, _ in seen] == [0, 1, 2]
        assert all(logs[k] == run.history[k][e] for e, logs in seen for k in logs)
        assert_same_run(run, fn.fit(model, params, X, Y, **options, **OPTIONS))


def checkpoints(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("step_*.npz"))


@pytest.mark.parametrize("every", [3, 5])
def test_scan_saves_the_checkpoint_due_before_a_short_last_batch(tmp_path, every):
    # 100 examples, batches of 32: 3 full steps and a short one an epoch; a checkpoint due
    # after the full ones (steps 3 and 15 for every=3, 15 for every=5) is saved in scan mode
    model, params = mlp()
    kw = dict(batch_size=32, epochs=4, checkpoint_every=every, keep_checkpoints=100, **OPTIONS)
    fn.fit(model, params, X, Y, checkpoint_dir=tmp_path / "loop", **kw)
    fn.fit(model, params, X, Y, scan=True, checkpoint_dir=tmp_path / "scan", **kw)
    fn.fit(model, params, Rows(X, Y), scan=True, checkpoint_dir=tmp_path / "ds", **kw)
    expected = checkpoints(tmp_path / "loop")
    assert "step_0000000015.npz" in expected
    assert checkpoints(tmp_path / "scan") == expected == checkpoints(tmp_path / "ds")


def test_a_dataset_resumes_mid_epoch_in_scan_mode(tmp_path):
    class Stop(Exception):
        pass

    def stop(e, logs):
        if e == 1:
            raise Stop  # before epoch 1's end is saved: the newest checkpoint is mid-epoch

    model, params = mlp()
    kw = dict(batch_size=16, epochs=3, scan=True, validation_data=VAL, checkpoint_every=3)
    with pytest.raises(Stop):
        fn.fit(model, params, Rows(X, Y), checkpoint_dir=tmp_path, callback=stop, **kw, **OPTIONS)
    assert checkpoints(tmp_path)[-1] == "step_0000000012.npz"  # epoch 1 step 5 of 7
    resumed = fn.fit(
        model, params, Rows(X, Y), checkpoint_dir=tmp_path, resume=True, **kw, **OPTIONS
    )
    whole = fn.fit(
        model, params, X, Y, batch_size=16, epochs=3, scan=True, validation_data=VAL, **OPTIONS
    )
    assert_same_run(resumed, whole)


def test_batches_of_other_forms_and_empty_validation_get_clear_errors():
    model, params = mlp()
    pairs = [(X[i : i + 32], Y[i : i + 32]) for i in range(0, 100, 32)]
    dicts = [{"x": a, "y": b} for a, b in pairs]
    with pytest.raises(ValueError, match="batch 0 of epoch 0 is a dict; expected a pair"):
        fn.fit(model, params, dicts, epochs=1, **OPTIONS)
    with pytest.raises(ValueError, match="batch 0 of epoch 0 is a tuple of 3; expected a pair"):
        fn.fit(model, params, [(a, b, b) for a, b in pairs], epochs=1, **OPTIONS)
    for empty in (Rows(VAL[0][:0], VAL[1][:0]), lambda e: iter([])):
        with pytest.raises(ValueError, match="validation source yielded no data in epoch 0"):
            fn.fit(model, params, X, Y, batch_size=32, epochs=1, validation_data=empty, **OPTIONS)


def test_the_whole_run_as_one_call_is_right_for_each_count_of_epochs():
    model, params = mlp()
    for epochs in (2, 4, 3, 1):
        kw = dict(batch_size=32, epochs=epochs, validation_data=VAL, **OPTIONS)
        scanned = fn.fit(model, params, X, Y, scan=True, **kw)
        assert_same_run(scanned, fn.fit(model, params, X, Y, **kw), exact=False)
        assert len(scanned.history["val_loss"]) == epochs


def mesh_runs() -> None:
    """In a process with 4 CPU devices: the whole run over a mesh as on one device."""
    model, params = mlp()
    mesh = distributed.make_mesh()
    for n in (96, 104):  # without and with a short last batch (8 rows: 2 a device)
        x, y = data.spirals(n, key=0)
        for epochs in (1, 3):
            kw = dict(batch_size=32, epochs=epochs, scan=True, validation_data=VAL, **OPTIONS)
            one = fn.fit(model, params, x, y, **kw)
            assert_same_run(one, fn.fit(model, params, x, y, mesh=mesh, **kw), exact=False)
            over = fn.fit(model, params, Rows(x, y), mesh=mesh, **kw)
            assert_same_run(one, over, exact=False)


def test_the_whole_run_over_a_mesh_trains_as_on_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    code = "import test_fit_sources_more as t; t.mesh_runs()"
    child = subprocess.run([sys.executable, "-c", code], cwd=HERE, env=env, timeout=300)
    assert child.returncode == 0
