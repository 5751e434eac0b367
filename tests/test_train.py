"""fit and train_step: minibatching, determinism, early stopping, scan, optimizers, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import data, losses, models


@pytest.fixture(scope="module")
def spiral():
    return data.spirals(200, key=1)


def _init(model, d=2, seed=0):
    return model.init(jax.random.key(seed), (-1, d))[1]


def _leaves_equal(a, b):
    return all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_same_key_same_data_bit_identical(spiral):
    x, y = spiral
    model = models.mlp([8, 2], "tanh", "softmax", dropout=0.1)
    p = _init(model)
    runs = [
        fn.fit(
            model,
            p,
            x,
            y,
            optimizer=optax.adam(0.01),
            epochs=3,
            batch_size=32,
            key=5,
            progress=False,
        )
        for _ in range(2)
    ]
    assert _leaves_equal(runs[0].params, runs[1].params)
    other = fn.fit(
        model, p, x, y, optimizer=optax.adam(0.01), epochs=3, batch_size=32, key=6, progress=False
    )
    assert not _leaves_equal(runs[0].params, other.params)


def test_scan_epoch_equals_python_loop(spiral):
    x, y = spiral
    model = models.mlp([8, 2], "tanh", "softmax")
    p = _init(model)
    kw = dict(
        optimizer=optax.sgd(0.1, momentum=0.9), epochs=3, batch_size=48, key=3, progress=False
    )  # 200 = 4 × 48 + 8: a remainder batch too
    loop = fn.fit(model, p, x, y, scan=False, **kw)
    scan = fn.fit(model, p, x, y, scan=True, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(loop.params), jax.tree_util.tree_leaves(scan.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loop.history["loss"], scan.history["loss"], rtol=1e-5)


def test_batch_size_sets_the_number_of_steps(spiral):
    x, y = spiral
    x, y = x[:10], y[:10]
    model = models.logistic_regression()
    p = _init(model)
    for batch_size, steps in [(1, 10), (3, 4), (10, 1), (None, 1), (25, 1)]:
        opt = optax.chain(optax.sgd(0.1))
        # count updates with optax's own step counter (scale_by_schedule keeps a count)
        counted = optax.chain(optax.scale_by_schedule(lambda c: 1.0), opt)
        r = fn.fit(
            model, p, x, y, optimizer=counted, epochs=2, batch_size=batch_size, progress=False
        )
        assert int(r.opt_state[0].count) == 2 * steps, batch_size


def test_epoch_loss_is_example_weighted_mean_of_batches(spiral):
    x, y = spiral
    x, y = x[:10], y[:10]
    model = models.logistic_regression()
    p = _init(model)
    # lr 0: params never move, so the epoch loss must equal the full-set loss
    r = fn.fit(model, p, x, y, optimizer=optax.sgd(0.0), epochs=1, batch_size=4, progress=False)
    full = float(model.loss(model.apply(p, x), y))
    np.testing.assert_allclose(r.history["loss"][0], full, rtol=1e-6)


@pytest.mark.parametrize(
    "optimizer",
    [optax.sgd(0.5), optax.sgd(0.2, momentum=0.9), optax.rmsprop(0.01), optax.adam(0.02)],
    ids=["sgd", "momentum", "rmsprop", "adam"],
)
def test_every_optax_optimizer_trains(spiral, optimizer):
    x, y = data.blobs(200, key=2)
    model = models.mlp([8, 2], "tanh", "softmax")
    r = fn.fit(
        model, _init(model), x, y, optimizer=optimizer, epochs=20, batch_size=20, progress=False
    )
    assert r.history["loss"][-1] < 0.5 * r.history["loss"][0]
    assert r.history["accuracy"][-1] > 0.95


def test_early_stopping_stops_after_patience_and_restores_best():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 2, 40)
    xv, yv = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 2, 40)  # noise labels
    model = models.mlp([64, 2], "tanh", "softmax")
    p = _init(model, d=5)
    kw = dict(optimizer=optax.adam(0.03), batch_size=10, key=1, progress=False)
    patience = 3
    r = fn.fit(model, p, x, y, epochs=200, validation_data=(xv, yv), patience=patience, **kw)
    val = r.history["val_loss"]
    assert r.epochs_run < 200, "the model should overfit noise labels and stop early"
    best = int(np.argmin(val))
    assert r.best_epoch == best
    assert r.epochs_run == best + patience + 1 == len(val)
    assert all(v >= val[best] for v in val[best + 1 :])
    # the returned params are those after epoch `best`: rerun without early stopping
    again = fn.fit(model, p, x, y, epochs=best + 1, validation_data=(xv, yv), **kw)
    assert _leaves_equal(r.params, again.params)
    np.testing.assert_allclose(again.history["val_loss"][-1], val[best], rtol=1e-6)


def test_history_has_train_and_validation_entries(spiral):
    x, y = spiral
    model = models.mlp([4, 2], "relu", "softmax")
    logs = []
    r = fn.fit(
        model,
        _init(model),
        x,
        y,
        epochs=2,
        validation_data=(x[:20], y[:20]),
        progress=False,
        callback=lambda e, l: logs.append((e, l)),
    )
    assert set(r.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in r.history.values())
    assert [e for e, _ in logs] == [0, 1]
    ev = fn.evaluate(model, r.params, x[:20], y[:20])
    np.testing.assert_allclose(ev["loss"], r.history["val_loss"][-1], rtol=1e-6)


def test_train_step_is_pure_and_matches_manual_update():
    model = models.mlp([3, 2], "tanh", "softmax")
    p = _init(model)
    x, y = jnp.ones((4, 2)), jnp.array([0, 1, 1, 0])
    opt = optax.sgd(0.1)
    step = fn.train_step(model.apply, model.loss, opt, metrics={"accuracy": losses.accuracy})
    new, state, m = step(p, opt.init(p), (x, y), None)
    g = jax.grad(lambda q: model.loss(model.apply(q, x), y))(p)
    expected = jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert set(m) == {"loss", "accuracy"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(batch_size=-4), "batch_size must be a positive int"),
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(patience=0), "patience must be a positive int"),
        (dict(monitor="val_loss"), "monitor must be one of"),
        (dict(validation_data=(np.ones((3, 2)),)), "validation_data must be a pair"),
        (dict(optimizer="adam"), "optimizer must be an optax"),
    ],
)
def test_fit_bad_arguments(spiral, kwargs, match):
    x, y = spiral
    model = models.mlp([4, 2])
    with pytest.raises((ValueError, TypeError), match=match):
        fn.fit(model, _init(model), x, y, progress=False, **kwargs)


def test_fit_bad_data(spiral):
    x, y = spiral
    model = models.mlp([4, 2])
    p = _init(model)
    with pytest.raises(ValueError, match="same length, got 200 and 199"):
        fn.fit(model, p, x, y[:-1], progress=False)
    with pytest.raises(ValueError, match="dataset is empty"):
        fn.fit(model, p, x[:0], y[:0], progress=False)
    with pytest.raises(ValueError, match=r"class labels in \[0, 2\].*2 outputs"):
        fn.fit(model, p, x, np.where(y == 1, 2, 0), progress=False)
    with pytest.raises(ValueError, match=r"Dense\(4\): expected inputs whose last axis has size 2"):
        fn.fit(model, p, np.ones((200, 3), np.float32), y, progress=False)


def test_second_fit_with_the_same_setup_compiles_nothing(spiral):
    """fit caches its compiled programs and its shape check: a re-run traces the model 0 times."""
    x, y = spiral
    inner = models.mlp([4, 2])
    traces = []

    def apply(params, xb, *, key=None, train=False):
        traces.append(xb.shape)  # runs only while JAX traces
        return inner.apply(params, xb, key=key, train=train)

    opt = optax.sgd(0.1)
    p = _init(inner)
    kw = dict(
        loss=losses.softmax_cross_entropy,
        optimizer=opt,
        epochs=2,
        batch_size=64,
        scan=True,
        progress=False,
    )
    first = fn.fit(apply, p, x, y, **kw)
    assert traces, "the first fit must trace the model"
    traces.clear()
    second = fn.fit(apply, p, x, y, **kw)
    assert traces == []
    assert _leaves_equal(first.params, second.params)
