"""``fit``'s cost per epoch: one compiled call and one read of the device per epoch in scan
mode (all the epochs in one call when nothing needs the host between them), and the same
results as the step-by-step loop it replaces."""

from __future__ import annotations

import collections
import warnings

import jax
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import data, models
from funcnn.train import epochs as epochs_module
from funcnn.train import fitting
from funcnn.train.programs import Programs

EPOCHS = 4


def problem(n=100, n_val=60):
    x, y = data.spirals(n, key=0)
    xv, yv = data.spirals(n_val, key=1)
    model = models.mlp([8, 2], activation="tanh")
    _, params = model.init(jax.random.key(0), (-1, 2))
    return model, params, x, y, (xv, yv)


@pytest.fixture
def counted(monkeypatch):
    """Count the calls of each compiled program of fit's epochs, and of the host reads."""
    calls: collections.Counter = collections.Counter()
    counts: list[int] = []
    original = fitting.epoch_programs

    def wrap(name, f):
        def counted_call(*args, **kwargs):
            calls[name] += 1
            if name == "epochs":
                counts.append(kwargs["count"])
            return f(*args, **kwargs)

        return counted_call

    def programs(*args):
        p = original(*args)
        return Programs(*(wrap(name, f) for name, f in zip(Programs._fields, p)))

    read = epochs_module.host_read

    def counted_read(tree):
        calls["read"] += 1
        return read(tree)

    monkeypatch.setattr(fitting, "epoch_programs", programs)
    monkeypatch.setattr(epochs_module, "host_read", counted_read)
    return calls, counts


def train(model, params, x, y, val, **options):
    options = {"optimizer": optax.sgd(0.1), "epochs": EPOCHS, "batch_size": 32} | options
    return fn.fit(model, params, x, y, validation_data=val, progress=False, **options)


def test_an_epoch_with_validation_is_one_call_and_one_read(counted):
    calls, counts = counted
    model, params, x, y, val = problem()  # 100 examples: 3 full batches and a short one
    train(model, params, x, y, val, scan=True, callback=lambda e, logs: None)
    assert calls == {"epochs": EPOCHS, "read": EPOCHS}
    assert counts == [1] * EPOCHS


def test_all_epochs_are_one_call_when_the_host_waits_for_nothing(counted):
    calls, counts = counted
    model, params, x, y, val = problem()
    train(model, params, x, y, val, scan=True)
    assert calls == {"epochs": 1, "read": 1}
    assert counts == [EPOCHS]


def test_early_stopping_runs_one_epoch_a_call(counted):
    calls, counts = counted
    model, params, x, y, val = problem()
    result = train(model, params, x, y, val, scan=True, patience=100)
    assert result.epochs_run == EPOCHS
    assert calls == {"epochs": EPOCHS, "read": EPOCHS}


def test_the_loop_mode_reads_once_per_epoch(counted):
    calls, _ = counted
    model, params, x, y, val = problem()
    train(model, params, x, y, val, scan=False)
    # one step a call (4 a epoch), one validation call, one read of the steps and one of
    # the validation per epoch
    assert calls == {
        "order": EPOCHS,
        "loop_step": 4 * EPOCHS,
        "validate": EPOCHS,
        "read": 2 * EPOCHS,
    }


@pytest.mark.parametrize("n_val", [60, 4096 + 904])
def test_one_call_equals_the_loop_and_evaluate(n_val):
    """All epochs in one call, one epoch a call, and one step a call agree; the last
    validation logs equal :func:`funcnn.evaluate` on the final params (in chunks of 4096,
    the second case two chunks)."""
    model, params, x, y, val = problem(n_val=n_val)
    fused = train(model, params, x, y, val, scan=True)
    per_epoch = train(model, params, x, y, val, scan=True, callback=lambda e, logs: None)
    loop = train(model, params, x, y, val, scan=False)
    for other in (per_epoch, loop):
        for k, v in fused.history.items():
            np.testing.assert_allclose(v, other.history[k], rtol=1e-5, atol=1e-6, err_msg=k)
        for a, b in zip(
            jax.tree_util.tree_leaves(fused.params), jax.tree_util.tree_leaves(other.params)
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    logs = fn.evaluate(model, fused.params, *val)
    assert fused.history["val_loss"][-1] == pytest.approx(logs["loss"], rel=1e-5)
    assert fused.history["val_accuracy"][-1] == pytest.approx(logs["accuracy"], abs=1e-6)


def diverging_problem():
    """A linear model, the mean squared error and gradient descent with a step far beyond
    ``2 / λ_max`` on inputs scaled by 10: the loss grows geometrically and overflows to
    inf in the fourth epoch."""
    model, params, x, y, val = problem()
    model = models.mlp([1])
    _, params = model.init(jax.random.key(0), (-1, 2))
    as_target = lambda t: np.asarray(t, np.float32)[:, None]  # noqa: E731
    return model, params, 10 * x, as_target(y), (10 * val[0], as_target(val[1]))


def test_a_nonfinite_step_inside_one_call_raises_where_the_loop_does():
    model, params, x, y, val = diverging_problem()
    options = dict(loss=fn.losses.mse, metrics={}, optimizer=optax.sgd(0.5), epochs=30)
    errors = []
    for scan in (True, False):
        with pytest.raises(fn.NonFiniteError) as err:
            train(model, params, x, y, val, scan=scan, **options)
        errors.append(err.value)
    (fused, loop) = errors
    assert (fused.epoch, fused.step) == (loop.epoch, loop.step)
    for a, b in zip(
        jax.tree_util.tree_leaves(fused.params), jax.tree_util.tree_leaves(loop.params)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5)
        assert np.isfinite(a).all()


def test_skipped_steps_warn_once_per_epoch_at_the_caller():
    model, params, x, y, val = diverging_problem()
    options = dict(loss=fn.losses.mse, metrics={}, optimizer=optax.sgd(0.5), epochs=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(model, params, x, y, val, scan=True, on_nonfinite="skip", **options)
    skipped = [w for w in caught if "non-finite steps" in str(w.message)]
    assert skipped, "the run was meant to meet non-finite steps"
    assert all(w.filename == __file__ for w in skipped)
    epochs = {int(str(w.message).rsplit(" ", 1)[1]) for w in skipped}
    assert len(epochs) == len(skipped)  # one warning per epoch
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(result.params))
