"""Losses and metrics refuse inputs outside their domain: a ValueError naming the loss when the
values are concrete, NaN (never a wrong number) when traced by ``jit``; empty arrays are
refused always; ``fit`` checks training and validation targets before it trains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcnn import data, losses, models, train

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = jax.random.key(0)

reals = st.floats(-1e3, 1e3, allow_nan=False, width=32)
# subnormal floats are excluded: XLA on a CPU flushes them to zero, which is in [0, 1]
anything = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False, width=32)
outside_unit = anything.filter(lambda v: not 0 <= v <= 1)


@st.composite
def with_one_outside(draw, inside, outside, n_max=6):
    """A float32 array of values from ``inside``, one of them from ``outside``."""
    values = draw(st.lists(inside, min_size=1, max_size=n_max))
    values[draw(st.integers(0, len(values) - 1))] = draw(outside)
    return np.asarray(values, np.float32)


def assert_refused_or_nan(loss, outputs, targets, pattern):
    with pytest.raises(ValueError, match=pattern):
        loss(outputs, targets)
    assert np.isnan(jax.jit(loss)(outputs, targets))


@SETTINGS
@given(with_one_outside(st.sampled_from([0.0, 1.0, 0.25]), outside_unit), st.booleans())
def test_binary_labels_outside_0_1_are_refused(labels, column):
    logits = np.linspace(-2, 2, len(labels), dtype=np.float32)
    logits = logits[:, None] if column else logits
    for loss in (losses.binary_cross_entropy, losses.accuracy):
        assert_refused_or_nan(loss, logits, labels, r"labels must be in \[0, 1\]")
    probs = jax.nn.sigmoid(logits)
    assert_refused_or_nan(
        losses.binary_cross_entropy_from_probs, probs, labels, r"labels must be in \[0, 1\]"
    )


@SETTINGS
@given(with_one_outside(st.floats(0, 1, width=32), outside_unit))
def test_probabilities_outside_0_1_are_refused_not_clipped(probs):
    labels = np.ones(len(probs), np.float32)
    assert_refused_or_nan(
        losses.binary_cross_entropy_from_probs, probs, labels, r"probs must be in \[0, 1\]"
    )


@SETTINGS
@given(st.integers(2, 5), st.data())
def test_class_labels_outside_the_classes_are_refused(c, draw):
    labels = draw.draw(
        st.lists(st.integers(0, c - 1), min_size=1, max_size=6).map(np.asarray)
    ).astype(np.int32)
    labels[draw.draw(st.integers(0, len(labels) - 1))] = draw.draw(
        st.one_of(st.integers(-100, -1), st.integers(c, c + 100))
    )
    logits = np.zeros((len(labels), c), np.float32)
    for loss in (losses.softmax_cross_entropy, losses.accuracy):
        assert_refused_or_nan(loss, logits, labels, rf"labels must be in \[0, {c}\)")


@SETTINGS
@given(st.integers(2, 4), st.integers(1, 4), st.data())
def test_targets_that_are_no_distribution_are_refused(c, n, draw):
    scores = np.reshape(draw.draw(st.lists(reals, min_size=n * c, max_size=n * c)), (n, c))
    targets = np.array(jax.nn.softmax(jnp.asarray(scores, jnp.float32), axis=-1))
    logits = np.zeros((n, c), np.float32)
    for loss in (losses.softmax_cross_entropy, losses.accuracy):  # the control: no error
        assert np.isfinite(loss(logits, targets))
    i, j = draw.draw(st.integers(0, n - 1)), draw.draw(st.integers(0, c - 1))
    change = draw.draw(st.sampled_from(["outside", "scaled"]))
    if change == "outside":
        targets[i, j] = draw.draw(outside_unit)
    else:
        targets[i] *= draw.draw(st.sampled_from([0.0, 0.5, 2.0, 3.0]))
    for loss in (losses.softmax_cross_entropy, losses.accuracy):
        assert_refused_or_nan(loss, logits, targets, "targets must be rows of probabilities")


def test_float_class_labels_must_be_whole_numbers():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        losses.accuracy(jnp.zeros((2, 3)), jnp.array([0.0, 1.5]))


EMPTY = [
    (losses.mse, (0,), (0,)),
    (losses.mse, (0, 3), (0, 3)),
    (losses.binary_cross_entropy, (0, 1), (0,)),
    (losses.binary_cross_entropy_from_probs, (0,), (0,)),
    (losses.softmax_cross_entropy, (0, 3), (0,)),
    (losses.softmax_cross_entropy, (0, 3), (0, 3)),
    (losses.accuracy, (0, 3), (0,)),
    (losses.accuracy, (0, 3), (0, 3)),
    (losses.accuracy, (0,), (0,)),
]


@pytest.mark.parametrize(("loss", "out_shape", "target_shape"), EMPTY)
def test_empty_arrays_are_refused_under_jit_too(loss, out_shape, target_shape):
    integer = len(target_shape) < len(out_shape) and loss is not losses.binary_cross_entropy
    targets = jnp.zeros(target_shape, jnp.int32 if integer else jnp.float32)
    outputs = jnp.zeros(out_shape)
    for call in (loss, jax.jit(loss)):
        with pytest.raises(ValueError, match="empty arrays.*mean over no examples"):
            call(outputs, targets)


@SETTINGS
@given(with_one_outside(st.sampled_from([0.0, 1.0]), outside_unit.filter(np.isfinite), 8))
def test_losses_inside_their_domain_stay_finite_and_match_the_formula(labels):
    labels = np.clip(labels, 0, 1)  # the same labels brought into the domain
    z = np.linspace(-3, 3, len(labels), dtype=np.float32)
    p = 1 / (1 + np.exp(-z.astype(np.float64)))
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    np.testing.assert_allclose(losses.binary_cross_entropy(z, labels), expected, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(losses.binary_cross_entropy)(z, labels), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- fit


def _fit(model, x, y, **kw):
    _, params = model.init(KEY, (-1, x.shape[1]))
    args = {"epochs": 1, "progress": False, "optimizer": optax.sgd(0.1), **kw}
    return train.fit(model, params, x, y, **args)


@settings(max_examples=5, deadline=None)
@given(st.sampled_from([2.0, -1.0, 1.5, np.nan]), st.booleans())
def test_fit_refuses_binary_targets_outside_0_1_before_training(bad, in_validation):
    x, y = data.blobs(40)
    y = y.astype(np.float32)
    y_bad = y.copy()
    y_bad[3] = bad
    model = models.logistic_regression()
    if in_validation:
        name, call = "y_val", lambda: _fit(model, x, y, validation_data=(x, y_bad))
    else:
        name, call = "y", lambda: _fit(model, x, y_bad)
    with pytest.raises(ValueError, match=rf"fit: {name} must be in \[0, 1\] for binary_cross"):
        call()


@settings(max_examples=5, deadline=None)
@given(st.sampled_from([-1, 3, 7]))
def test_fit_range_checks_validation_labels_like_training_labels(bad):
    x, y = _three_classes()
    y_val = y.copy()
    y_val[0] = bad
    with pytest.raises(ValueError, match=r"fit: y_val holds class labels in .* expected labels"):
        _fit(models.mlp([4, 3]), x, y, validation_data=(x, y_val))


def _three_classes():
    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    return x, (np.arange(30) % 3).astype(np.int32)


def test_fit_refuses_soft_targets_that_are_no_distribution():
    x, y = _three_classes()
    targets = np.eye(3, dtype=np.float32)[y]
    _fit(models.mlp([4, 3]), x, targets)  # the control: one-hot targets train
    targets[5] *= 2
    with pytest.raises(ValueError, match="fit: y must be rows of probabilities"):
        _fit(models.mlp([4, 3]), x, targets)


def test_check_targets_leaves_other_losses_alone():
    y = np.array([5.0, -3.0])
    losses.check_targets(losses.mse, y, (1, 1), "fit", "y")
    losses.check_targets(lambda z, t: jnp.mean(z), y, (1, 1), "fit", "y")
