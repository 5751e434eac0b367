"""The non-finite guard of fit: stop (or skip) at the first NaN / inf, keep finite params."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnn import data as fn_data
from funcnn import losses, models
from funcnn.train import NonFiniteError, fit
from tests.reliability_support import all_finite, use_compile_cache

use_compile_cache()

N, BATCH = 32, 8
MODEL = models.mlp([8, 1], "tanh", "linear")


def _data():
    x = np.random.default_rng(0).normal(size=(N, 3)).astype(np.float32)
    return x, x.sum(axis=1)


def _params():
    return MODEL.init(jax.random.key(0), (-1, 3))[1]


def _first_bad_step_by_hand(x, y, lr, key):
    """Plain SGD over fit's documented epoch-0 order; the first step that is not finite."""
    perm = np.asarray(fn_data.shuffle(jax.random.fold_in(jax.random.fold_in(key, 0), 0), N))
    grad = jax.jit(jax.value_and_grad(lambda p, xb, yb: losses.mse(MODEL.apply(p, xb), yb)))
    params = _params()
    for s in range(N // BATCH):
        idx = perm[s * BATCH : (s + 1) * BATCH]
        value, g = grad(params, x[idx], y[idx])
        new = jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g)
        if not (np.isfinite(float(value)) and all_finite(g) and all_finite(new)):
            return s, params
        params = new
    raise AssertionError("the hand-written run never diverged")


@pytest.mark.parametrize("scan", [False, True])
def test_huge_learning_rate_stops_at_the_first_bad_step_with_finite_params(scan):
    x, y = _data()
    step, before = _first_bad_step_by_hand(x, y, 1e6, jax.random.key(0))
    with pytest.raises(NonFiniteError, match=f"epoch 0, step {step}") as info:
        fit(MODEL, _params(), x, y, optimizer=optax.sgd(1e6), epochs=3, batch_size=BATCH, scan=scan)
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert (err.epoch, err.step) == (0, step)
    assert all_finite(err.params) and all_finite(err.opt_state)
    for got, want in zip(jax.tree_util.tree_leaves(err.params), jax.tree_util.tree_leaves(before)):
        np.testing.assert_allclose(got, want, rtol=1e-4)


def _nan_at_update(count):
    """A learning-rate schedule that is NaN for update number 10 (counted from 0)."""
    return jnp.where(count == 10, jnp.nan, 0.01)


@pytest.mark.parametrize("scan", [False, True])
def test_a_later_epoch_is_named_and_the_params_before_it_are_returned(scan):
    x, y = _data()
    # 16 examples a batch: 2 steps an epoch, so update 10 is epoch 5, step 0
    with pytest.raises(NonFiniteError, match="epoch 5, step 0") as info:
        fit(
            MODEL,
            _params(),
            x,
            y,
            optimizer=optax.sgd(_nan_at_update),
            epochs=8,
            batch_size=16,
            scan=scan,
        )
    clean = fit(
        MODEL, _params(), x, y, optimizer=optax.sgd(0.01), epochs=5, batch_size=16, scan=scan
    )
    for got, want in zip(
        jax.tree_util.tree_leaves(info.value.params), jax.tree_util.tree_leaves(clean.params)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_nan_example_is_found_in_the_step_that_holds_it():
    x, y = _data()
    x[13, 1] = np.nan
    perm = np.asarray(
        fn_data.shuffle(jax.random.fold_in(jax.random.fold_in(jax.random.key(4), 0), 0), N)
    )
    step = int(np.flatnonzero(perm == 13)[0]) // BATCH
    for scan in (False, True):
        with pytest.raises(NonFiniteError, match=f"epoch 0, step {step}") as info:
            fit(
                MODEL,
                _params(),
                x,
                y,
                optimizer=optax.sgd(0.01),
                batch_size=BATCH,
                key=4,
                scan=scan,
            )
        assert all_finite(info.value.params)


def test_skip_drops_exactly_the_bad_steps():
    x, y = _data()
    x[30, 0] = np.inf  # only the last batch of every epoch (no shuffling) is bad
    kw = dict(optimizer=optax.sgd(0.05), epochs=3, batch_size=BATCH, shuffle=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skipped = fit(MODEL, _params(), x, y, on_nonfinite="skip", **kw)
    messages = [str(w.message) for w in caught]
    assert messages == [f"fit: skipped 1 non-finite steps in epoch {e}" for e in range(3)]
    # the same as training on the three good batches alone
    good = fit(MODEL, _params(), x[:24], y[:24], **kw)
    for got, want in zip(
        jax.tree_util.tree_leaves(skipped.params), jax.tree_util.tree_leaves(good.params)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(skipped.history["loss"], good.history["loss"], rtol=1e-6)


def test_ignore_keeps_the_unchecked_behaviour():
    x, y = _data()
    result = fit(
        MODEL,
        _params(),
        x,
        y,
        optimizer=optax.sgd(1e6),
        epochs=2,
        batch_size=BATCH,
        on_nonfinite="ignore",
    )
    assert not np.isfinite(result.history["loss"][-1])
    assert not all_finite(result.params)


def test_guard_works_with_jit_disabled():
    x, y = _data()
    step, _ = _first_bad_step_by_hand(x, y, 1e6, jax.random.key(0))
    with jax.disable_jit(), pytest.raises(NonFiniteError, match=f"epoch 0, step {step}") as info:
        fit(MODEL, _params(), x, y, optimizer=optax.sgd(1e6), epochs=1, batch_size=BATCH, scan=True)
    assert all_finite(info.value.params)


@pytest.mark.parametrize("scan", [False, True])
def test_a_finite_run_is_plain_minibatch_sgd(scan):
    """The guard changes nothing while every step is finite: fit equals SGD written by hand."""
    x, y = _data()
    key, lr = jax.random.key(0), 0.05
    grad = jax.jit(jax.value_and_grad(lambda p, xb, yb: losses.mse(MODEL.apply(p, xb), yb)))
    params, history = _params(), []
    for epoch in range(2):
        order = fn_data.shuffle(jax.random.fold_in(jax.random.fold_in(key, epoch), 0), N)
        batch_losses = []
        for s in range(N // BATCH):
            idx = np.asarray(order)[s * BATCH : (s + 1) * BATCH]
            value, g = grad(params, x[idx], y[idx])
            params = jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g)
            batch_losses.append(float(value))
        history.append(np.mean(batch_losses))
    result = fit(
        MODEL, _params(), x, y, optimizer=optax.sgd(lr), epochs=2, batch_size=BATCH, scan=scan
    )
    for got, want in zip(
        jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(params)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.history["loss"], history, rtol=1e-5)
