"""MultiHeadAttention: against torch.nn.MultiheadAttention with the same weights (outputs,
attention weights and gradients; self and cross attention, key padding and causal masks),
against jax.nn.dot_product_attention and the softmax formula without torch, dropout on the
weights in training, shapes promised by init, and the errors of bad masks and inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import layers, ops
from tests.layer_support import assert_shape_promise, rand


def as64(params, seed):
    """Params drawn N(0, 0.3²) in float64, biases included."""
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(0.3 * rng.standard_normal(v.shape)) for k, v in params.items()}


def padding_mask(n, s, seed):
    """Random key padding (True = ignore), never a whole row."""
    mask = np.random.default_rng(seed).random((n, s)) < 0.3
    mask[:, 0] = False
    return mask


def torch_attention(torch, params, heads, d, kdim, vdim):
    module = torch.nn.MultiheadAttention(d, heads, batch_first=True, kdim=kdim, vdim=vdim)
    module = module.double()
    p = {k: torch.tensor(np.asarray(v)) for k, v in params.items()}
    with torch.no_grad():
        if kdim == vdim == d:
            module.in_proj_weight.copy_(torch.cat([p["w_q"].T, p["w_k"].T, p["w_v"].T]))
        else:
            module.q_proj_weight.copy_(p["w_q"].T)
            module.k_proj_weight.copy_(p["w_k"].T)
            module.v_proj_weight.copy_(p["w_v"].T)
        module.in_proj_bias.copy_(torch.cat([p["b_q"], p["b_k"], p["b_v"]]))
        module.out_proj.weight.copy_(p["w_o"].T)
        module.out_proj.bias.copy_(p["b_o"])
    return module


def torch_param_grads(module, d, kdim, vdim):
    g = {}
    if kdim == vdim == d:
        w = module.in_proj_weight.grad.numpy()
        g["w_q"], g["w_k"], g["w_v"] = w[:d].T, w[d : 2 * d].T, w[2 * d :].T
    else:
        g["w_q"] = module.q_proj_weight.grad.numpy().T
        g["w_k"] = module.k_proj_weight.grad.numpy().T
        g["w_v"] = module.v_proj_weight.grad.numpy().T
    b = module.in_proj_bias.grad.numpy()
    g["b_q"], g["b_k"], g["b_v"] = b[:d], b[d : 2 * d], b[2 * d :]
    g["w_o"], g["b_o"] = module.out_proj.weight.grad.numpy().T, module.out_proj.bias.grad.numpy()
    return g


CASES = {
    # name: (heads, T, S, d, kdim, vdim, causal, padded)
    "self": (4, 6, 6, 8, 8, 8, False, False),
    "self_causal": (2, 6, 6, 8, 8, 8, True, False),
    "self_padded_causal": (2, 7, 7, 6, 6, 6, True, True),
    "cross": (2, 5, 7, 8, 3, 4, False, False),
    "cross_padded": (4, 5, 7, 8, 8, 8, False, True),
    "cross_padded_causal": (1, 4, 6, 6, 5, 6, True, True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_torch_outputs_weights_and_gradients(name, x64):
    torch = pytest.importorskip("torch")
    heads, t, s, d, kdim, vdim, causal, padded = CASES[name]
    q, k, v = (
        rand((3, t, d), 1, np.float64),
        rand((3, s, kdim), 2, np.float64),
        rand((3, s, vdim), 3, np.float64),
    )
    mask = padding_mask(3, s, 4) if padded else None
    layer = layers.MultiHeadAttention(heads, causal=causal)
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    _, params = layer.init(jax.random.key(0), tuple(np.shape(a) for a in inputs))
    params = as64(params, 5)
    upstream = rand((3, t, d), 6, np.float64)

    module = torch_attention(torch, params, heads, d, kdim, vdim)
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    attn_mask = torch.ones(t, s, dtype=torch.bool).triu(1) if causal else None
    out_t, weights_t = module(
        qt, kt, vt, key_padding_mask=None if mask is None else torch.tensor(mask),
        attn_mask=attn_mask, average_attn_weights=False,
    )  # fmt: skip
    (out_t * torch.tensor(upstream)).sum().backward()

    def loss(p, q, k, v):
        args = (q, k, v) if mask is None else (q, k, v, jnp.asarray(mask))
        return jnp.sum(layer.apply(p, args) * upstream)

    y = layer.apply(params, tuple(jnp.asarray(a) for a in inputs))
    np.testing.assert_allclose(np.asarray(y), out_t.detach().numpy(), atol=1e-10)
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(params, q, k, v)
    for got, want in zip(grads[1:], (qt, kt, vt)):
        np.testing.assert_allclose(np.asarray(got), want.grad.numpy(), atol=1e-10)
    for key, want in torch_param_grads(module, d, kdim, vdim).items():
        np.testing.assert_allclose(np.asarray(grads[0][key]), want, atol=1e-10, err_msg=key)
    # the per-head weights, from the projected queries and keys
    hq = (q @ params["w_q"] + params["b_q"]).reshape(3, t, heads, -1)
    hk = (k @ params["w_k"] + params["b_k"]).reshape(3, s, heads, -1)
    keep = np.ones((3, 1, t, s), bool) if mask is None else ~mask[:, None, None, :]
    keep = keep & (np.tril(np.ones((t, s), bool)) if causal else True)
    weights = ops.attention_weights(hq, hk, keep)
    np.testing.assert_allclose(np.asarray(weights), weights_t.detach().numpy(), atol=1e-10)


def test_torch_counts_the_same_parameters():
    torch = pytest.importorskip("torch")
    module = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    s = fn.summary(layers.MultiHeadAttention(4), (-1, 10, 32))
    assert s.total == sum(p.numel() for p in module.parameters()) == 4 * 32 * 32 + 4 * 32


# ------------------------------------------------------------------------ without torch


def test_attention_is_jax_nn_dot_product_attention_and_the_softmax_formula():
    q, k, v = (jnp.asarray(rand((2, n, 3, 4), seed)) for n, seed in ((5, 7), (6, 8), (6, 9)))
    mask = jnp.asarray(~padding_mask(2, 6, 10))[:, None, None, :]  # True: attend
    ours = ops.dot_product_attention(q, k, v, mask)
    theirs = jax.nn.dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    x = jnp.asarray(rand((2, 5, 3, 4), 11))
    causal = ops.dot_product_attention(x, x, x, ops.causal_mask(5))
    np.testing.assert_allclose(
        causal, jax.nn.dot_product_attention(x, x, x, is_causal=True), atol=1e-6
    )
    logits = np.einsum("nthd,nshd->nhts", q, k) / 2.0  # √d = 2
    logits = np.where(np.asarray(mask), logits, -np.inf)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(ops.attention_weights(q, k, mask), want, rtol=1e-5, atol=1e-7)


def test_a_fully_masked_query_weighs_its_keys_equally():
    q, k = jnp.ones((1, 2, 1, 2)), jnp.asarray(rand((1, 3, 1, 2), 12))
    mask = jnp.array([[True, True, False], [False, False, False]])[None, None]
    weights = ops.attention_weights(q, k, mask)[0, 0]
    assert float(weights[0, 2]) == 0.0
    np.testing.assert_allclose(weights[1], [1 / 3] * 3, rtol=1e-6)


def test_dropout_on_the_weights_only_in_training():
    layer = layers.MultiHeadAttention(2, dropout=0.5)
    _, params = layer.init(jax.random.key(0), (-1, 6, 4))
    x = jnp.asarray(rand((2, 6, 4), 13))
    base = layer.apply(params, x)
    np.testing.assert_array_equal(layer.apply(params, x, key=jax.random.key(1)), base)
    y1 = layer.apply(params, x, key=jax.random.key(1), train=True)
    y2 = layer.apply(params, x, key=jax.random.key(2), train=True)
    assert y1.shape == base.shape and not np.allclose(y1, base) and not np.allclose(y1, y2)
    with pytest.raises(
        ValueError,
        match=r"MultiHeadAttention\(2, dropout=0.5\): train=True with dropout needs a PRNG key",
    ):
        layer.apply(params, x, train=True)
    # with one-hot values the output is the weights themselves: each 0 or α / (1 − rate)
    q = jnp.asarray(rand((1, 4, 1, 3), 14))
    eye = jnp.eye(4)[None, :, None, :]
    alpha = ops.dot_product_attention(q, q, eye)[0, :, 0]
    dropped = ops.dot_product_attention(q, q, eye, dropout_rate=0.25, key=jax.random.key(3))[
        0, :, 0
    ]
    kept = np.asarray(dropped) != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(np.asarray(dropped)[kept], np.asarray(alpha)[kept] / 0.75, rtol=1e-6)


# ----------------------------------------------------------------------------- the layer

SHAPES = {
    "self": ((-1, 6, 8), lambda: jnp.asarray(rand((3, 6, 8), 15))),
    "cross": (
        ((-1, 5, 8), (-1, 7, 3)),
        lambda: (jnp.asarray(rand((3, 5, 8), 16)), jnp.asarray(rand((3, 7, 3), 17))),
    ),
    "masked": (
        ((-1, 5, 8), (-1, 7, 3), (-1, 7, 2), (-1, 7)),
        lambda: (
            jnp.asarray(rand((3, 5, 8), 18)),
            jnp.asarray(rand((3, 7, 3), 19)),
            jnp.asarray(rand((3, 7, 2), 20)),
            jnp.asarray(padding_mask(3, 7, 21)),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_init_promises_the_shape_apply_returns(name):
    shape, make = SHAPES[name]
    layer = layers.MultiHeadAttention(2, head_size=3, out=5, causal=True)
    out_shape, params = assert_shape_promise(layer, shape, make())
    assert out_shape == (-1, 5 if name != "self" else 6, 5) and params["w_q"].shape == (8, 6)


def test_in_a_transformer_block():
    block = fn.serial(
        fn.residual(layers.MultiHeadAttention(2, causal=True)),
        layers.LayerNorm(),
        fn.residual(layers.Dense(16), layers.Relu(), layers.Dense(8)),
    )
    net = fn.serial(layers.Embedding(30, 8), block, layers.Dense(30))
    _, params = net.init(jax.random.key(0), (-1, 12))
    assert jax.jit(net.apply)(params, jnp.zeros((2, 12), int)).shape == (2, 12, 30)
    assert (
        repr(layers.MultiHeadAttention(2, causal=True))
        == "<Layer MultiHeadAttention(2, causal=True)>"
    )


# ------------------------------------------------------------------------------ bad input

WHO = r"MultiHeadAttention\(2\)"


def test_a_mask_of_the_wrong_shape_is_named_at_init_and_apply():
    layer = layers.MultiHeadAttention(2)
    with pytest.raises(
        ValueError,
        match=rf"{WHO}: key_padding_mask must have shape \(batch, key length\) = \(-1, 7\), "
        r"got shape \(-1, 5\)",
    ):
        layer.init(jax.random.key(0), ((-1, 5, 4), (-1, 7, 4), (-1, 7, 4), (-1, 5)))
    _, params = layer.init(jax.random.key(0), ((-1, 5, 4), (-1, 7, 4)))
    q, kv = jnp.ones((2, 5, 4)), jnp.ones((2, 7, 4))
    for apply in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(
            ValueError,
            match=rf"{WHO}: key_padding_mask must have shape .* = \(2, 7\), got shape \(2, 5\)",
        ):
            apply(params, (q, kv, kv, jnp.zeros((2, 5), bool)))
    with pytest.raises(
        TypeError, match=rf"{WHO}: key_padding_mask must be booleans, got dtype float32"
    ):
        layer.apply(params, (q, kv, kv, jnp.zeros((2, 7))))


def test_bad_inputs_and_params():
    layer = layers.MultiHeadAttention(2)
    with pytest.raises(ValueError, match=rf"{WHO}: expected the query as batch-first sequences"):
        layer.init(jax.random.key(0), (-1, 8))
    with pytest.raises(
        ValueError, match=rf"{WHO}: the query's features \(5\) must divide by num_heads \(2\)"
    ):
        layer.init(jax.random.key(0), (-1, 3, 5))
    with pytest.raises(ValueError, match=rf"{WHO}: query, key and value must share"):
        layer.init(jax.random.key(0), ((-1, 3, 4), (-1, 5, 4), (-1, 6, 4)))
    _, params = layer.init(jax.random.key(0), (-1, 3, 4))
    with pytest.raises(ValueError, match=rf"{WHO}: expected x \(self attention\)"):
        layer.apply(params, (jnp.ones((1, 3, 4)),) * 5)
    with pytest.raises(ValueError, match=rf"{WHO}: params\['w_k'\] must have shape \(4, 4\)"):
        layer.apply({**params, "w_k": jnp.zeros((4, 6))}, jnp.ones((1, 3, 4)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(0\): num_heads"):
        layers.MultiHeadAttention(0)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        layers.MultiHeadAttention(2, dropout=1.0)
