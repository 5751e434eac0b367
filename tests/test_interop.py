"""Weights across frameworks without PyTorch: safetensors files, and PyTorch layouts built by
hand in NumPy (the torch tests are in test_interop_torch.py)."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import funcnn as fn
from funcnn import interop

LENET_SHAPE = (-1, 32, 32, 1)


def _same(a, b) -> bool:
    same = jax.tree.map(lambda u, v: u.dtype == v.dtype and bool((u == v).all()), a, b)
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        jax.tree_util.tree_leaves(same)
    )


# ------------------------------------------------------------------ the flatten permutation


def test_flatten_order_against_a_hand_computed_index_map():
    """PyTorch flattens a (C, H, W) map at c·H·W + h·W + w, funcnn an (H, W, C) map at
    (h·W + w)·C + c; the order sends each funcnn position to PyTorch's for the same value."""
    h_, w_, c_ = 2, 3, 4
    want = []
    for h in range(h_):
        for w in range(w_):
            for c in range(c_):  # funcnn's position (h·W + w)·C + c, in increasing order
                want.append(c * h_ * w_ + h * w_ + w)
    assert interop.flatten_order((h_, w_, c_)).tolist() == want
    x = np.random.default_rng(0).normal(size=(h_, w_, c_))
    torch_flat = x.transpose(2, 0, 1).reshape(-1)  # NCHW, then flattened
    assert (x.reshape(-1) == torch_flat[interop.flatten_order((h_, w_, c_))]).all()


def test_flatten_order_of_one_channel_or_one_pixel_is_the_identity():
    assert interop.flatten_order((5, 5, 1)).tolist() == list(range(25))
    assert interop.flatten_order((1, 1, 7)).tolist() == list(range(7))


# ----------------------------------------------------- a PyTorch network computed by hand


def _torch_style_net(sd, x_nchw):
    """The PyTorch network Conv2d(2, 4, 3, groups=2) → ReLU → Flatten → Linear(36, 5), its
    forward pass written with NCHW images and OIHW kernels, as PyTorch computes it."""
    y = (
        lax.conv_general_dilated(
            x_nchw,
            sd["0.weight"],
            (1, 1),
            "VALID",
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
            feature_group_count=2,
        )
        + sd["0.bias"][None, :, None, None]
    )
    y = jnp.maximum(y, 0).reshape(len(x_nchw), -1)  # flattened in (C, H, W) order
    return y @ sd["3.weight"].T + sd["3.bias"]


