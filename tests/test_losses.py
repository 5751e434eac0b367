"""Losses and accuracy against formulas written out in numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import losses

rng = np.random.default_rng(0)


def test_mse_is_mean_of_squared_errors_not_half():
    p, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    np.testing.assert_allclose(losses.mse(p, t), np.mean((p - t) ** 2), rtol=1e-6)


def test_mse_accepts_column_predictions_but_rejects_silent_broadcasts():
    p, t = rng.normal(size=(5, 1)), rng.normal(size=(5,))
    np.testing.assert_allclose(losses.mse(p, t), np.mean((p[:, 0] - t) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"mse: predictions of shape \(5, 2\) do not"):
        losses.mse(rng.normal(size=(5, 2)), t)


def _bce(z, y):
    p = 1 / (1 + np.exp(-z))
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_binary_cross_entropy_matches_formula():
    z, y = rng.normal(size=20), rng.integers(0, 2, 20).astype(float)
    np.testing.assert_allclose(losses.binary_cross_entropy(z, y), _bce(z, y), rtol=1e-5)
    np.testing.assert_allclose(losses.binary_cross_entropy(z[:, None], y), _bce(z, y), rtol=1e-5)
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(losses.binary_cross_entropy_from_probs(p, y), _bce(z, y), rtol=1e-4)


def test_binary_cross_entropy_stable_for_huge_logits():
    z = jnp.array([1e4, -1e4, 1e4, -1e4, 0.0])
    y = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0])
    # exact: the wrong-side logits cost |z| each, the right ones ~0, the zero logit log 2
    expected = (1e4 + 1e4 + np.log(2)) / 5
    value = losses.binary_cross_entropy(z, y)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    grad = jax.grad(losses.binary_cross_entropy)(z, y)
    assert np.all(np.isfinite(grad))
    # dL/dz = (σ(z) − y)/n
    np.testing.assert_allclose(grad, (np.array([1, 0, 1, 0, 0.5]) - np.asarray(y)) / 5, atol=1e-7)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_softmax_cross_entropy_integer_and_one_hot():
    z, y = rng.normal(size=(9, 4)), rng.integers(0, 4, 9)
    expected = -np.mean(_log_softmax(z)[np.arange(9), y])
    np.testing.assert_allclose(losses.softmax_cross_entropy(z, y), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.softmax_cross_entropy(z, np.eye(4)[y]), expected, rtol=1e-5)


@pytest.mark.parametrize("labels", [[0, 4, 1], [-1, 0, 2]])
def test_softmax_cross_entropy_labels_out_of_range(labels):
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        losses.softmax_cross_entropy(jnp.zeros((3, 4)), jnp.array(labels))


def test_softmax_cross_entropy_out_of_range_under_jit_is_nan_not_garbage():
    value = jax.jit(losses.softmax_cross_entropy)(jnp.zeros((3, 4)), jnp.array([0, 9, 1]))
    assert np.isnan(value)


def test_softmax_cross_entropy_shape_errors():
    with pytest.raises(ValueError, match="integer labels must have shape"):
        losses.softmax_cross_entropy(jnp.zeros((3, 4)), jnp.zeros((3, 1), int))
    with pytest.raises(ValueError, match="one-hot targets"):
        losses.softmax_cross_entropy(jnp.zeros((3, 4)), jnp.zeros((3, 3)))


def test_accuracy_multiclass_binary_and_one_hot():
    z = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    y = np.array([0, 1, 1, 0])
    assert float(losses.accuracy(z, y)) == 0.75
    assert float(losses.accuracy(z, np.eye(2)[y])) == 0.75
    logits = np.array([3.0, -1.0, 0.5, -2.0])
    labels = np.array([1, 0, 0, 0])
    assert float(losses.accuracy(logits, labels)) == 0.75
    assert float(losses.accuracy(logits[:, None], labels)) == 0.75
    assert float(losses.accuracy(1 / (1 + np.exp(-logits)), labels, threshold=0.5)) == 0.75


def test_softmax_cross_entropy_with_labels_captured_by_jit():
    labels = np.array([0, 2, 1])
    f = jax.jit(lambda z: losses.softmax_cross_entropy(z, labels))
    z = rng.normal(size=(3, 3))
    expected = -np.mean(_log_softmax(z)[np.arange(3), labels])
    np.testing.assert_allclose(f(z), expected, rtol=1e-5)
