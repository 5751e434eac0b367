"""SimpleRNN, LSTM and GRU: against NumPy loops written from their formulas, against
finite differences, and against torch.nn.RNN / LSTM / GRU with the same weights, outputs and
gradients (of a scalar function of the outputs, with respect to params and inputs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import layers
from funcnn.gradients import check_grads
from tests.layer_support import assert_shape_promise, rand


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def np_run(kind, params, x, activation="tanh"):
    """The recurrences step by step in float64: ``(hs, carry)``."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    n, t, _ = x.shape
    hidden = p["w_h"].shape[0]
    h, c, hs = np.zeros((n, hidden)), np.zeros((n, hidden)), []
    for step in range(t):
        a = x[:, step] @ p["w_x"] + p["b"]
        if kind == "rnn":
            z = a + h @ p["w_h"]
            h = np.tanh(z) if activation == "tanh" else np.maximum(z, 0)
        elif kind == "lstm":
            i, f, g, o = np.split(a + h @ p["w_h"], 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            (a_r, a_z, a_n), (g_r, g_z, g_n) = np.split(a, 3, 1), np.split(h @ p["w_h"], 3, 1)
            r, z = sigmoid(a_r + g_r), sigmoid(a_z + g_z)
            h = (1 - z) * np.tanh(a_n + r * (g_n + p["b_hn"])) + z * h
        hs.append(h)
    return np.stack(hs, 1), ((h, c) if kind == "lstm" else h)


MAKERS = {
    "rnn": lambda **kw: layers.SimpleRNN(5, **kw),
    "rnn_relu": lambda **kw: layers.SimpleRNN(5, "relu", **kw),
    "lstm": lambda **kw: layers.LSTM(5, **kw),
    "gru": lambda **kw: layers.GRU(5, **kw),
}


def randomized(params, seed):
    """Params drawn N(0, 0.5²) leaf by leaf: no zero bias hides a mistake."""
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(0.5 * rng.standard_normal(v.shape), v.dtype) for k, v in params.items()}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_recurrences_match_numpy(name):
    layer = MAKERS[name](return_carry=True)
    _, params = layer.init(jax.random.key(0), (-1, 7, 3))
    params = randomized(params, 1)
    x = rand((4, 7, 3), 2)
    (hs, carry) = layer.apply(params, jnp.asarray(x))
    kind = name.split("_")[0]
    activation = "relu" if name.endswith("relu") else "tanh"
    want_hs, want_carry = np_run(kind, params, x.astype(np.float64), activation)
    np.testing.assert_allclose(np.asarray(hs), want_hs, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(want_carry)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_gradients_through_sequence_and_carry_match_finite_differences(x64):
    """tests/test_gradients.py checks every layer's sequence output; here the LSTM's carry
    (h_T, c_T) too."""
    layer = MAKERS["lstm"](return_carry=True)
    _, params = layer.init(jax.random.key(0), (-1, 6, 2))
    params = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), randomized(params, 3))
    x = jnp.asarray(rand((2, 6, 2), 4, np.float64))
    weights = jnp.asarray(rand((2, 6, 5), 5, np.float64))

    def loss(p, x):
        hs, carry = layer.apply(p, x)
        return jnp.sum(hs * weights) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(carry))

    report = check_grads(loss, (params, x), argnums=(0, 1), max_elements=8)
    assert report.ok, str(report)


# ------------------------------------------------------------------------------ torch


def torch_module(torch, name, params, d):
    """``torch.nn.RNN / LSTM / GRU`` holding ``params`` (float64, batch first)."""
    hidden = params["w_h"].shape[0]
    cls = {
        "rnn": torch.nn.RNN,
        "rnn_relu": torch.nn.RNN,
        "lstm": torch.nn.LSTM,
        "gru": torch.nn.GRU,
    }
    kw = {"nonlinearity": "relu"} if name == "rnn_relu" else {}
    module = cls[name](d, hidden, batch_first=True, **kw).double()
    b, b_hh = np.asarray(params["b"]), np.zeros(params["b"].shape)
    if name == "gru":  # b = bias_ih + [bias_hr, bias_hz, 0]; b_hn = bias_hn
        b_hh[2 * hidden :] = np.asarray(params["b_hn"])
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(np.asarray(params["w_x"]).T))
        module.weight_hh_l0.copy_(torch.tensor(np.asarray(params["w_h"]).T))
        module.bias_ih_l0.copy_(torch.tensor(b))
        module.bias_hh_l0.copy_(torch.tensor(b_hh))
    return module


