"""jax.grad of the lecture's losses against gradients derived by hand, in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import losses, models


def _data(n=50, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, 2, n).astype(np.float64)


def test_logistic_regression_gradient_is_hand_derived(x64):
    x, y = _data()
    model = models.logistic_regression(4)
    _, params = model.init(jax.random.key(0), (-1, 4))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64) + 0.3, params)

    g = jax.grad(lambda p: model.loss(model.apply(p, x), y))(params)
    w, b = np.asarray(params["w"])[:, 0], float(params["b"][0])
    err = 1 / (1 + np.exp(-(x @ w + b))) - y  # σ(Xw + b) − y
    n = len(x)
    np.testing.assert_allclose(np.asarray(g["w"])[:, 0], x.T @ err / n, rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(g["b"][0]), err.sum() / n, rtol=0, atol=1e-10)


def test_mse_regression_gradient_is_hand_derived(x64):
    x, _ = _data(seed=1)
    y = np.random.default_rng(2).normal(size=len(x))
    model = fn.Dense(1, use_bias=False)
    w = np.random.default_rng(3).normal(size=(4, 1))
    g = jax.grad(lambda p: losses.mse(model.apply(p, x), y))({"w": jnp.asarray(w)})
    expected = 2 / len(x) * x.T @ (x @ w[:, 0] - y)  # (2/n) Xᵀ(Xw − y)
    np.testing.assert_allclose(np.asarray(g["w"])[:, 0], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_mlp_gradients_match_central_finite_differences(x64, activation):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 3)), rng.integers(0, 3, 8)
    model = models.mlp([5, 4, 3], activation, "softmax")
    _, params = model.init(jax.random.key(1), (-1, 3))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    # nudge biases off zero so ReLU kinks are not hit exactly
    params = jax.tree_util.tree_map(lambda a: a + 0.05, params)

    def loss(p):
        return model.loss(model.apply(p, x), y)

    grads = jax.grad(loss)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    g_flat, _ = jax.flatten_util.ravel_pytree(grads)
    eps = 1e-6
    numeric = np.empty(flat.size)
    for i in range(flat.size):
        e = np.zeros(flat.size)
        e[i] = eps
        numeric[i] = (loss(unravel(flat + e)) - loss(unravel(flat - e))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(g_flat), numeric, rtol=1e-6, atol=1e-8)


def test_one_full_batch_sgd_step_is_theta_minus_alpha_grad(x64):
    x, y = _data(seed=5)
    model = models.logistic_regression()
    _, params = model.init(jax.random.key(2), (-1, 4))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    alpha = 0.7
    result = fn.fit(
        model, params, x, y, optimizer=optax.sgd(alpha), epochs=1, batch_size=None, progress=False
    )
    w, b = np.asarray(params["w"])[:, 0], float(params["b"][0])
    err = 1 / (1 + np.exp(-(x @ w + b))) - y
    np.testing.assert_allclose(
        np.asarray(result.params["w"])[:, 0], w - alpha * x.T @ err / len(x), atol=1e-12
    )
    np.testing.assert_allclose(float(result.params["b"][0]), b - alpha * err.mean(), atol=1e-12)
    # the input params are untouched (fit copies before donating buffers)
    assert np.asarray(params["w"])[:, 0].tolist() == w.tolist()
