"""Apply checks what init promised: params of the wrong keys, shapes or dtypes are refused by
name, eagerly and under ``jit`` (at trace time), for every layer with params; layers without
params refuse params; branches that would broadcast are refused."""

from __future__ import annotations

import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcnn import core, layers, models
from funcnn import functional as F
from funcnn.layers.params import check_params

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = jax.random.key(0)

shapes = st.lists(st.integers(1, 4), max_size=3).map(tuple)


@st.composite
def corrupted(draw, good: dict):
    """``(bad, error type, message pattern)``: ``good`` params with one thing wrong."""
    kinds = ["drop", "extra", "shape", "dtype", "not_dict"] if good else ["extra", "not_dict"]
    kind = draw(st.sampled_from(kinds))
    bad = dict(good)
    if kind == "not_dict":
        return draw(st.sampled_from([None, [], (1.0,), 3.0])), TypeError, "must be a dict"
    if kind == "extra":
        name = draw(st.sampled_from(["w", "b", "scale", "bias"]).filter(lambda n: n not in good))
        bad[name] = jnp.zeros(draw(shapes))
        return bad, ValueError, "unexpected" if good else "has no params"
    name = draw(st.sampled_from(sorted(good)))
    if kind == "drop":
        del bad[name]
        return bad, ValueError, f"missing {name!r}"
    if kind == "shape":
        shape = draw(shapes.filter(lambda s: s != good[name].shape))
        bad[name] = jnp.zeros(shape, good[name].dtype)
        return bad, ValueError, rf"\[{name!r}\] must have shape|last axis has size"
    dtype = draw(st.sampled_from([jnp.int32, jnp.uint8, jnp.complex64, jnp.bool_]))
    bad[name] = good[name].astype(dtype)
    return bad, TypeError, rf"\[{name!r}\] must be a floating-point array"


def assert_refused(fn, args, error, pattern, who):
    """``fn(*args)`` raises ``error`` starting with ``who`` and matching ``pattern``, eagerly
    and when traced by ``jit``."""
    for call in (fn, jax.jit(fn)):
        with pytest.raises(error, match=pattern) as info:
            call(*args)
        assert str(info.value).startswith(who), str(info.value)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.booleans(), st.data())