def _random_state_dict(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"0.weight": (4, 1, 3, 3), "0.bias": (4,), "3.weight": (5, 36), "3.bias": (5,)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_from_torch_computes_what_the_torch_network_computes():
    net = fn.serial(fn.Conv(4, 3, groups=2), fn.Relu(), fn.Flatten(), fn.Dense(5))
    sd = _random_state_dict()
    params = interop.from_torch(sd, net, (-1, 5, 5, 2))
    assert params["conv_0"]["w"].shape == (3, 3, 1, 4) and params["dense_0"]["w"].shape == (36, 5)
    x = np.random.default_rng(1).normal(size=(3, 5, 5, 2)).astype(np.float32)
    want = _torch_style_net(sd, x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(net.apply(params, x), want, rtol=1e-5, atol=1e-5)
    back = interop.to_state_dict(params, net, (-1, 5, 5, 2), like=sd)
    assert list(back) == list(sd) and all((back[k] == sd[k]).all() for k in sd)


def test_the_flatten_permutation_is_needed():
    """Without the reordering the first dense layer would see its inputs shuffled."""
    net = fn.serial(fn.Conv(4, 3, groups=2), fn.Relu(), fn.Flatten(), fn.Dense(5))
    sd = _random_state_dict()
    params = interop.from_torch(sd, net, (-1, 5, 5, 2))
    params["dense_0"]["w"] = jnp.asarray(sd["3.weight"].T)  # a plain transpose
    x = np.random.default_rng(1).normal(size=(3, 5, 5, 2)).astype(np.float32)
    want = _torch_style_net(sd, x.transpose(0, 3, 1, 2))
    assert not np.allclose(net.apply(params, x), want, atol=1e-3)


# ------------------------------------------------------------------------- round trips


def test_lenet_round_trip_funcnn_torch_funcnn_is_exact():
    model = fn.models.lenet5()
    _, params = model.init(jax.random.key(0), LENET_SHAPE)
    sd = interop.to_state_dict(params, model, LENET_SHAPE)
    assert list(sd) == [
        f"{n}.{p}" for n in ("c1", "c3", "c5", "f6", "output") for p in ("weight", "bias")
    ]
    assert sd["c1.weight"].shape == (6, 1, 5, 5) and sd["c5.weight"].shape == (120, 400)
    assert _same(interop.from_torch(sd, model, LENET_SHAPE), params)


def test_round_trip_keeps_bfloat16_and_takes_torch_names():
    model = fn.models.mlp([8, 3])
    _, params = model.init(jax.random.key(0), (-1, 2))
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    like = {"net.0.weight": 0, "net.0.bias": 0, "net.2.weight": 0, "net.2.bias": 0}
    like = {
        k: np.zeros(
            (8, 2)
            if k == "net.0.weight"
            else (3, 8)
            if k == "net.2.weight"
            else (8,)
            if k == "net.0.bias"
            else (3,)
        )
        for k in like
    }
    sd = interop.to_state_dict(params, model, (-1, 2), like=like)
    assert list(sd) == list(like) and sd["net.0.weight"].dtype == jnp.bfloat16
    assert _same(interop.from_torch(sd, model, (-1, 2)), params)


def test_a_model_that_is_one_layer():
    _, params = fn.Dense(3).init(jax.random.key(0), (-1, 2))
    sd = interop.to_state_dict(params, fn.Dense(3), (-1, 2))
    assert sorted(sd) == ["bias", "weight"] and sd["weight"].shape == (3, 2)
    assert _same(interop.from_torch(sd, fn.Dense(3), (-1, 2)), params)


def test_weight_layers_of_alexnet():
    layers = interop.weight_layers(fn.models.alexnet(), (-1, 227, 227, 3))
    assert [w.name for w in layers] == [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
    assert layers[5].feature_shape == (6, 6, 256) and layers[5].w_shape == (9216, 4096)
    assert all(w.feature_shape is None for w in layers if w.name != "fc6")


# -------------------------------------------------------------------------- clear errors


def test_count_mismatch_names_both_sides():
    model, params = _lenet_params()
    sd = interop.to_state_dict(params, model, LENET_SHAPE)
    del sd["output.weight"], sd["output.bias"]
    with pytest.raises(
        ValueError,
        match=r"4 convolution/Linear layers \(c1, c3, c5, f6\).*"
        r"5 Conv/Dense layers \(c1, c3, c5, f6, output\)",
    ):
        interop.from_torch(sd, fn.models.lenet5(), LENET_SHAPE)


def test_shape_mismatch_names_both_sides():
    model, params = _lenet_params()
    sd = interop.to_state_dict(params, model, LENET_SHAPE)
    with pytest.raises(
        ValueError,
        match=r"torch 'c1.weight' has shape \(6, 1, 5, 5\) but funcnn 'c1' .* needs \(6, 3, 5, 5\)",
    ):
        interop.from_torch(sd, fn.models.lenet5(), (-1, 32, 32, 3))
    with pytest.raises(
        ValueError,
        match=r"'c5.weight' .* \(120, 400\) but funcnn 'c5' \(Dense\(120\)\) needs \(120, 576\)",
    ):
        interop.from_torch(sd, fn.models.lenet5(), (-1, 36, 36, 1))  # 6×6 maps, not 5×5


def test_kind_and_bias_mismatch():
    sd = {"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(3)}
    with pytest.raises(ValueError, match=r"torch '0' is a Linear \(3, 2\) but funcnn 'conv_0'"):
        interop.from_torch(sd, fn.serial(fn.Conv(3, 1)), (-1, 4, 4, 2))
    with pytest.raises(ValueError, match="torch '0' has a bias but funcnn '.' .* has no 'b'"):
        interop.from_torch(sd, fn.Dense(3, use_bias=False), (-1, 2))


def test_entries_that_do_not_convert():
    sd = {"0.weight": np.zeros((3, 2)), "1.running_mean": np.zeros(3)}
    with pytest.raises(ValueError, match="'1.running_mean' is neither a weight nor a bias"):
        interop.from_torch(sd, fn.Dense(3), (-1, 2))
    with pytest.raises(ValueError, match=r"'1.weight' of shape \(3,\) is no Conv1d/2d/3d"):
        interop.from_torch({"1.weight": np.zeros(3)}, fn.Dense(3), (-1, 2))
    with pytest.raises(ValueError, match="layer_norm_0 .*only Conv and Dense"):
        interop.weight_layers(fn.serial(fn.Dense(3), fn.LayerNorm()), (-1, 2))
    with pytest.raises(ValueError, match="is a residual"):
        interop.weight_layers(fn.serial(fn.residual(fn.Dense(2))), (-1, 2))


def test_to_state_dict_checks_params_and_like():
    model, params = _lenet_params()
    params["f6"]["w"] = params["f6"]["w"][:10]
    with pytest.raises(ValueError, match=r"'f6' \(Dense\(84\)\) needs"):
        interop.to_state_dict(params, model, LENET_SHAPE)
    model, params = _lenet_params()
    like = interop.to_state_dict(params, model, LENET_SHAPE)
    like["c5.weight"] = np.zeros((120, 401))
    with pytest.raises(ValueError, match=r"gives \(120, 400\) for torch 'c5.weight'"):
        interop.to_state_dict(params, model, LENET_SHAPE, like=like)


def _lenet_params():
    model = fn.models.lenet5()
    return model, model.init(jax.random.key(0), LENET_SHAPE)[1]


# ----------------------------------------------------------------------- safetensors files


def test_safetensors_round_trip_keeps_names_and_dtypes(tmp_path):
    pytest.importorskip("safetensors")
    params = {
        "conv1": {
            "w": jnp.arange(24.0).reshape(2, 2, 2, 3).astype(jnp.bfloat16),
            "b": jnp.ones(3, jnp.float16),
        },
        "dense": {"w": jnp.ones((4, 2)), "steps": jnp.array(7, jnp.int32)},
    }
    path = interop.save_safetensors(params, tmp_path / "p.safetensors", metadata={"model": "x"})
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        assert sorted(f.keys()) == ["conv1/b", "conv1/w", "dense/steps", "dense/w"]
        assert f.metadata() == {"model": "x"}
    assert _same(interop.load_safetensors(path), params)


def test_safetensors_like_gives_the_structure_and_checks_it(tmp_path):
    pytest.importorskip("safetensors")
    params = [{"w": jnp.ones((2, 3))}, (jnp.zeros(3), jnp.ones(1, jnp.bfloat16))]
    path = interop.save_safetensors(params, tmp_path / "p.safetensors")
    assert _same(interop.load_safetensors(path, like=params), params)
    with pytest.raises(ValueError, match=r"missing \['0/b'\], unexpected \['1/0', '1/1'\]"):
        interop.load_safetensors(path, like=[{"w": 0, "b": 0}])
    wrong = [{"w": jnp.ones((2, 3), jnp.float16)}, params[1]]
    with pytest.raises(ValueError, match=r"'0/w' is float32\[2, 3\], like has float16\[2, 3\]"):
        interop.load_safetensors(path, like=wrong)


def test_lenet_through_a_safetensors_file(tmp_path):
    pytest.importorskip("safetensors")
    model, params = _lenet_params()
    path = interop.save_safetensors(params, tmp_path / "lenet.safetensors")
    assert _same(interop.load_safetensors(path), params)


def test_a_missing_safetensors_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"pip install 'funcnn\[safetensors\]'"):
        interop.save_safetensors({"w": jnp.ones(2)}, tmp_path / "p.safetensors")


def test_names_that_cannot_be_flattened():
    with pytest.raises(ValueError, match="without '/'"):
        interop.flatten({"a/b": jnp.ones(1)})
    with pytest.raises(ValueError, match="both a tensor and a folder"):
        interop.unflatten({"a": 1, "a/b": 2})
    assert interop.unflatten(interop.flatten({"a": {"b": 1.0}})) == {"a": {"b": np.asarray(1.0)}}


def test_conv1d_networks_convert_too():
    """Conv1d kernels are (O, I, L), funcnn's (L, I, O); PyTorch flattens (C, L) maps."""
    rng = np.random.default_rng(2)
    sd = {
        "0.weight": rng.normal(size=(3, 2, 2)).astype(np.float32),
        "0.bias": rng.normal(size=3).astype(np.float32),
        "2.weight": rng.normal(size=(4, 15)).astype(np.float32),
        "2.bias": rng.normal(size=4).astype(np.float32),
    }
    net = fn.serial(fn.layers.Conv1D(3, 2), fn.Flatten(), fn.Dense(4))
    params = interop.from_torch(sd, net, (-1, 6, 2))
    x = rng.normal(size=(2, 6, 2)).astype(np.float32)
    y = lax.conv_general_dilated(
        x.transpose(0, 2, 1), sd["0.weight"], (1,), "VALID", dimension_numbers=("NCH", "OIH", "NCH")
    )
    y = (y + sd["0.bias"][None, :, None]).reshape(2, -1) @ sd["2.weight"].T + sd["2.bias"]
    np.testing.assert_allclose(net.apply(params, x), y, rtol=1e-5, atol=1e-5)
    back = interop.to_state_dict(params, net, (-1, 6, 2), like=sd)
    assert all((back[k] == sd[k]).all() for k in sd)


def test_conv3d_kernels_round_trip():
    net = fn.serial(fn.layers.Conv3D(4, (1, 2, 3)))
    _, params = net.init(jax.random.key(0), (-1, 3, 4, 5, 2))
    sd = interop.to_state_dict(params, net, (-1, 3, 4, 5, 2))
    assert sd["conv_0.weight"].shape == (4, 2, 1, 2, 3)
    assert _same(interop.from_torch(sd, net, (-1, 3, 4, 5, 2)), params)
