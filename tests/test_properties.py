"""Property tests over random stacks of layers, and checkpoint round trips of random trees."""

from __future__ import annotations

import os
import tempfile
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcnn import checkpoint, core, layers
from tests.reliability_support import all_finite, assert_trees_identical

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ACTIVATIONS = [
    layers.Tanh,
    layers.Relu,
    layers.Sigmoid,
    layers.Identity,
    layers.Softmax,
    layers.LogSoftmax,
    partial(layers.Gelu, True),
    partial(layers.LeakyRelu, 0.1),
]


@st.composite
def stacks(draw):
    """A random ``serial`` network and its input width; returns ``(net, d_in)``."""
    d_in = width = draw(st.integers(1, 4))
    parts = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["dense", "activation", "dropout", "residual", "branches"]))
        if kind == "dense":
            width = draw(st.integers(1, 5))
            dense = layers.Dense(
                width, w_init=draw(st.sampled_from(["lecun_normal", "he_uniform"]))
            )
            parts.append(core.named(f"layer{i}", dense) if draw(st.booleans()) else dense)
        elif kind == "activation":
            parts.append(draw(st.sampled_from(ACTIVATIONS))())
        elif kind == "dropout":
            parts.append(layers.Dropout(draw(st.sampled_from([0.0, 0.25, 0.5]))))
        elif kind == "residual" and draw(st.booleans()):
            parts.append(core.residual(layers.Dense(width), layers.Tanh()))
        elif kind == "residual":
            width = draw(st.integers(1, 5))
            parts.append(core.residual(layers.Dense(width), shortcut=layers.Dense(width)))
        else:
            a, b = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            join = draw(st.sampled_from(["concat", "sum"]))
            if join == "sum":
                b = a
            branches = core.parallel(layers.Dense(a), core.serial(layers.Dense(b), layers.Relu()))
            fanin = core.fanin_concat() if join == "concat" else core.fanin_sum()
            parts += [core.fanout(2), branches, fanin]
            width = a + b if join == "concat" else a
    return core.serial(*parts), d_in


@SETTINGS
@given(stacks(), st.integers(1, 3), st.integers(0, 2**16))
def test_init_shape_jit_and_gradients(net_and_width, batch, seed):
    net, d_in = net_and_width
    k_init, k_x, k_drop = jax.random.split(jax.random.key(seed), 3)
    out_shape, params = net.init(k_init, (-1, d_in))
    x = jax.random.normal(k_x, (batch, d_in))

    def forward(p, x):
        y_eval = net.apply(p, x)
        y_train = net.apply(p, x, key=k_drop, train=True)
        grads = jax.grad(lambda q: jnp.sum(net.apply(q, x, key=k_drop, train=True) ** 2))(p)
        return y_eval, y_train, grads

    y_eval, y_train = net.apply(params, x), net.apply(params, x, key=k_drop, train=True)
    assert out_shape[0] == -1
    assert y_eval.shape == y_train.shape == (batch, *out_shape[1:])

    jit_eval, jit_train, grads = jax.jit(forward)(params, x)
    np.testing.assert_allclose(jit_eval, y_eval, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jit_train, y_train, rtol=1e-5, atol=1e-6)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    assert all_finite(grads)


DTYPES = [np.float32, np.float64, np.int32, np.int8, np.uint16, np.bool_, jnp.bfloat16]
names = st.text("abcxyz_", min_size=1, max_size=4)
arrays = st.builds(
    lambda shape, dtype, seed: (np.random.default_rng(seed).normal(size=shape) * 50).astype(dtype),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.sampled_from(DTYPES),
    st.integers(0, 1000),
)
trees = st.recursive(
    arrays | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True),
    lambda children: st.dictionaries(names, children, max_size=3) | st.lists(children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(trees)
def test_checkpoint_round_trip_of_random_trees(tree):
    with tempfile.TemporaryDirectory() as folder:
        path = checkpoint.save(os.path.join(folder, "t.npz"), tree)
        back = checkpoint.load(path, like=tree)
        assert os.listdir(folder) == ["t.npz"]
    assert_trees_identical(back, tree)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(tree)):
        assert type(a) is type(b)
