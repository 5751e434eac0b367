"""The activations stax and PyTorch have (Elu, Selu, Softplus, Exp) and the Embedding layer:
values from their formulas in NumPy, the same against PyTorch where it is installed, shapes
promised by init, and the errors of bad ids and params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import layers as L
from tests.layer_support import assert_shape_promise, rand

SELU_LAMBDA, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772

ACTIVATIONS = {
    "Elu": (L.Elu(), lambda x: np.where(x > 0, x, np.expm1(x))),
    "Elu(0.5)": (L.Elu(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    "Selu": (L.Selu(), lambda x: SELU_LAMBDA * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))),
    "Softplus": (L.Softplus(), lambda x: np.log1p(np.exp(x))),
    "Softplus(2)": (L.Softplus(2.0), lambda x: np.log1p(np.exp(2 * x)) / 2),
    "Exp": (L.Exp(), np.exp),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_values_against_their_formula(name):
    layer, formula = ACTIVATIONS[name]
    x = np.linspace(-5, 5, 40).reshape(4, 10)
    _, params = layer.init(jax.random.key(0), (-1, 10))
    assert params == {}
    got = layer.apply(params, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), formula(x), rtol=2e-6, atol=1e-6)
    assert_shape_promise(layer, (-1, 10), jnp.asarray(x, jnp.float32))


@pytest.mark.parametrize(
    "name, torch_fn",
    [
        ("Elu", lambda F, x: F.elu(x)),
        ("Elu(0.5)", lambda F, x: F.elu(x, 0.5)),
        ("Selu", lambda F, x: F.selu(x)),
        ("Softplus", lambda F, x: F.softplus(x)),
        ("Softplus(2)", lambda F, x: F.softplus(x, beta=2.0)),
        ("Exp", lambda F, x: x.exp()),
    ],
)
def test_activations_against_torch(name, torch_fn, x64):
    torch = pytest.importorskip("torch")
    x = np.linspace(-30, 30, 121)
    want = torch_fn(torch.nn.functional, torch.tensor(x)).numpy()
    got = ACTIVATIONS[name][0].apply({}, jnp.asarray(x))
    # atol: torch's softplus returns x itself past βx > 20, off the exact value by ≤ e⁻²⁰ / β
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=3e-9)


def test_activation_arguments_and_names():
    assert [repr(a) for a in (L.Elu(), L.Selu(), L.Softplus(), L.Softplus(2.0), L.Exp())] == [
        "<Layer Elu(1.0)>",
        "<Layer Selu()>",
        "<Layer Softplus()>",
        "<Layer Softplus(2.0)>",
        "<Layer Exp()>",
    ]
    with pytest.raises(ValueError, match=r"Softplus: beta"):
        L.Softplus(0.0)
    with pytest.raises(TypeError, match=r"Elu: alpha"):
        L.Elu("1")
    net = fn.serial(L.Dense(3), L.Elu(), L.Dense(2), L.Softplus())
    assert fn.summary(net, (-1, 4)).total == 4 * 3 + 3 + 3 * 2 + 2


# ---------------------------------------------------------------------------- Embedding

WHO = r"Embedding\(5, 2\)"


def test_embedding_looks_up_rows_and_adds_their_gradients():
    layer = L.Embedding(7, 3)
    shape, params = layer.init(jax.random.key(0), (-1, 5))
    assert shape == (-1, 5, 3) and params["w"].shape == (7, 3)
    ids = np.array([[0, 6, 2, 2, 5], [1, 1, 1, 3, 4]])
    y = layer.apply(params, jnp.asarray(ids))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(params["w"])[ids])
    upstream = rand((2, 5, 3), 1)
    grad = jax.grad(lambda p: jnp.sum(layer.apply(p, jnp.asarray(ids)) * upstream))(params)
    want = np.zeros((7, 3), np.float32)
    np.add.at(want, ids, upstream)  # ∂L/∂W_v = Σ over the positions whose id is v
    np.testing.assert_allclose(np.asarray(grad["w"]), want, rtol=1e-6, atol=1e-6)
    assert_shape_promise(layer, (-1, 5), jnp.asarray(ids))
    assert_shape_promise(layer, (-1,), jnp.arange(4))  # one id per example: (n,) -> (n, d)


def test_embedding_against_torch_with_the_same_weights():
    torch = pytest.importorskip("torch")
    layer = L.Embedding(11, 4)
    _, params = layer.init(jax.random.key(3), (-1, 6))
    ids = np.random.default_rng(0).integers(0, 11, (3, 6))
    emb = torch.nn.Embedding(11, 4)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(np.asarray(params["w"])))
    out = emb(torch.tensor(ids))
    upstream = rand((3, 6, 4), 2)
    (out * torch.tensor(upstream)).sum().backward()
    y, vjp = jax.vjp(lambda p: layer.apply(p, jnp.asarray(ids)), params)
    np.testing.assert_allclose(np.asarray(y), out.detach().numpy(), rtol=1e-6)
    (grad,) = vjp(jnp.asarray(upstream))
    np.testing.assert_allclose(np.asarray(grad["w"]), emb.weight.grad.numpy(), atol=1e-5)


def test_embedding_out_of_range_ids():
    layer = L.Embedding(5, 2)
    _, params = layer.init(jax.random.key(0), (-1, 3))
    for bad, shown in (([[0, 5, 1]], "got 5"), ([[0, -1, 1]], "got -1")):
        with pytest.raises(ValueError, match=rf"{WHO}: ids must be in \[0, 5\), {shown}"):
            layer.apply(params, jnp.asarray(bad))
    # under jit the ids are traced: an id out of range gives a row of NaN, never a clamped row
    y = jax.jit(layer.apply)(params, jnp.asarray([[0, 5, -1]]))
    assert np.isfinite(np.asarray(y[0, 0])).all()
    assert np.isnan(np.asarray(y[0, 1:])).all()


def test_embedding_bad_input_and_params():
    layer = L.Embedding(5, 2)
    _, params = layer.init(jax.random.key(0), (-1, 3))
    with pytest.raises(TypeError, match=rf"{WHO}: ids must be integers, got dtype float32"):
        layer.apply(params, jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match=rf"{WHO}: params\['w'\] must have shape \(5, 2\)"):
        layer.apply({"w": jnp.zeros((6, 2))}, jnp.zeros((1, 3), int))
    with pytest.raises(ValueError, match=r"Embedding\(5, 2\): params must hold"):
        layer.apply({}, jnp.zeros((1, 3), int))
    with pytest.raises(ValueError, match=r"Embedding\(0, 2\): vocab_size"):
        L.Embedding(0, 2)
    with pytest.raises(ValueError, match=r"Embedding\(5, 2\): expected an input of rank >= 1"):
        layer.init(jax.random.key(0), ())


def test_embedding_in_a_network_trains_and_counts():
    net = fn.serial(L.Embedding(10, 4), L.Flatten(), L.Dense(2))
    s = fn.summary(net, (-1, 3))
    assert [r.output_shape for r in s.rows] == [(-1, 3, 4), (-1, 12), (-1, 2)]
    assert s.total == 10 * 4 + 12 * 2 + 2
