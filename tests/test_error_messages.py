"""Errors name what was wrong: input dtypes (Dense and convolution alike), int seeds, fit's and
evaluate's arguments, the command line's port, the playground's JSON, non-finite params."""

from __future__ import annotations

import http.client
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcnn
from funcnn import checks, layers, losses, models, train
from funcnn import functional as F
from funcnn.__main__ import main

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = jax.random.key(0)

REAL_INPUTS = [jnp.bool_, jnp.uint8, jnp.int8, jnp.int32, jnp.float16, jnp.bfloat16, jnp.float32]
PARAM_DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32]


@SETTINGS
@given(
    st.sampled_from(REAL_INPUTS),
    st.sampled_from(PARAM_DTYPES),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2**31 - 1),
)
def test_dense_and_convolution_promote_inputs_alike(x_dtype, w_dtype, c, o, seed):
    """A 1×1 convolution is a dense layer over the channels: same dtype, same values."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = (jax.random.uniform(k1, (2, 3, 3, c)) * 4).astype(x_dtype)
    w = jax.random.normal(k2, (c, o)).astype(w_dtype)
    by_dense, by_conv = F.dense(x, w), F.conv2d(x, w[None, None])
    assert by_dense.dtype == by_conv.dtype == jnp.result_type(x, w)
    tol = {jnp.float16: 1e-2, jnp.bfloat16: 5e-2}.get(by_dense.dtype.type, 1e-5)
    np.testing.assert_allclose(
        np.asarray(by_conv, np.float32), np.asarray(by_dense, np.float32), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("x_dtype", [jnp.int32, jnp.float16])
def test_the_cpu_kernels_see_the_promoted_operands_too(x_dtype, c):
    """Inside funcnn.jit the CPU kernels (one channel, few channels) compute what lax does on
    the operands promoted first."""
    x = (jnp.arange(2 * 6 * 6 * c) % 5).reshape(2, 6, 6, c).astype(x_dtype)
    w = jax.random.normal(KEY, (3, 3, c, 2))
    promoted = x.astype(jnp.float32)
    expected = jax.lax.conv_general_dilated(
        promoted, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    for conv in (F.conv2d, funcnn.jit(F.conv2d)):
        got = conv(x, w)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_dtype", [jnp.int32, jnp.float16, jnp.bfloat16, jnp.uint8])
def test_dense_and_conv_layers_accept_the_same_inputs(x_dtype):
    dense, conv = layers.Dense(2), layers.Conv(2, 1)
    _, dp = dense.init(KEY, (-1, 3))
    _, cp = conv.init(KEY, (-1, 4, 4, 3))
    x = jnp.ones((1, 4, 4, 3), x_dtype)
    assert dense.apply(dp, x).dtype == conv.apply(cp, x).dtype == jnp.float32


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_inputs_are_a_clear_error_in_both(dtype):
    x = np.ones((1, 4, 4, 3), dtype)
    dense, conv = layers.Dense(2), layers.Conv(2, 1)
    _, dp = dense.init(KEY, (-1, 3))
    _, cp = conv.init(KEY, (-1, 4, 4, 3))
    with pytest.raises(TypeError, match=r"Dense\(2\): inputs: expected real arrays.*complex"):
        dense.apply(dp, x)
    with pytest.raises(TypeError, match=r"conv2d: expected real arrays.*complex"):
        conv.apply(cp, x)
    with pytest.raises(TypeError, match="complex numbers are not supported"):
        F.conv2d(x, jnp.ones((1, 1, 3, 2)))


def test_conv_with_a_float_kernel_size_names_the_argument():
    with pytest.raises(ValueError, match=r"Conv\(4, 3\.0\): kernel must be an int"):
        layers.Conv(4, 3.0)


INITS = [
    (lambda: layers.Dense(3), (-1, 2)),
    (lambda: layers.Dense(3, use_bias=False, b_init="normal"), (-1, 4)),
    (lambda: models.logistic_regression(2), (-1, 2)),
    (lambda: layers.LayerNorm(), (-1, 3)),
    (lambda: layers.GroupNorm(1), (-1, 3)),
    (lambda: layers.Tanh(), (-1, 3)),
    (lambda: layers.Dropout(0.5), (-1, 3)),
]


@SETTINGS
@given(st.sampled_from(INITS), st.integers(0, 2**31 - 1))
def test_layers_take_an_int_seed_as_fit_does(case, seed):
    make, shape = case
    layer = make()
    by_seed = layer.init(seed, shape)
    by_key = layer.init(jax.random.key(seed), shape)
    assert by_seed[0] == by_key[0]
    for a, b in zip(jax.tree_util.tree_leaves(by_seed[1]), jax.tree_util.tree_leaves(by_key[1])):
        np.testing.assert_array_equal(a, b)


def test_batch_norm_takes_an_int_seed():
    assert layers.BatchNorm().init_with_state(3, (-1, 2))[0] == (-1, 2)


@pytest.mark.parametrize("key", ["seed", 1.5, jnp.zeros(3)])
def test_a_key_that_is_no_key_names_the_layer(key):
    with pytest.raises(TypeError, match=r"Dense\(3\): key: expected a jax.random key or an int"):
        layers.Dense(3).init(key, (-1, 2))


def test_evaluate_batch_size_zero_names_the_argument():
    model = models.logistic_regression()
    _, params = model.init(KEY, (-1, 2))
    with pytest.raises(ValueError, match="evaluate: batch_size must be a positive int"):
        train.evaluate(model, params, np.zeros((4, 2)), np.zeros(4), batch_size=0)


@pytest.mark.parametrize(
    "metrics", [[losses.accuracy], (losses.accuracy,), losses.accuracy, {"acc": 3}, {1: len}]
)
def test_metrics_must_be_a_dict_of_functions(metrics):
    model = models.logistic_regression()
    _, params = model.init(KEY, (-1, 2))
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.float32)
    with pytest.raises(TypeError, match=r"fit: metrics must be a dict of name -> fn"):
        train.fit(model, params, x, y, metrics=metrics, epochs=1, progress=False)


@SETTINGS
@given(
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=65536),
        st.text(min_size=1).filter(lambda t: not t.strip().lstrip("+-").isdigit()),
    )
)
def test_the_command_line_refuses_a_bad_port_without_a_traceback(port):
    with pytest.raises(SystemExit) as exc:
        main(["playground", f"--port={port}"])  # "=": "-1" is no option
    assert exc.value.code == 2


def test_the_command_line_port_message(capsys):
    with pytest.raises(SystemExit):
        main(["playground", "--port", "99999"])
    err = capsys.readouterr().err
    assert "argument --port: expected an int in [0, 65535] (0: a free port), got 99999" in err
    assert "Traceback" not in err


def test_the_port_rule_is_shared():
    assert checks.port(0) == 0
    with pytest.raises(ValueError, match=re.escape("port: expected an int in [0, 65535]")):
        checks.port(70000)


@pytest.mark.parametrize("depth", [1100, 100_000])
def test_deeply_nested_json_is_a_bad_request(server, depth):
    host, port = server.server_address[:2]
    body = ('{"name": "moons", "n": ' + "[" * depth + "]" * depth + "}").encode()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/api/dataset", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    status, text = resp.status, resp.read().decode()
    conn.close()
    assert status == 400 and "nested too deeply" in text


@SETTINGS
@given(
    st.sampled_from([("hidden_0", "w"), ("hidden_0", "b"), ("output", "w")]),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.sampled_from(["raise", "skip"]),
)
def test_fit_refuses_to_start_from_params_that_are_not_finite(leaf, value, guard):
    model = models.mlp([3, 2])
    _, params = model.init(KEY, (-1, 2))
    layer, name = leaf
    params[layer][name] = params[layer][name].at[0].set(value)
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int32)
    where = re.escape(f"params['{layer}']['{name}'] holds nan or inf")
    with pytest.raises(ValueError, match=rf"fit: the params to train from are not finite: {where}"):
        train.fit(model, params, x, y, epochs=1, progress=False, on_nonfinite=guard)


def test_ignore_trains_from_non_finite_params_unchecked():
    model = models.mlp([3, 2])
    _, params = model.init(KEY, (-1, 2))
    params["output"]["b"] = params["output"]["b"].at[0].set(np.nan)
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int32)
    settings = {"epochs": 1, "progress": False, "optimizer": optax.sgd(0.1)}
    result = train.fit(model, params, x, y, on_nonfinite="ignore", **settings)
    assert np.isnan(result.history["loss"][0])
