"""Shapes, params layout and behaviour of every core layer and combinator."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import layers as L

ELEMENTWISE = {
    "Tanh": (L.Tanh(), np.tanh),
    "Relu": (L.Relu(), lambda x: np.maximum(x, 0)),
    "Sigmoid": (L.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    "Softmax": (L.Softmax(), lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
    "LogSoftmax": (
        L.LogSoftmax(),
        lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True)),
    ),
    "LeakyRelu": (L.LeakyRelu(0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    "Identity": (L.Identity(), lambda x: x),
    "Gelu": (
        L.Gelu(),
        lambda x: x * 0.5 * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2))),
    ),
}

ALL_LAYERS = {
    "Dense": L.Dense(7),
    "Dropout": L.Dropout(0.3),
    **{k: v[0] for k, v in ELEMENTWISE.items()},
    "serial": fn.serial(L.Dense(4), L.Tanh(), L.Dense(3)),
    "residual": fn.residual(L.Dense(5), L.Relu()),
    "residual_shortcut": fn.residual(L.Dense(8), shortcut=L.Dense(8)),
    "fan": fn.serial(fn.fanout(2), fn.parallel(L.Dense(3), L.Dense(2)), fn.fanin_concat()),
    "fan_sum": fn.serial(fn.fanout(2), fn.parallel(L.Dense(5), L.Identity()), fn.fanin_sum()),
    "mlp": fn.models.mlp([6, 6, 3]),
    "logreg": fn.models.logistic_regression(5),
}


@pytest.mark.parametrize("name", sorted(ALL_LAYERS))
@pytest.mark.parametrize("jit", [False, True])
def test_init_shape_equals_apply_shape(name, jit, key):
    layer = ALL_LAYERS[name]
    out_shape, params = layer.init(key, (-1, 5))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    apply = jax.jit(layer.apply) if jit else layer.apply
    y = apply(params, x)
    assert out_shape[0] == -1
    assert y.shape == (4,) + tuple(out_shape[1:])
    # train mode with a key gives the same shape
    y_train = layer.apply(params, x, key=jax.random.key(2), train=True)
    assert y_train.shape == y.shape


@pytest.mark.parametrize("name", sorted(ALL_LAYERS))
def test_init_works_under_eval_shape(name, key):
    layer = ALL_LAYERS[name]
    shape, params = layer.init(key, (-1, 5))
    # the output shape is static Python data; eval_shape traces only the weight draws
    _, abstract = jax.eval_shape(functools.partial(layer.init, input_shape=(-1, 5)), key)
    leaves = jax.tree_util.tree_leaves(params)
    abstract_leaves = jax.tree_util.tree_leaves(abstract)
    assert [(a.shape, a.dtype) for a in leaves] == [(a.shape, a.dtype) for a in abstract_leaves]


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_activation_values_against_numpy(name):
    layer, reference = ELEMENTWISE[name]
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(3, 8)
    _, params = layer.init(jax.random.key(0), (3, 8))
    assert params == {}
    np.testing.assert_allclose(
        layer.apply(params, x),
        reference(x.astype(np.float64)),
        rtol=2e-3 if name == "Gelu" else 1e-5,
        atol=1e-6,
    )


def test_dense_computes_affine_map(key):
    shape, params = L.Dense(3).init(key, (-1, 4))
    assert shape == (-1, 3)
    assert params["w"].shape == (4, 3) and params["b"].shape == (3,)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    params = {"w": np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "b": np.array([1, 2, 3.0])}
    expected = x @ params["w"] + params["b"]
    np.testing.assert_allclose(L.Dense(3).apply(params, x), expected, rtol=1e-6)


def test_dense_without_bias(key):
    _, params = L.Dense(2, use_bias=False).init(key, (-1, 3))
    assert set(params) == {"w"}


def test_dense_initializers_selectable(key):
    _, p0 = L.Dense(64, w_init="zeros", b_init="ones").init(key, (-1, 32))
    assert np.all(np.asarray(p0["w"]) == 0) and np.all(np.asarray(p0["b"]) == 1)
    _, p1 = L.Dense(400, w_init="lecun_normal").init(key, (-1, 400))
    # N(0, 1/fan_in): sample variance of 160,000 draws within a few percent of 1/400
    assert abs(float(jnp.var(p1["w"])) * 400 - 1) < 0.03
    _, p2 = L.Dense(300, w_init="xavier_uniform").init(key, (-1, 500))
    a = np.sqrt(6 / 800)
    assert float(jnp.max(jnp.abs(p2["w"]))) <= a
    assert abs(float(jnp.var(p2["w"])) - a**2 / 3) < 0.03 * a**2 / 3
    _, p3 = L.Dense(400, w_init="he_normal").init(key, (-1, 400))
    assert abs(float(jnp.var(p3["w"])) * 400 / 2 - 1) < 0.03


def test_serial_names_are_stable_and_param_free_layers_add_no_key(key):
    net = fn.serial(L.Dense(4), L.Tanh(), L.Dense(4), L.Relu(), fn.named("logits", L.Dense(2)))
    _, params = net.init(key, (-1, 3))
    assert sorted(params) == ["dense_0", "dense_1", "logits"]
    assert params["logits"]["w"].shape == (4, 2)


def test_named_user_names_and_auto_names_do_not_collide(key):
    net = fn.serial(L.Dense(2), fn.named("dense_0", L.Dense(3)))
    _, params = net.init(key, (-1, 3))
    assert params["dense_0"]["w"].shape == (2, 3)
    assert params["dense_1"]["w"].shape == (3, 2)


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        fn.serial(fn.named("a", L.Dense(2)), fn.named("a", L.Dense(2)))


def test_serial_rejects_uncalled_constructor():
    with pytest.raises(TypeError, match="parentheses"):
        fn.serial(L.Dense(2), L.Tanh)


def test_serial_equals_manual_composition(key):
    net = fn.serial(fn.named("hidden", L.Dense(5)), L.Tanh(), fn.named("out", L.Dense(2)))
    _, p = net.init(key, (-1, 3))
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    h = np.tanh(x @ p["hidden"]["w"] + p["hidden"]["b"])
    np.testing.assert_allclose(net.apply(p, x), h @ p["out"]["w"] + p["out"]["b"], rtol=1e-5)


def test_residual_is_x_plus_f_x(key):
    body = L.Dense(4)
    net = fn.residual(body)
    _, p = net.init(key, (-1, 4))
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(net.apply(p, x), x + x @ p["w"] + p["b"], rtol=1e-5, atol=1e-6)


def test_residual_shape_mismatch_is_a_clear_error(key):
    with pytest.raises(ValueError, match=r"residual.*shortcut"):
        fn.residual(L.Dense(3)).init(key, (-1, 4))


def test_residual_with_projection_shortcut(key):
    net = fn.residual(L.Dense(3), L.Tanh(), shortcut=L.Dense(3))
    shape, p = net.init(key, (-1, 4))
    assert shape == (-1, 3) and "shortcut" in p
    x = np.ones((2, 4), np.float32)
    body = np.tanh(x @ p["dense_0"]["w"] + p["dense_0"]["b"])
    skip = x @ p["shortcut"]["w"] + p["shortcut"]["b"]
    np.testing.assert_allclose(net.apply(p, x), skip + body, rtol=1e-5)


def test_parallel_fanout_concat(key):
    net = fn.serial(fn.fanout(2), fn.parallel(L.Dense(3), L.Dense(2)), fn.fanin_concat())
    shape, p = net.init(key, (-1, 4))
    assert shape == (-1, 5)
    x = np.ones((2, 4), np.float32)
    pp = p["parallel_0"]
    expected = np.concatenate(
        [x @ pp["dense_0"]["w"] + pp["dense_0"]["b"], x @ pp["dense_1"]["w"] + pp["dense_1"]["b"]],
        axis=1,
    )
    np.testing.assert_allclose(net.apply(p, x), expected, rtol=1e-5)


def test_fanin_sum_rejects_unequal_shapes(key):
    net = fn.serial(fn.fanout(2), fn.parallel(L.Dense(3), L.Dense(2)), fn.fanin_sum())
    with pytest.raises(ValueError, match="fanin_sum"):
        net.init(key, (-1, 4))


def test_dense_wrong_width_at_apply_names_the_layer(key):
    net = fn.serial(L.Dense(4), L.Tanh(), fn.named("hidden", L.Dense(3)))
    _, p = net.init(key, (-1, 5))
    with pytest.raises(ValueError, match=r"dense_0: Dense\(4\).*size 5.*\(2, 6\)"):
        net.apply(p, jnp.ones((2, 6)))
    with pytest.raises(ValueError, match=r"dense_0"):
        jax.jit(net.apply)(p, jnp.ones((2, 6)))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "3"])
def test_dense_bad_size(bad):
    with pytest.raises(ValueError, match="Dense: out must be a positive int"):
        L.Dense(bad)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5"])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate must be a number in \[0, 1\)"):
        L.Dropout(rate)


def test_bad_input_shape_to_init(key):
    with pytest.raises(TypeError, match="input_shape"):
        L.Dense(3).init(key, 5)
    with pytest.raises(ValueError, match="rank"):
        L.Dense(3).init(key, ())


def test_unknown_initializer_name():
    with pytest.raises(ValueError, match="w_init: unknown initializer 'xavir'"):
        L.Dense(3, w_init="xavir")


def test_unexpected_param_keys(key):
    net = fn.serial(L.Dense(2))
    _, p = net.init(key, (-1, 2))
    with pytest.raises(ValueError, match="match no child"):
        net.apply({**p, "extra": {}}, jnp.ones((1, 2)))


# --------------------------------------------------------------------------- dropout


def test_dropout_statistics():
    rate, n = 0.3, 200_000
    x = jnp.ones((n,))
    y = L.Dropout(rate).apply({}, x, key=jax.random.key(7), train=True)
    kept = float(jnp.mean(y != 0))
    # binomial: std of the kept fraction is sqrt(p(1-p)/n) ~ 0.001; allow 5 sigma
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(kept - (1 - rate)) < 5 * sigma
    # kept values are scaled by 1/(1-rate), so the mean is preserved
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / (1 - rate)], rtol=1e-6)
    assert abs(float(jnp.mean(y)) - 1.0) < 5 * sigma / (1 - rate)


def test_dropout_eval_is_identity_and_train_needs_key():
    x = jnp.arange(10.0)
    layer = L.Dropout(0.5)
    np.testing.assert_array_equal(layer.apply({}, x), x)
    np.testing.assert_array_equal(layer.apply({}, x, train=False, key=jax.random.key(0)), x)
    with pytest.raises(ValueError, match=r"Dropout\(0.5\): train=True needs a PRNG key"):
        layer.apply({}, x, train=True)


def test_dropout_in_serial_uses_different_masks_per_layer():
    net = fn.serial(L.Dropout(0.5), fn.named("second", L.Dropout(0.5)))
    x = jnp.ones((1000,))
    key = jax.random.key(3)
    a = fn.functional.dropout(jax.random.fold_in(key, 0), x, 0.5)
    y = net.apply({}, x, key=key, train=True)
    b = fn.functional.dropout(jax.random.fold_in(key, 1), a, 0.5)
    np.testing.assert_array_equal(y, b)