def torch_grads(module, name, hidden):
    """Our params' gradients from the torch module's."""
    g = {
        "w_x": module.weight_ih_l0.grad.numpy().T,
        "w_h": module.weight_hh_l0.grad.numpy().T,
        "b": module.bias_ih_l0.grad.numpy(),
    }
    if name == "gru":
        g["b_hn"] = module.bias_hh_l0.grad.numpy()[2 * hidden :]
    return g


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_against_torch_outputs_and_gradients(name, x64):
    torch = pytest.importorskip("torch")
    layer = MAKERS[name](return_carry=True)
    _, params = layer.init(jax.random.key(0), (-1, 9, 3))
    params = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), randomized(params, 6))
    x = rand((4, 9, 3), 7, np.float64)
    r_seq, r_h, r_c = (
        rand((4, 9, 5), 8, np.float64),
        rand((4, 5), 9, np.float64),
        rand((4, 5), 10, np.float64),
    )

    module = torch_module(torch, name, params, 3)
    xt = torch.tensor(x, requires_grad=True)
    out, state = module(xt)
    h_t, c_t = state if name == "lstm" else (state, None)
    loss_t = (out * torch.tensor(r_seq)).sum() + (h_t[0] * torch.tensor(r_h)).sum()
    if c_t is not None:
        loss_t = loss_t + (c_t[0] * torch.tensor(r_c)).sum()
    loss_t.backward()

    def loss(p, x):
        hs, carry = layer.apply(p, x)
        h, c = carry if name == "lstm" else (carry, None)
        value = jnp.sum(hs * r_seq) + jnp.sum(h * r_h)
        return value if c is None else value + jnp.sum(c * r_c)

    value, (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1))(params, jnp.asarray(x))
    np.testing.assert_allclose(float(value), loss_t.item(), rtol=1e-10)
    np.testing.assert_allclose(
        layer.apply(params, jnp.asarray(x))[0], out.detach().numpy(), atol=1e-10
    )
    np.testing.assert_allclose(np.asarray(g_x), xt.grad.numpy(), atol=1e-10)
    for key, want in torch_grads(module, name, 5).items():
        np.testing.assert_allclose(np.asarray(g_params[key]), want, atol=1e-10, err_msg=key)
    if name == "gru":  # the r and z biases of torch's two vectors add: the same gradient
        np.testing.assert_allclose(
            module.bias_hh_l0.grad.numpy()[:10], g_params["b"][:10], atol=1e-10
        )


# ----------------------------------------------------------------------------- the layers


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("return_sequence", [True, False])
@pytest.mark.parametrize("return_carry", [True, False])
def test_init_promises_the_shape_apply_returns(name, return_sequence, return_carry):
    layer = MAKERS[name](return_sequence=return_sequence, return_carry=return_carry)
    x = jnp.asarray(rand((3, 4, 2), 11))
    out_shape, _ = assert_shape_promise(layer, (-1, 4, 2), x)
    first = out_shape[0] if return_carry else out_shape
    assert first == ((-1, 4, 5) if return_sequence else (-1, 5))


def test_layers_stack_in_serial_and_summary_counts_them():
    net = fn.serial(
        layers.Embedding(20, 8),
        layers.LSTM(16),
        layers.GRU(12, return_sequence=False),
        layers.Dense(3),
    )
    s = fn.summary(net, (-1, 30))
    assert [r.output_shape for r in s.rows] == [(-1, 30, 8), (-1, 30, 16), (-1, 12), (-1, 3)]
    lstm = 4 * 16 * (8 + 16) + 4 * 16  # torch.nn.LSTM has a second bias: 4H more
    gru = 3 * 12 * (16 + 12) + 3 * 12 + 12
    assert [r.params for r in s.rows] == [160, lstm, gru, 12 * 3 + 3]
    _, params = net.init(jax.random.key(0), (-1, 30))
    y = jax.jit(net.apply)(params, jnp.zeros((2, 30), int))
    assert y.shape == (2, 3)
    assert "lstm_0" in str(s) and "((N, 30, 16), ((N, 16), (N, 16)))" in str(
        fn.summary(layers.LSTM(16, return_carry=True), (-1, 30, 8))
    )


def test_descriptions():
    assert repr(layers.SimpleRNN(4)) == "<Layer SimpleRNN(4)>"
    assert repr(layers.SimpleRNN(4, "relu")) == "<Layer SimpleRNN(4, activation='relu')>"
    assert repr(layers.LSTM(8, return_carry=True)) == "<Layer LSTM(8, return_carry=True)>"
    assert repr(layers.GRU(8, return_sequence=False)) == "<Layer GRU(8, return_sequence=False)>"


# ------------------------------------------------------------------------------ bad input


def test_a_sequence_of_the_wrong_rank_is_named_at_init_and_apply():
    layer = layers.LSTM(4)
    with pytest.raises(
        ValueError,
        match=r"LSTM\(4\): expected batch-first sequences of rank 3 \(batch, time, features\), "
        r"got shape \(-1, 3\)",
    ):
        layer.init(jax.random.key(0), (-1, 3))
    _, params = layer.init(jax.random.key(0), (-1, 5, 3))
    for apply in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(
            ValueError,
            match=r"LSTM\(4\): expected batch-first sequences of rank 3.*got shape \(5, 3\)",
        ):
            apply(params, jnp.ones((5, 3)))
    with pytest.raises(
        ValueError, match=r"LSTM\(4\): expected sequences of 3 features.*got shape \(2, 5, 4\)"
    ):
        layer.apply(params, jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match=r"GRU\(4\): the number of input features must be known"):
        layers.GRU(4).init(jax.random.key(0), (-1, 5, -1))


def test_params_of_the_wrong_shape_are_refused():
    layer = layers.GRU(4)
    _, params = layer.init(jax.random.key(0), (-1, 5, 3))
    x = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match=r"GRU\(4\): params\['w_h'\] must have shape \(4, 12\)"):
        layer.apply({**params, "w_h": jnp.zeros((4, 4))}, x)
    with pytest.raises(ValueError, match=r"GRU\(4\): params must hold.*missing 'b_hn'"):
        layer.apply({k: v for k, v in params.items() if k != "b_hn"}, x)
    _, lstm = layers.LSTM(4).init(jax.random.key(0), (-1, 5, 3))
    with pytest.raises(
        ValueError, match=r"SimpleRNN\(4\): params\['w_x'\] must have shape \(3, 4\)"
    ):
        layers.SimpleRNN(4).apply(lstm, x)


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match=r"LSTM: hidden"):
        layers.LSTM(0)
    with pytest.raises(ValueError, match=r"SimpleRNN: activation"):
        layers.SimpleRNN(4, "sigmoid")
    with pytest.raises(TypeError, match=r"GRU\(4, return_carry=1\): return_carry must be a bool"):
        layers.GRU(4, return_carry=1)
