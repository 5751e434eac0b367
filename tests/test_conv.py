"""Convolution, pooling and LRN against plain-numpy sliding windows and finite differences."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcnn import functional as F
from funcnn.core import serial
from funcnn.layers import LRN, AvgPool, Conv, Dense, Flatten, MaxPool

# ------------------------------------------------------------------ plain-numpy references


def same_pads(n: int, f: int, s: int, d: int) -> tuple[int, int]:
    """TF's documented "SAME" rule: out = ceil(n/s), the padding split low-first."""
    out = -(-n // s)
    total = max((out - 1) * s + d * (f - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def as_pads(padding, x_hw, window, stride, dilation):
    if padding == "VALID":
        return ((0, 0), (0, 0))
    if padding == "SAME":
        return tuple(same_pads(n, f, s, d) for n, f, s, d in zip(x_hw, window, stride, dilation))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return padding


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def np_conv2d(x, w, b, stride, padding, dilation, groups):
    """y[n,i,j,o] = b[o] + Σ_{u,v,c} x̂[n, s·i + D·u, s·j + D·v, g·C_g + c] w[u,v,c,o]."""
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    fh, fw, cg, o_total = w.shape
    pads = as_pads(padding, x.shape[1:3], (fh, fw), (sh, sw), (dh, dw))
    xp = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    yh = (xp.shape[1] - dh * (fh - 1) - 1) // sh + 1
    yw = (xp.shape[2] - dw * (fw - 1) - 1) // sw + 1
    per_group = o_total // groups
    y = np.zeros((x.shape[0], yh, yw, o_total))
    for i in range(yh):
        for j in range(yw):
            for o in range(o_total):
                g = o // per_group
                patch = xp[
                    :,
                    i * sh : i * sh + dh * (fh - 1) + 1 : dh,
                    j * sw : j * sw + dw * (fw - 1) + 1 : dw,
                    g * cg : (g + 1) * cg,
                ]
                y[:, i, j, o] = np.einsum("nuvc,uvc->n", patch, w[..., o])
    return y + (0.0 if b is None else b)


def np_pool(x, window, stride, padding, kind):
    """Max over the window, or the mean over the window's real (unpadded) elements."""
    (fh, fw), (sh, sw) = pair(window), pair(stride)
    pads = as_pads(padding, x.shape[1:3], (fh, fw), (sh, sw), (1, 1))
    fill = -np.inf if kind == "max" else np.nan
    xp = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)
    yh = (xp.shape[1] - fh) // sh + 1
    yw = (xp.shape[2] - fw) // sw + 1
    y = np.zeros((x.shape[0], yh, yw, x.shape[3]))
    for i in range(yh):
        for j in range(yw):
            patch = xp[:, i * sh : i * sh + fh, j * sw : j * sw + fw, :]
            y[:, i, j, :] = patch.max(axis=(1, 2)) if kind == "max" else np.nanmean(patch, (1, 2))
    return y


def np_lrn(x, k, n, alpha, beta):
    """b_c = a_c / (k + α Σ_{c' ∈ [c − ⌊n/2⌋, c + n − 1 − ⌊n/2⌋] ∩ [0, C)} a_c'²)^β."""
    x = x.astype(np.float64)
    channels = x.shape[-1]
    out = np.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - n // 2), min(channels - 1, c + n - 1 - n // 2)
        out[..., c] = x[..., c] / (k + alpha * np.sum(x[..., lo : hi + 1] ** 2, axis=-1)) ** beta
    return out


def finite_difference_grad(f, x, h=1e-6):
    """Central differences (f(x + h e_i) − f(x − h e_i)) / 2h for every element i."""
    x = np.asarray(x, np.float64)
    f = jax.jit(f)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        grad[i] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return grad


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------ conv2d against numpy

CONV_CASES = [
    # (padding, stride, dilation, C, O, groups, kernel, H, W)
    ("VALID", 1, 1, 3, 4, 1, 3, 7, 7),
    ("SAME", 1, 1, 2, 3, 1, 3, 6, 7),
    ("SAME", 2, 1, 3, 2, 1, 3, 7, 8),
    ("SAME", 3, 2, 2, 2, 1, 3, 9, 8),
    (1, 1, 1, 1, 5, 1, 3, 5, 5),
    (2, 3, 1, 2, 2, 1, (3, 2), 8, 7),
    (((0, 2), (1, 0)), 2, 1, 3, 2, 1, 3, 6, 6),
    (((2, 1), (0, 3)), (1, 2), (2, 1), 2, 3, 1, (2, 3), 7, 6),
    ("VALID", 1, 2, 2, 3, 1, 3, 8, 8),
    (1, 2, 1, 4, 6, 2, 3, 7, 7),
    ("SAME", 1, 1, 4, 4, 4, 3, 5, 6),
    ("VALID", 3, 2, 6, 3, 3, 2, 9, 9),
]


@pytest.mark.parametrize("padding, stride, dilation, c, o, groups, kernel, h, w", CONV_CASES)
def test_conv2d_matches_numpy(padding, stride, dilation, c, o, groups, kernel, h, w):
    fh, fw = pair(kernel)
    x = rand((2, h, w, c), 0)
    kernel_w = rand((fh, fw, c // groups, o), 1)
    b = rand((o,), 2)
    got = F.conv2d(jnp.asarray(x), jnp.asarray(kernel_w), jnp.asarray(b), stride, padding,
                   dilation, groups)  # fmt: skip
    want = np_conv2d(x, kernel_w, b, stride, padding, dilation, groups)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_conv2d_without_bias_and_the_lecture_example():
    # F = 3, p = 1, s = 1 keeps N: Y = ⌊(N + 2 − 3)/1⌋ + 1 = N
    x, w = rand((1, 6, 6, 1), 3), rand((3, 3, 1, 1), 4)
    got = F.conv2d(jnp.asarray(x), jnp.asarray(w), None, 1, 1)
    assert got.shape == (1, 6, 6, 1)
    np.testing.assert_allclose(got, np_conv2d(x, w, None, 1, 1, 1, 1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ pooling against numpy

POOL_CASES = [
    # (window, stride, padding, H, W)
    (2, None, "VALID", 6, 6),
    (3, 2, "VALID", 7, 8),
    (3, 2, "SAME", 7, 8),
    (2, 1, "SAME", 5, 5),
    (3, 1, 1, 5, 6),
    (3, 2, ((0, 2), (1, 1)), 6, 5),
    ((2, 3), (1, 2), ((1, 0), (0, 2)), 5, 7),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("window, stride, padding, h, w", POOL_CASES)
def test_pooling_matches_numpy(kind, window, stride, padding, h, w):
    x = rand((2, h, w, 3), 5)
    fn = F.max_pool if kind == "max" else F.avg_pool
    got = fn(jnp.asarray(x), window, stride, padding)
    want = np_pool(x, window, window if stride is None else stride, padding, kind)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_avg_pool_divides_a_padded_window_by_its_real_elements():
    # a 2×2 image of ones with p = 1 and a 2×2 window, stride 1: each window holds 1, 2 or 4
    # real ones, so every mean is exactly 1 (dividing by F² would give 1/4 in the corners).
    y = F.avg_pool(jnp.ones((1, 2, 2, 1)), 2, 1, 1)
    np.testing.assert_array_equal(np.asarray(y), np.ones((1, 3, 3, 1)))


@pytest.mark.parametrize("n, alpha", [(5, 1e-4), (3, 0.5), (4, 0.3), (1, 1.0)])
def test_lrn_matches_the_paper_formula(n, alpha):
    x = 3 * rand((2, 3, 3, 7), 6)
    got = F.lrn(jnp.asarray(x), 2.0, n, alpha, 0.75)
    np.testing.assert_allclose(np.asarray(got), np_lrn(x, 2.0, n, alpha, 0.75), rtol=1e-5)


def test_flatten_keeps_the_batch():
    x = rand((3, 2, 4, 5), 7)
    np.testing.assert_array_equal(np.asarray(F.flatten(jnp.asarray(x))), x.reshape(3, 40))


# ------------------------------------------------------------------ gradients, float64


def check_grad(f, x):
    auto = np.asarray(jax.grad(f)(jnp.asarray(x)))
    numeric = finite_difference_grad(f, x)
    np.testing.assert_allclose(auto, numeric, rtol=1e-6, atol=1e-7)


def test_conv2d_gradients_match_finite_differences(x64):
    # Note: XLA's CPU compiler aborts on the float64 input gradient of a stride-2 conv with a
    # non-square kernel and asymmetric padding (float32 is fine), so those features are
    # checked here in two separate configurations.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 6, 2))
    cases = [
        # (kernel shape, bias, stride, padding, dilation, groups)
        ((3, 3, 1, 4), rng.standard_normal(4), 2, ((1, 0), (1, 1)), 1, 2),
        ((3, 2, 2, 3), None, 2, 1, 1, 1),
        ((2, 2, 2, 3), None, 1, "VALID", 2, 1),
        ((3, 3, 2, 2), rng.standard_normal(2), 1, "SAME", 1, 1),
    ]
    for shape, b, stride, padding, dilation, groups in cases:
        w = rng.standard_normal(shape)
        y = F.conv2d(x, w, b, stride, padding, dilation, groups)
        assert y.dtype == jnp.float64
        proj = rng.standard_normal(y.shape)

        def loss(x_, w_, b=b, s=stride, p=padding, d=dilation, g=groups, proj=proj):
            return jnp.sum(jnp.tanh(F.conv2d(x_, w_, b, s, p, d, g)) * proj)

        check_grad(lambda x_, w=w, loss=loss: loss(x_, w), x)
        check_grad(lambda w_, loss=loss: loss(x, w_), w)


@pytest.mark.parametrize("fn", [F.max_pool, F.avg_pool])
def test_pooling_gradients_match_finite_differences(x64, fn):
    x = np.random.default_rng(5).standard_normal((1, 5, 5, 2))
    proj = np.random.default_rng(6).standard_normal((1, 3, 3, 2))
    check_grad(lambda x_: jnp.sum(fn(x_, 3, 2, "SAME") * proj), x)
    check_grad(lambda x_: jnp.sum(fn(x_, 2, 2, 1) * proj), x)


@pytest.mark.parametrize("alpha", [1e-4, 0.5])
def test_lrn_gradients_match_finite_differences(x64, alpha):
    x = 2 * np.random.default_rng(7).standard_normal((1, 2, 2, 6))
    proj = np.random.default_rng(8).standard_normal(x.shape)
    check_grad(lambda x_: jnp.sum(F.lrn(x_, 2.0, 5, alpha, 0.75) * proj), x)


# ------------------------------------------------------------------ the output-size formula


@pytest.mark.parametrize(
    "n, f, padding, stride, dilation, expected",
    [
        (227, 11, 0, 4, 1, 55),  # AlexNet conv1
        (55, 3, 0, 2, 1, 27),  # overlapping 3×3/2 pooling
        (27, 5, 2, 1, 1, 27),  # conv2
        (32, 3, 1, 1, 1, 32),  # the lecture's F = 3, p = 1, s = 1
        (32, 5, "VALID", 1, 1, 28),  # LeNet C1
        (7, 3, "SAME", 2, 1, 4),  # ⌈7/2⌉
        (7, 3, "SAME", 2, 3, 4),  # "SAME" ignores F and D
        (10, 3, (0, 1), 3, 2, 3),  # ⌊(10 + 1 − 5)/3⌋ + 1 = 3
    ],
)
def test_conv_output_size_by_hand(n, f, padding, stride, dilation, expected):
    assert F.conv_output_size(n, f, padding, stride, dilation) == expected


def _padding_strategy():
    side = st.integers(0, 3)
    pairs = st.tuples(st.tuples(side, side), st.tuples(side, side))
    return st.one_of(st.just("SAME"), st.just("VALID"), side, pairs)


def _pad_total(p) -> int:
    return 0 if p == "VALID" else sum(p) if isinstance(p, tuple) else 2 * p


def _axis_pad(padding, axis):
    if isinstance(padding, (str, int)):
        return padding
    return padding[axis]


@settings(max_examples=50, deadline=None, database=None)
@given(
    n=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    f=st.integers(1, 5),
    padding=_padding_strategy(),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
)
def test_formula_init_and_apply_agree(n, f, padding, stride, dilation):
    def formula(dil):
        return tuple(
            F.conv_output_size(size, f, _axis_pad(padding, axis), stride, dil)
            for axis, size in enumerate(n)
        )

    layers = [
        (Conv(2, f, stride, padding, dilation, w_init="zeros"), dilation),
        (MaxPool(f, stride, padding), 1),
        (AvgPool(f, stride, padding), 1),
    ]
    x = jax.ShapeDtypeStruct((1, *n, 2), jnp.float32)
    for layer, dil in layers:
        # the kernel spans D(F − 1) + 1 and must fit in the padded input N + lo + hi
        fits = padding == "SAME" or all(
            dil * (f - 1) + 1 <= size + _pad_total(_axis_pad(padding, a))
            for a, size in enumerate(n)
        )
        if not fits:
            with pytest.raises(ValueError, match="larger than the padded input"):
                formula(dil)
            with pytest.raises(ValueError, match=re.escape(layer.description)):
                layer.init(jax.random.key(0), (-1, *n, 2))
            continue
        shape, params = layer.init(jax.random.key(0), (-1, *n, 2))
        assert shape[1:3] == formula(dil)
        # the shape XLA gives the output of apply (abstract evaluation: nothing compiled)
        assert jax.eval_shape(layer.apply, params, x).shape == (1, *shape[1:])


# ------------------------------------------------------------------ layers


def test_conv_layer_params_and_apply():
    layer = Conv(4, (3, 2), stride=2, padding=1, groups=2)
    shape, params = layer.init(jax.random.key(0), (-1, 7, 6, 6))
    assert params["w"].shape == (3, 2, 3, 4) and params["b"].shape == (4,)
    assert shape == (-1, 4, 4, 4)
    x = rand((2, 7, 6, 6), 9)
    want = np_conv2d(x, np.asarray(params["w"]), np.asarray(params["b"]), 2, 1, 1, 2)
    np.testing.assert_allclose(np.asarray(layer.apply(params, x)), want, rtol=1e-5, atol=1e-5)
    assert "b" not in Conv(4, 3, use_bias=False).init(jax.random.key(0), (-1, 5, 5, 1))[1]


def test_conv_default_init_is_he_normal():
    # He: Var(w) = 2 / fan_in with fan_in = F_h · F_w · C / groups = 5 · 5 · 16 / 2 = 200
    _, params = Conv(64, 5, groups=2).init(jax.random.key(1), (-1, 9, 9, 16))
    assert params["w"].shape == (5, 5, 8, 64)
    assert abs(float(np.var(params["w"])) / (2 / 200) - 1) < 0.05
    assert not np.any(np.asarray(params["b"]))


def test_flatten_and_lrn_layers():
    shape, params = Flatten().init(jax.random.key(0), (-1, 6, 6, 256))
    assert (shape, params) == ((-1, 9216), {})
    assert LRN().init(jax.random.key(0), (-1, 5, 5, 8)) == ((-1, 5, 5, 8), {})
    x = rand((1, 2, 2, 8), 10)
    np.testing.assert_allclose(
        LRN(n=3, alpha=0.2).apply({}, x), np_lrn(x, 2.0, 3, 0.2, 0.75), rtol=1e-5
    )


# ------------------------------------------------------------------ bad input


def test_kernel_larger_than_padded_input_is_an_init_error():
    with pytest.raises(ValueError, match=r"Conv\(4, 5\).*larger than the padded input"):
        Conv(4, 5).init(jax.random.key(0), (-1, 3, 3, 1))
    with pytest.raises(ValueError, match=r"Conv\(4, 3, dilation=2\)"):
        Conv(4, 3, dilation=2).init(jax.random.key(0), (-1, 4, 8, 1))
    with pytest.raises(ValueError, match=r"MaxPool\(3\)"):
        MaxPool(3).init(jax.random.key(0), (-1, 2, 2, 1))
    Conv(4, 5, padding=1).init(jax.random.key(0), (-1, 3, 3, 1))  # 3 + 2 = 5 fits
    net = serial(Conv(4, 3), Conv(4, 3), Flatten(), Dense(2))
    with pytest.raises(ValueError, match=r"^conv_1: Conv\(4, 3\).*padded input"):
        net.init(jax.random.key(0), (-1, 4, 4, 1))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Conv(4, 3, stride=0), r"Conv\(4, 3, stride=0\): stride"),
        (lambda: Conv(4, 3, stride=(1, -1)), r"stride"),
        (lambda: Conv(4, 3, dilation=0), r"Conv\(4, 3, dilation=0\): dilation"),
        (lambda: Conv(4, 0), r"Conv\(4, 0\): kernel"),
        (lambda: Conv(0, 3), r"Conv\(0, 3\): filters"),
        (lambda: Conv(3, 3, groups=2), r"Conv\(3, 3, groups=2\): filters \(3\) must divide"),
        (lambda: Conv(4, 3, groups=0), r"groups"),
        (lambda: Conv(4, 3, padding=-1), r"Conv\(4, 3, padding=-1\): padding"),
        (lambda: Conv(4, 3, padding="FULL"), r"padding"),
        (lambda: Conv(4, 3, padding=(1, 2)), r"padding.*\(\(top, bottom\), \(left, right\)\)"),
        (lambda: MaxPool(2, stride=0), r"MaxPool\(2, stride=0\): stride"),
        (lambda: AvgPool(0), r"AvgPool\(0\): window"),
        (lambda: LRN(n=0), r"LRN\(n=0\): n"),
        (lambda: LRN(beta=-1.0), r"LRN\(beta=-1.0\): beta"),
    ],
)
def test_bad_construction_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_channels_must_divide_by_groups():
    with pytest.raises(ValueError, match=r"Conv\(4, 3, groups=2\): the input channels \(3\)"):
        Conv(4, 3, groups=2).init(jax.random.key(0), (-1, 8, 8, 3))


@pytest.mark.parametrize("layer", [Conv(4, 3), MaxPool(2), AvgPool(2)])
def test_a_3d_input_is_a_clear_error(layer):
    with pytest.raises(ValueError, match=rf"{layer.description[:4]}.*NHWC images of rank 4"):
        layer.init(jax.random.key(0), (-1, 8, 8))
    _, params = layer.init(jax.random.key(0), (-1, 8, 8, 1))
    with pytest.raises(ValueError, match=rf"{layer.description[:4]}.*got shape \(8, 8, 1\)"):
        layer.apply(params, jnp.ones((8, 8, 1)))


def test_apply_on_the_wrong_channel_count_names_the_layer():
    _, params = Conv(4, 3).init(jax.random.key(0), (-1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"Conv\(4, 3\): expected 3 input channels"):
        Conv(4, 3).apply(params, jnp.ones((1, 8, 8, 2)))


def test_conv_output_size_rejects_bad_arguments():
    for kwargs, match in [
        (dict(n=5, f=3, stride=0), "stride"),
        (dict(n=5, f=3, dilation=0), "dilation"),
        (dict(n=0, f=3), "n must"),
        (dict(n=5, f=3, padding=-1), "padding"),
        (dict(n=5, f=3, padding="FULL"), "padding"),
        (dict(n=2, f=3), "larger than the padded input"),
    ]:
        with pytest.raises(ValueError, match=match):
            F.conv_output_size(**kwargs)
    assert math.isclose(F.conv_output_size(2, 3, 1), 2)
