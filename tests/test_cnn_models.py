"""LeNet-5 and AlexNet against the papers' shapes and hand counts; summary and param_count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import models
from funcnn.core import fanin_sum, fanout, named, parallel, residual, serial
from funcnn.inspect import feature_maps, intermediates, param_count, summary
from funcnn.layers import Conv, Dense, Flatten, Relu


def conv_params(f: int, c_in: int, c_out: int, groups: int = 1) -> int:
    """F · F · (C_in / groups) · C_out weights plus C_out biases."""
    return f * f * (c_in // groups) * c_out + c_out


def dense_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


ALEXNET_IMAGE = (-1, 227, 227, 3)
# Krizhevsky et al. (2012), figure 2, single-tower: every conv / pool / dense output
ALEXNET_SHAPES = [
    ("conv", (55, 55, 96)),
    ("max_pool", (27, 27, 96)),
    ("conv", (27, 27, 256)),
    ("max_pool", (13, 13, 256)),
    ("conv", (13, 13, 384)),
    ("conv", (13, 13, 384)),
    ("conv", (13, 13, 256)),
    ("max_pool", (6, 6, 256)),
    ("dense", (4096,)),
    ("dense", (4096,)),
    ("dense", (1000,)),
]


def kinds_of(model):
    return {name: layer.kind for name, layer in model.children}


def test_alexnet_shapes_follow_the_paper():
    model = models.alexnet()
    s = summary(model, ALEXNET_IMAGE)
    kinds = kinds_of(model)
    main = [(kinds[r.path], r.output_shape[1:]) for r in s.rows if kinds[r.path] in
            ("conv", "max_pool", "dense")]  # fmt: skip
    assert main == ALEXNET_SHAPES
    assert s.output_shape == (-1, 1000)
    assert all(r.output_shape[0] == -1 for r in s.rows)


def test_alexnet_layers_relu_lrn_overlapping_pooling_dropout():
    model = models.alexnet()
    sequence = [layer.kind for _, layer in model.children]
    described = [layer.description for _, layer in model.children]
    # conv → ReLU → LRN → 3×3/2 pool, twice; dropout 0.5 after fc6 and fc7
    assert sequence[:8] == ["conv", "relu", "lrn", "max_pool"] * 2
    assert described.count("MaxPool(3, stride=2)") == 3
    assert sequence.count("relu") == 7 and sequence.count("lrn") == 2
    assert described.count("Dropout(0.5)") == 2
    names = [name for name, _ in model.children]
    for dense in ("fc6", "fc7"):
        i = names.index(dense)
        assert sequence[i + 1 : i + 3] == ["relu", "dropout"]
    assert model.head == "softmax"


def test_alexnet_parameter_count():
    by_hand = (
        conv_params(11, 3, 96)
        + conv_params(5, 96, 256)
        + conv_params(3, 256, 384)
        + conv_params(3, 384, 384)
        + conv_params(3, 384, 256)
        + dense_params(6 * 6 * 256, 4096)
        + dense_params(4096, 4096)
        + dense_params(4096, 1000)
    )
    assert by_hand == 62_378_344  # the published single-tower count
    s = summary(models.alexnet(), ALEXNET_IMAGE)
    assert s.total == by_hand
    assert sum(r.params for r in s.rows) == by_hand
    assert s.bytes == 4 * by_hand
    text = str(s)
    assert "Total params: 62,378,344" in text
    for name in ("conv1", "conv5", "fc6", "fc8", "(N, 55, 55, 96)", "(N, 6, 6, 256)"):
        assert name in text


def test_alexnet_two_towers_has_the_papers_smaller_count():
    # conv2, conv4, conv5 see only their own tower's half of the channels
    by_hand = (
        conv_params(11, 3, 96)
        + conv_params(5, 96, 256, groups=2)
        + conv_params(3, 256, 384)
        + conv_params(3, 384, 384, groups=2)
        + conv_params(3, 384, 256, groups=2)
        + dense_params(9216, 4096)
        + dense_params(4096, 4096)
        + dense_params(4096, 1000)
    )
    s = summary(models.alexnet(two_towers=True), ALEXNET_IMAGE)
    assert s.total == by_hand == 60_965_224
    assert [r.output_shape for r in s.rows] == [
        r.output_shape for r in summary(models.alexnet(), ALEXNET_IMAGE).rows
    ]


def test_alexnet_summary_allocates_no_weights():
    before = {id(a) for a in jax.live_arrays()}
    summary(models.alexnet(), ALEXNET_IMAGE)
    new = [a for a in jax.live_arrays() if id(a) not in before]
    assert not any(a.size >= 1000 for a in new)


def test_alexnet_apply_shapes_in_eval_and_train_modes():
    model = models.alexnet(num_classes=10)
    _, params = jax.eval_shape(lambda k: model.init(k, ALEXNET_IMAGE), jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, 227, 227, 3), jnp.float32)
    assert jax.eval_shape(model.apply, params, x).shape == (2, 10)
    train = jax.eval_shape(lambda p, x: model.apply(p, x, key=jax.random.key(0), train=True),
                           params, x)  # fmt: skip
    assert train.shape == (2, 10)
    with pytest.raises(ValueError, match="dropout.*PRNG key"):
        jax.eval_shape(lambda p, x: model.apply(p, x, train=True), params, x)


def test_lenet5_shapes_and_count_by_hand():
    model = models.lenet5()
    s = summary(model, (-1, 32, 32, 1))
    shapes = {r.path: r.output_shape[1:] for r in s.rows}
    assert shapes["c1"] == (28, 28, 6) and shapes["s2"] == (14, 14, 6)
    assert shapes["c3"] == (10, 10, 16) and shapes["s4"] == (5, 5, 16)
    assert (shapes["c5"], shapes["f6"], shapes["output"]) == ((120,), (84,), (10,))
    by_hand = (
        conv_params(5, 1, 6)
        + conv_params(5, 6, 16)
        + dense_params(5 * 5 * 16, 120)
        + dense_params(120, 84)
        + dense_params(84, 10)
    )
    assert s.total == by_hand == 61_706
    _, params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (-1, 32, 32, 1))
    assert param_count(params) == by_hand
    assert jax.jit(model.apply)(params, jnp.ones((2, 32, 32, 1))).shape == (2, 10)


def test_lenet5_same_padding_fits_the_8x8_digits():
    s = summary(models.lenet5(activation="relu", pool="max", padding="SAME"), (-1, 8, 8, 1))
    shapes = {r.path: r.output_shape[1:] for r in s.rows}
    assert (shapes["c1"], shapes["s2"], shapes["c3"], shapes["s4"]) == (
        (8, 8, 6),
        (4, 4, 6),
        (4, 4, 16),
        (2, 2, 16),
    )
    assert s.total == conv_params(5, 1, 6) + conv_params(5, 6, 16) + dense_params(
        2 * 2 * 16, 120
    ) + dense_params(120, 84) + dense_params(84, 10)


def test_lenet5_with_more_smaller_filters_counts_by_hand():
    model = models.lenet5(padding="SAME", filters=(16, 32), kernel=3)
    s = summary(model, (-1, 8, 8, 1))
    assert s.rows[[r.path for r in s.rows].index("s4")].output_shape == (-1, 2, 2, 32)
    by_hand = (
        conv_params(3, 1, 16)
        + conv_params(3, 16, 32)
        + dense_params(2 * 2 * 32, 120)
        + dense_params(120, 84)
        + dense_params(84, 10)
    )
    assert s.total == by_hand == 31_294


def test_lenet5_and_alexnet_reject_bad_arguments():
    with pytest.raises(ValueError, match="lenet5: activation"):
        models.lenet5(activation="swish")
    with pytest.raises(ValueError, match="lenet5: pool"):
        models.lenet5(pool="median")
    with pytest.raises(ValueError, match="lenet5: filters"):
        models.lenet5(filters=(6,))
    with pytest.raises(ValueError, match="alexnet: num_classes"):
        models.alexnet(num_classes=0)
    with pytest.raises(ValueError, match=r"c3: Conv\(16, 5\).*larger than the padded input"):
        models.lenet5().init(jax.random.key(0), (-1, 8, 8, 1))


def test_the_lectures_perceptron_against_convolution():
    # a 32×32 grayscale image: 1024 inputs into 1024 units, against sixteen 5×5 filters
    image = (-1, 32, 32, 1)
    dense = summary(serial(Flatten(), Dense(1024, use_bias=False)), image)
    conv = summary(serial(Conv(16, 5, padding="SAME", use_bias=False)), image)
    assert dense.total == 1024 * 1024 == 1_048_576
    assert conv.total == 5 * 5 * 1 * 16 == 400
    assert "1,048,576" in str(dense) and "Total params: 400" in str(conv)
    assert conv.output_shape == (-1, 32, 32, 16)


def test_param_count_by_hand():
    params = {"a": {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}, "c": [jnp.zeros((2, 2, 2))]}
    assert param_count(params) == 3 * 4 + 4 + 8
    assert param_count({}) == 0
    shapes = jax.eval_shape(lambda: params)
    assert param_count(shapes) == 24


def test_summary_walks_parallel_and_residual_children():
    branches = serial(
        fanout(2),
        parallel(Conv(4, 3, padding=1), Conv(4, 1)),
        fanin_sum(),
        named("block", residual(Conv(4, 3, padding="SAME"), Relu())),
        Flatten(),
    )
    s = summary(branches, (-1, 6, 6, 2))
    rows = {r.path: r for r in s.rows}
    assert rows["parallel_0"].output_shape == ((-1, 6, 6, 4), (-1, 6, 6, 4))
    assert rows["parallel_0/conv_0"].params == conv_params(3, 2, 4)
    assert rows["parallel_0/conv_1"].params == conv_params(1, 2, 4)
    assert rows["parallel_0/conv_0"].depth == 1
    assert rows["block"].params == rows["block/body"].params == conv_params(3, 4, 4)
    assert rows["block/body/conv_0"].output_shape == (-1, 6, 6, 4)
    assert rows["flatten_0"].output_shape == (-1, 144)
    _, params = jax.jit(branches.init, static_argnums=1)(jax.random.key(0), (-1, 6, 6, 2))
    by_hand = conv_params(3, 2, 4) + conv_params(1, 2, 4) + conv_params(3, 4, 4)
    assert s.total == param_count(params) == by_hand
    assert "block/body/conv_0" in str(s)


def test_summary_of_a_single_layer_and_bad_model():
    s = summary(Dense(3), (-1, 5))
    assert [(r.path, r.output_shape, r.params) for r in s.rows] == [("dense", (-1, 3), 18)]
    with pytest.raises(TypeError, match="summary: model must be a Layer"):
        summary(lambda x: x, (-1, 5))


def test_intermediates_and_feature_maps():
    model = models.lenet5(activation="relu", pool="max", padding="SAME")
    _, params = model.init(jax.random.key(0), (-1, 8, 8, 1))
    x = jnp.asarray(np.random.default_rng(0).random((1, 8, 8, 1)), jnp.float32)
    steps = intermediates(model, params, x)
    assert [p for p, _, _ in steps] == [name for name, _ in model.children]
    np.testing.assert_allclose(steps[-1][2], model.apply(params, x), rtol=1e-6)
    # the first feature maps are the convolution written out with numpy
    w, b = np.asarray(params["c1"]["w"]), np.asarray(params["c1"]["b"])
    xp = np.pad(np.asarray(x)[0, :, :, 0], 2)
    c1 = np.stack(
        [
            [[np.sum(xp[i : i + 5, j : j + 5] * w[:, :, 0, o]) + b[o] for o in range(6)]
             for j in range(8)]
            for i in range(8)
        ]
    )  # fmt: skip
    maps = feature_maps(model, params, x)
    assert [(p, m.shape) for p, m in maps] == [("c1", (1, 8, 8, 6)), ("c3", (1, 4, 4, 16))]
    np.testing.assert_allclose(maps[0][1][0], c1, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="intermediates: expected a serial chain"):
        intermediates(Dense(2), {}, x)