def test_dense_refuses_params_that_init_did_not_make(out, d, use_bias, data):
    layer = layers.Dense(out, use_bias=use_bias)
    _, good = layer.init(KEY, (-1, d))
    x = jnp.ones((2, d))
    assert layer.apply(good, x).shape == (2, out)  # the control
    bad, error, pattern = data.draw(corrupted(good))
    assert_refused(layer.apply, (bad, x), error, pattern, f"Dense({out})")


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ({"w": jnp.ones((2, 3)), "b": jnp.ones(1)}, r"params\['b'\] must have shape \(3,\)"),
        ({"w": jnp.ones((2, 3)), "b": jnp.ones((2, 3))}, r"params\['b'\] must have shape"),
        ({"w": jnp.ones((2, 3))}, "missing 'b'"),
        ({"b": jnp.ones(3)}, "missing 'w'"),
    ],
)
def test_dense_bias_that_would_broadcast_or_vanish_is_refused(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.Dense(3).apply(bad, jnp.ones((2, 2)))


@SETTINGS
@given(st.sampled_from([None, 2]), st.data())
def test_logistic_regression_names_itself(d, data):
    model = models.logistic_regression(d)
    _, good = model.init(KEY, (-1, 2))
    x = jnp.ones((3, 2))
    bad, error, pattern = data.draw(corrupted(good))
    assert_refused(model.apply, (bad, x), error, pattern, f"logistic_regression({d})")


NORMS = [
    partial(layers.LayerNorm),
    partial(layers.GroupNorm, 2),
]


@SETTINGS
@given(st.sampled_from(NORMS), st.booleans(), st.booleans(), st.data())
def test_stateless_norms_refuse_bad_params(make, use_scale, use_offset, data):
    layer = make(use_scale=use_scale, use_offset=use_offset)
    _, good = layer.init(KEY, (-1, 4))
    x = jnp.arange(8.0).reshape(2, 4)
    bad, error, pattern = data.draw(corrupted(good))
    assert_refused(layer.apply, (bad, x), error, pattern, layer.description)


@SETTINGS
@given(st.sampled_from(["params", "state"]), st.booleans(), st.data())
def test_batch_norm_refuses_bad_params_and_state(which, train, data):
    layer = layers.BatchNorm()
    _, params, state = layer.init_with_state(KEY, (-1, 3))
    x = jnp.arange(6.0).reshape(2, 3)
    trees = {"params": params, "state": state}
    bad, error, pattern = data.draw(corrupted(trees[which]))
    trees[which] = bad

    def call(p, s, x):
        return layer.apply_with_state(p, s, x, train=train)

    assert_refused(call, (trees["params"], trees["state"], x), error, pattern, "BatchNorm()")


PARAM_FREE = [
    layers.Tanh,
    layers.Relu,
    layers.Sigmoid,
    layers.Identity,
    layers.Softmax,
    layers.LogSoftmax,
    layers.Gelu,
    layers.LeakyRelu,
    partial(layers.Dropout, 0.5),
    layers.Flatten,
]


@SETTINGS
@given(st.sampled_from(PARAM_FREE), st.data())
def test_layers_without_params_refuse_params(make, data):
    layer = make()
    x = jnp.ones((2, 3))
    assert layer.apply({}, x).shape == (2, 3)  # the control
    bad, error, pattern = data.draw(corrupted({}))
    assert_refused(layer.apply, (bad, x), error, pattern, layer.description)


@pytest.mark.parametrize("make", PARAM_FREE)
def test_layers_without_params_refuse_a_tuple_of_branches(make):
    branches = (jnp.ones((2, 3)), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"expected one array as input, got a tuple of 2"):
        make().apply({}, branches)


@pytest.mark.parametrize("axis", [2, -3])
def test_softmax_axis_out_of_range_names_the_layer(axis):
    with pytest.raises(ValueError, match=rf"Softmax\({axis}\): axis {axis} is out of range"):
        layers.Softmax(axis).apply({}, jnp.ones((2, 3)))


def test_a_wrong_leaf_deep_in_a_network_is_named_by_its_path():
    net = models.mlp([4, 3])
    _, params = net.init(KEY, (-1, 2))
    params["hidden_0"]["b"] = jnp.zeros(1)
    with pytest.raises(ValueError, match=r"hidden_0: Dense\(4\): params\['b'\] must have shape"):
        jax.jit(net.apply)(params, jnp.ones((5, 2)))


def test_the_checks_cost_nothing_in_the_compiled_program():
    layer = layers.Dense(3)
    _, params = layer.init(KEY, (-1, 2))
    x = jnp.ones((4, 2))
    checked = jax.make_jaxpr(layer.apply)(params, x)
    bare = jax.make_jaxpr(F.dense)(x, params["w"], params["b"])
    assert [e.primitive for e in checked.eqns] == [e.primitive for e in bare.eqns]


@SETTINGS
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.data())
def test_fanin_sum_and_residual_refuse_shapes_that_would_broadcast(shape, data):
    shape = tuple(shape)
    ones = [data.draw(st.booleans()) for _ in shape]  # axes that become 1
    other = tuple(1 if one else d for one, d in zip(ones, shape))[data.draw(st.integers(0, 1)) :]
    if other == shape:
        other = (1, *shape)  # one more leading axis
    assert np.broadcast_shapes(shape, other)  # would broadcast silently without the check
    with pytest.raises(ValueError, match="fanin_sum: all inputs must have the same shape"):
        core.fanin_sum().apply({}, (jnp.ones(shape), jnp.ones(other)))
    # a body that changes the shape at apply: Flatten of (2, 1, d) gives (2, d)
    block = core.residual(layers.Flatten())
    d = shape[-1]
    with pytest.raises(ValueError, match=r"residual: x \+ f\(x\) needs equal shapes"):
        block.apply({}, jnp.ones((2, 1, d)))


def test_check_params_is_the_shared_helper():
    good = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    assert check_params(good, {"w": (2, 3), "b": (3,)}, "Conv(3, 1)") is good
    message = re.escape("Conv(3, 1): params['w'] must have shape (1, 1, 2, 3), got shape (2, 3)")
    with pytest.raises(ValueError, match=message):
        check_params(good, {"w": (1, 1, 2, 3), "b": (3,)}, "Conv(3, 1)")
    with pytest.raises(TypeError, match=r"params\['w'\] must be an array"):
        check_params({"w": "abc"}, {"w": (2,)}, "X")
    with pytest.raises(TypeError, match=r"state must be a dict holding \['mean'\]"):
        check_params(None, {"mean": (2,)}, "X", what="state")
