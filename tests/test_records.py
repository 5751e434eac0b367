"""The layer and model records, and one rule per kind of argument across the package."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import checks, core, layers, losses, models


def test_a_layer_is_its_pair_and_its_fields():
    dense = layers.Dense(3)
    init, apply = dense
    assert (init, apply) == (dense.init, dense.apply) == (dense[0], dense[1])
    assert len(dense) == 2
    fields = [f.name for f in dataclasses.fields(core.Layer)]
    assert fields == ["init", "apply", "kind", "name", "description", "children", "with_state"]
    assert (dense.kind, dense.name, dense.description, dense.children) == (
        "dense",
        None,
        "Dense(3)",
        (),
    )


def test_names_tell_layers_apart():
    dense = layers.Dense(3)
    hidden = fn.named("hidden", dense)
    assert hidden != dense and hidden.name == "hidden"
    assert hidden.replace(name=None) == dense
    assert fn.named("hidden", dense) == hidden  # equal fields, equal layers
    assert len({dense, hidden}) == 2  # hashable, by all fields


def test_layers_are_immutable():
    dense = layers.Dense(3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dense.name = "x"
    with pytest.raises(TypeError, match="callable"):
        core.Layer(1, dense.apply)


def test_combinators_list_their_children_in_order():
    net = fn.serial(fn.named("hidden", layers.Dense(4)), layers.Tanh(), layers.Dense(2))
    assert [(name, child.kind) for name, child in net.children] == [
        ("hidden", "dense"),
        ("tanh_0", "tanh"),
        ("dense_0", "dense"),
    ]


def test_a_model_is_a_layer_with_its_head():
    model = models.mlp([8, 3])
    assert isinstance(model, core.Model) and isinstance(model, core.Layer)
    assert (model.head, model.loss, model.metric) == (
        "softmax",
        losses.softmax_cross_entropy,
        losses.accuracy,
    )
    _, params = model.init(jax.random.key(0), (-1, 2))
    x = jnp.ones((4, 2))
    np.testing.assert_allclose(
        model.predict(params, x), jax.nn.softmax(model.apply(params, x)), rtol=1e-6
    )
    regression = models.mlp([8, 1], head="linear")
    assert regression.loss is losses.mse and regression.metric is None
    assert models.with_head(layers.Dense(1), "sigmoid").activation is jax.nn.sigmoid


def test_fit_takes_loss_and_metric_from_a_model_and_none_from_a_plain_layer():
    x, y = fn.data.xor(32)
    model = models.mlp([4, 2])
    _, params = model.init(jax.random.key(0), (-1, 2))
    result = fn.fit(model, params, x, y, optimizer=optax.sgd(0.1), epochs=1, progress=False)
    assert sorted(result.history) == ["accuracy", "loss"]
    plain = fn.serial(*[layer for _, layer in model.children])
    with pytest.raises(ValueError, match="loss"):
        fn.fit(plain, params, x, y, epochs=1, progress=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: layers.Dense(n),
        lambda n: layers.Conv(n, 3),
        lambda n: layers.Conv(2, n),
        lambda n: layers.Conv(2, 3, stride=n),
        lambda n: layers.MaxPool(n),
        lambda n: models.mlp([n, 2]),
        lambda n: fn.fanout(n),
    ],
)
def test_numpy_integers_count_as_ints_everywhere(make):
    assert make(np.int64(2)).description == make(2).description


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: layers.Conv(4, 3.0), "Conv(4, 3.0): kernel must be an int >= 1 or a pair"),
        (lambda: layers.Conv(4, 3, stride=True), "stride must be an int >= 1 or a pair"),
        (lambda: layers.Dense(True), "Dense: out must be a positive int, got True"),
        (lambda: layers.MaxPool((2, 0)), "window must be an int >= 1 or a pair"),
        (lambda: models.mlp([4, 0]), "mlp: every size in [4, 0] must be a positive int"),
        (lambda: fn.data.spirals(1), "spirals: n must be an int >= 2"),
    ],
)
def test_bad_counts_and_sizes_name_the_argument(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


def test_number_checks_bounds_and_kinds():
    assert checks.number(np.float32(0.25), "r", low=0, high=1) == 0.25
    for bad in (float("nan"), float("inf"), -0.1, 1.0):
        with pytest.raises(ValueError, match="r must be a number in"):
            checks.number(bad, "r", low=0, high=1, high_open=True)
    with pytest.raises(TypeError, match="slope must be a number"):
        checks.number("a", "slope")
    with pytest.raises(ValueError, match="rate must be a number"):
        checks.number("0.5", "rate", low=0, high=1)
