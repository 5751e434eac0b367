"""BatchNorm, LayerNorm and GroupNorm against a float64 NumPy implementation written from the
papers' formulas, against torch.nn with the same weights (when PyTorch is installed), and
their gradients against finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import layers as L

RNG = np.random.default_rng(0)


# ------------------------------------------------------------- a second implementation


def np_batch_norm_train(x, mean_r, var_r, gamma, beta, momentum, eps, axis=-1):
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    shape = [1] * x.ndim
    shape[axis] = -1
    m = x.size // x.shape[axis]
    mu = x.mean(axes)
    var = ((x - mu.reshape(shape)) ** 2).mean(axes)
    y = (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = y * gamma.reshape(shape) + beta.reshape(shape)
    mean_r = (1 - momentum) * mean_r + momentum * mu
    var_r = (1 - momentum) * var_r + momentum * var * m / (m - 1)
    return y, mean_r, var_r


def np_batch_norm_eval(x, mean_r, var_r, gamma, beta, eps, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    y = (x - mean_r.reshape(shape)) / np.sqrt(var_r.reshape(shape) + eps)
    return y * gamma.reshape(shape) + beta.reshape(shape)


def np_group_norm(x, groups, gamma, beta, eps):
    n, *spatial, c = x.shape
    out = np.empty_like(x)
    size = c // groups
    for i in range(n):
        for g in range(groups):
            block = x[i, ..., g * size : (g + 1) * size]
            out[i, ..., g * size : (g + 1) * size] = (block - block.mean()) / np.sqrt(
                block.var() + eps
            )
    return out * gamma + beta


def _affine(c):
    return RNG.normal(size=c), RNG.normal(size=c)


# ------------------------------------------------------------------------ BatchNorm


@pytest.mark.parametrize("shape", [(8, 5), (4, 6, 5, 3)])
def test_batch_norm_training_steps_and_eval_match_the_formula(shape):
    bn = L.BatchNorm(momentum=0.1, epsilon=1e-5)
    _, params, state = bn.init_with_state(jax.random.key(0), (-1, *shape[1:]))
    c = shape[-1]
    gamma, beta = _affine(c)
    params = {"scale": jnp.asarray(gamma, jnp.float32), "offset": jnp.asarray(beta, jnp.float32)}
    mean_r, var_r = np.zeros(c), np.ones(c)
    apply = jax.jit(bn.apply_with_state, static_argnames="train")
    for step in range(4):
        x = RNG.normal(loc=step, scale=1 + step, size=shape)
        y, state = apply(params, state, jnp.asarray(x, jnp.float32), train=True)
        want, mean_r, var_r = np_batch_norm_train(x, mean_r, var_r, gamma, beta, 0.1, 1e-5)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state["mean"], mean_r, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["var"], var_r, rtol=1e-5, atol=1e-6)
    x = RNG.normal(size=shape)
    y, after = apply(params, state, jnp.asarray(x, jnp.float32), train=False)
    np.testing.assert_allclose(
        y, np_batch_norm_eval(x, mean_r, var_r, gamma, beta, 1e-5), rtol=1e-4, atol=1e-5
    )
    assert after is state or all(np.array_equal(after[k], state[k]) for k in state)


def test_batch_norm_on_another_feature_axis():
    x = RNG.normal(size=(6, 3, 4, 4))  # NCHW, features on axis 1
    bn = L.BatchNorm(axis=1)
    _, params, state = bn.init_with_state(jax.random.key(0), (-1, 3, 4, 4))
    y, state = bn.apply_with_state(params, state, jnp.asarray(x, jnp.float32), train=True)
    want, mean_r, var_r = np_batch_norm_train(
        x, np.zeros(3), np.ones(3), np.ones(3), np.zeros(3), 0.1, 1e-5, axis=1
    )
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["var"], var_r, rtol=1e-5)


def test_plain_apply_on_a_stateful_network_names_the_layer():
    net = fn.serial(
        fn.named("block_0", fn.serial(L.Dense(4), fn.named("bn_0", L.BatchNorm()))), L.Relu()
    )
    assert net.stateful and not L.Dense(4).stateful
    shape, params, state = net.init_with_state(jax.random.key(0), (-1, 3))
    assert jax.tree_util.tree_map(jnp.shape, state) == {
        "block_0": {"bn_0": {"mean": (4,), "var": (4,)}}
    }
    with pytest.raises(
        ValueError, match=r"block_0/bn_0: BatchNorm\(\) keeps state.*apply_with_state"
    ):
        net.apply(params, jnp.ones((2, 3)))
    _, plain_params = net.init(jax.random.key(0), (-1, 3))  # init alone still works
    assert jax.tree_util.tree_structure(plain_params) == jax.tree_util.tree_structure(params)


def test_eval_never_changes_the_state_and_training_does():
    net = fn.serial(L.Dense(3), L.BatchNorm())
    _, params, state = net.init_with_state(jax.random.key(0), (-1, 2))
    x = jnp.asarray(RNG.normal(size=(5, 2)), jnp.float32)
    _, same = net.apply_with_state(params, state, x, train=False)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, same, state))
    _, moved = net.apply_with_state(params, state, x, train=True)
    assert not jnp.array_equal(moved["batch_norm_0"]["mean"], state["batch_norm_0"]["mean"])


def test_a_state_that_does_not_match_is_refused_naming_the_layer():
    net = fn.serial(L.Dense(3), fn.named("bn", L.BatchNorm()))
    _, params, state = net.init_with_state(jax.random.key(0), (-1, 2))
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"bn: BatchNorm\(\): state must hold \['mean', 'var'\]"):
        net.apply_with_state(params, {}, x, train=True)
    bad = {"bn": {"mean": jnp.zeros(4), "var": jnp.ones(3)}}
    with pytest.raises(
        ValueError, match=r"bn: BatchNorm\(\): state\['mean'\] must have shape \(3,\)"
    ):
        net.apply_with_state(params, bad, x, train=True)
    with pytest.raises(ValueError, match="state has keys \\['other'\\] that match no child"):
        net.apply_with_state(params, {**state, "other": {}}, x)


def test_batch_norm_training_on_one_example_says_why():
    bn = L.BatchNorm()
    _, params, state = bn.init_with_state(jax.random.key(0), (-1, 3))
    with pytest.raises(ValueError, match="at least 2 values per feature"):
        bn.apply_with_state(params, state, jnp.ones((1, 3)), train=True)
    y, _ = bn.apply_with_state(params, state, jnp.ones((1, 3)), train=False)  # eval is fine
    assert y.shape == (1, 3)


def test_bad_batch_norm_arguments():
    with pytest.raises(ValueError, match="momentum"):
        L.BatchNorm(momentum=1.5)
    with pytest.raises(ValueError, match="batch axis"):
        L.BatchNorm(axis=0).init_with_state(jax.random.key(0), (-1, 3))


# ----------------------------------------------------------- LayerNorm, GroupNorm


def test_layer_norm_matches_the_formula_over_one_and_several_axes():
    x = RNG.normal(size=(3, 4, 5))
    for axes, red in ((-1, (2,)), ((-2, -1), (1, 2))):
        ln = L.LayerNorm(axes)
        _, params = ln.init(jax.random.key(0), (-1, 4, 5))
        gamma = RNG.normal(size=params["scale"].shape)
        beta = RNG.normal(size=params["offset"].shape)
        p = {"scale": jnp.asarray(gamma, jnp.float32), "offset": jnp.asarray(beta, jnp.float32)}
        mu, var = x.mean(red, keepdims=True), x.var(red, keepdims=True)
        want = (x - mu) / np.sqrt(var + 1e-5) * gamma + beta
        np.testing.assert_allclose(
            ln.apply(p, jnp.asarray(x, jnp.float32)), want, rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm_matches_the_formula(groups):
    x = RNG.normal(size=(2, 3, 4, 6))
    gn = L.GroupNorm(groups)
    gamma, beta = _affine(6)
    p = {"scale": jnp.asarray(gamma, jnp.float32), "offset": jnp.asarray(beta, jnp.float32)}
    got = gn.apply(p, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(
        got, np_group_norm(x, groups, gamma, beta, 1e-5), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="divide by"):
        L.GroupNorm(4).init(jax.random.key(0), (-1, 6))


# ------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "layer, shape",
    [
        (L.LayerNorm(), (3, 4)),
        (L.GroupNorm(2), (2, 3, 3, 4)),
        (L.BatchNorm(), (5, 3)),
        (L.BatchNorm(), (2, 3, 3, 2)),
    ],
    ids=["layer", "group", "batch1d", "batch2d"],
)
def test_gradients_match_finite_differences(layer, shape):
    key = jax.random.key(1)
    _, params, state = layer.init_with_state(key, (-1, *shape[1:]))
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(key, p.shape), params)
    x = jax.random.normal(jax.random.key(2), shape)
    w = jax.random.normal(jax.random.key(3), shape)

    def loss(p, x):  # training mode: the batch statistics are differentiated through
        y, _ = layer.apply_with_state(p, state, x, train=True)
        return jnp.sum(jnp.sin(y) * w)

    report = fn.gradients.check_grads(loss, (params, x))
    assert report.ok, report


# ---------------------------------------------------------------- against PyTorch


def test_against_torch_batch_norm_layer_norm_and_group_norm():
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(6, 4, 5, 3)).astype(np.float32)  # NHWC
    bn = L.BatchNorm()
    _, params, state = bn.init_with_state(jax.random.key(0), (-1, 4, 5, 3))
    gamma, beta = (v.astype(np.float32) for v in _affine(3))
    params = {"scale": jnp.asarray(gamma), "offset": jnp.asarray(beta)}
    tbn = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(gamma))
        tbn.bias.copy_(torch.from_numpy(beta))
    tbn.train()
    for step in range(3):
        xs = (x + step).astype(np.float32)
        y, state = bn.apply_with_state(params, state, jnp.asarray(xs), train=True)
        ty = tbn(torch.from_numpy(xs).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state["mean"], tbn.running_mean.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state["var"], tbn.running_var.numpy(), rtol=1e-5, atol=1e-5)
    tbn.eval()
    y, _ = bn.apply_with_state(params, state, jnp.asarray(x), train=False)
    ty = tbn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)

    x1 = RNG.normal(size=(7, 4)).astype(np.float32)
    bn1 = L.BatchNorm()
    _, p1, s1 = bn1.init_with_state(jax.random.key(0), (-1, 4))
    t1 = torch.nn.BatchNorm1d(4)
    y1, s1 = bn1.apply_with_state(p1, s1, jnp.asarray(x1), train=True)
    np.testing.assert_allclose(y1, t1(torch.from_numpy(x1)).detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s1["var"], t1.running_var.numpy(), rtol=1e-5, atol=1e-6)

    ln, tln = L.LayerNorm(), torch.nn.LayerNorm(3)
    _, lp = ln.init(jax.random.key(0), (-1, 4, 5, 3))
    np.testing.assert_allclose(
        ln.apply(lp, jnp.asarray(x)),
        tln(torch.from_numpy(x)).detach().numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    x6 = RNG.normal(size=(2, 4, 5, 6)).astype(np.float32)
    gn, tgn = L.GroupNorm(3), torch.nn.GroupNorm(3, 6)
    _, gp = gn.init(jax.random.key(0), (-1, 4, 5, 6))
    ty = tgn(torch.from_numpy(x6).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_allclose(
        gn.apply(gp, jnp.asarray(x6)), ty.detach().numpy(), rtol=1e-5, atol=1e-5
    )


def test_moments_derivatives_of_every_order_match_the_plain_formula():
    """moments' variance has its own derivative rule, (2/m) Σ (x − μ) dx; it must agree with
    differentiating the two-pass formula, in gradients and Hessian-vector products."""
    jax.config.update("jax_enable_x64", True)
    try:
        x = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float64)
        v = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float64)
        w = jnp.asarray(RNG.normal(size=4), jnp.float64)

        def ours(x):
            mean, var = fn.functional.moments(x)
            return jnp.sum(w * jnp.sin(var) + mean**2)

        def plain(x):
            mean = x.mean(0)
            var = ((x - mean) ** 2).mean(0)
            return jnp.sum(w * jnp.sin(var) + mean**2)

        np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(plain)(x), rtol=1e-12, atol=1e-14)
        hvp = jax.jvp(jax.grad(ours), (x,), (v,))[1]
        hvp_plain = jax.jvp(jax.grad(plain), (x,), (v,))[1]
        np.testing.assert_allclose(hvp, hvp_plain, rtol=1e-12, atol=1e-14)
    finally:
        jax.config.update("jax_enable_x64", False)
