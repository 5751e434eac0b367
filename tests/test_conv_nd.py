"""Convolution of 1, 2 and 3 spatial axes and the transposed convolution.

Checked three ways: against NumPy loops written from the formulas (no torch needed), against
identities (a 1-D convolution is a 2-D one of height 1; the transposed convolution is the
gradient of the convolution; "SAME"/"VALID" are lax.conv_transpose's), and against PyTorch's
conv1d / conv3d / conv_transpose1d/2d/3d with the same weights over a grid of configurations.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import funcnn as fn
from funcnn import compiler, layers, ops
from funcnn import functional as F
from tests.layer_support import assert_shape_promise, rand

# ------------------------------------------------------------------ NumPy from the formulas


def same_pads(n, f, s, d):
    """TF's "SAME": output ⌈n/s⌉, the padding split low-first."""
    total = max((-(-n // s) - 1) * s + d * (f - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def as_pairs(padding, spatial, window, stride, dilation):
    r = len(spatial)
    if padding == "VALID":
        return ((0, 0),) * r
    if padding == "SAME":
        return tuple(same_pads(*a) for a in zip(spatial, window, stride, dilation))
    if isinstance(padding, int):
        return ((padding, padding),) * r
    return padding


def np_conv(x, w, b, stride, padding, dilation, groups):
    """y[n, i, o] = b[o] + Σ_{u, c} x̂[n, s ⊙ i + D ⊙ u, g·C_g + c] w[u, c, o]."""
    r = w.ndim - 2
    window, cg, o_total = w.shape[:r], w.shape[-2], w.shape[-1]
    pads = as_pairs(padding, x.shape[1:-1], window, stride, dilation)
    xp = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    out = [(xp.shape[1 + a] - dilation[a] * (window[a] - 1) - 1) // stride[a] + 1 for a in range(r)]
    per = o_total // groups
    y = np.zeros((x.shape[0], *out, o_total))
    for idx in np.ndindex(*out):
        sl = tuple(
            slice(i * s, i * s + d * (f - 1) + 1, d)
            for i, s, d, f in zip(idx, stride, dilation, window)
        )
        patch = xp[(slice(None), *sl)]
        for g in range(groups):
            yg = np.tensordot(
                patch[..., g * cg : (g + 1) * cg],
                w[..., g * per : (g + 1) * per],
                axes=(range(1, r + 2), range(r + 1)),
            )
            y[(slice(None), *idx, slice(g * per, (g + 1) * per))] = yg
    return y if b is None else y + b


def np_conv_transpose(x, w, b, stride, lo_hi, dilation, extra):
    """Each input position j spreads x[j] · w[u] to y[s·j + D·u − lo], then the output is
    cut to s(N − 1) + D(F − 1) + 1 − lo − hi + extra per axis (groups = 1)."""
    r = w.ndim - 2
    window = w.shape[:r]
    full = [
        s * (n - 1) + d * (f - 1) + 1 for n, s, d, f in zip(x.shape[1:-1], stride, dilation, window)
    ]
    margin = 8
    y = np.zeros((x.shape[0], *(m + 2 * margin for m in full), w.shape[-1]))
    for j in np.ndindex(*x.shape[1:-1]):
        for u in np.ndindex(*window):
            at = tuple(margin + s * jj + d * uu for jj, uu, s, d in zip(j, u, stride, dilation))
            y[(slice(None), *at)] += x[(slice(None), *j)].astype(np.float64) @ w[u]
    cut = tuple(
        slice(margin + lo, margin + m - hi + e) for m, (lo, hi), e in zip(full, lo_hi, extra)
    )
    y = y[(slice(None), *cut)]
    return y if b is None else y + b


def tup(v, r):
    return (v,) * r if isinstance(v, int) else tuple(v)


# (stride, padding, dilation, groups) for C = O = 6
CONV_GRID = [
    (1, "VALID", 1, 1),
    (2, 1, 1, 1),
    (1, "SAME", 1, 1),
    (2, "SAME", 2, 2),
    (3, 2, 1, 3),
    (1, 0, 2, 6),
]
SPATIAL = {1: (9,), 2: (8, 7), 3: (6, 5, 7)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("stride, padding, dilation, groups", CONV_GRID)
def test_conv_matches_numpy(rank, stride, padding, dilation, groups):
    x = rand((2, *SPATIAL[rank], 6), 0)
    w = rand((*KERNEL[rank], 6 // groups, 6), 1)
    b = rand((6,), 2)
    got = ops.conv(
        jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), stride, padding, dilation, groups
    )
    want = np_conv(x, w, b, tup(stride, rank), padding, tup(dilation, rank), groups)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_conv_1d_and_3d_are_the_2d_convolution_of_height_or_depth_one():
    x, w = jnp.asarray(rand((2, 11, 3), 3)), jnp.asarray(rand((4, 3, 5), 4))
    one_d = ops.conv(x, w, None, 2, ((1, 2),), 2)
    two_d = F.conv2d(x[:, None], w[None], None, (1, 2), ((0, 0), (1, 2)), (1, 2))
    np.testing.assert_allclose(one_d, two_d[:, 0], rtol=1e-5, atol=1e-5)
    x3 = jnp.asarray(rand((2, 4, 6, 6, 3), 5))
    w3 = jnp.asarray(rand((1, 3, 3, 3, 2), 6))  # depth 1: each slice convolved alone
    three_d = ops.conv(x3, w3, None, 1, "SAME")
    for d in range(4):
        np.testing.assert_allclose(
            three_d[:, d], F.conv2d(x3[:, d], w3[0], padding="SAME"), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("stride, padding, dilation, groups", CONV_GRID)
def test_conv_against_torch(rank, stride, padding, dilation, groups):
    torch = pytest.importorskip("torch")
    x = rand((2, *SPATIAL[rank], 6), 7).astype(np.float64)
    w = rand((*KERNEL[rank], 6 // groups, 6), 8).astype(np.float64)
    b = rand((6,), 9).astype(np.float64)
    conv = getattr(torch.nn.functional, f"conv{rank}d")
    pairs = as_pairs(padding, x.shape[1:-1], KERNEL[rank], tup(stride, rank), tup(dilation, rank))
    xt = torch.nn.functional.pad(  # torch pads symmetrically: pad the input by hand
        torch.tensor(np.moveaxis(x, -1, 1)), [p for lo_hi in reversed(pairs) for p in lo_hi]
    )
    wt = torch.tensor(np.moveaxis(w, (-1, -2), (0, 1)).copy())  # (O, C/groups, *F)
    want = conv(xt, wt, torch.tensor(b), stride=stride, dilation=dilation, groups=groups)
    with jax.enable_x64(True):
        got = layers.Conv(6, KERNEL[rank], stride, padding, dilation, groups).apply(
            {"w": jnp.asarray(w), "b": jnp.asarray(b)}, jnp.asarray(x)
        )
    np.testing.assert_allclose(np.asarray(got), np.moveaxis(want.numpy(), 1, -1), atol=1e-10)


# ----------------------------------------------------------------- transposed convolution

# (stride, padding, dilation, output_padding, groups) for C = O = 6
TRANSPOSE_GRID = [
    (1, 0, 1, 0, 1),
    (2, 1, 1, 1, 2),
    (3, 2, 2, 1, 3),
    (2, 2, 1, 0, 6),
]


def torch_weight(w, groups):
    """Ours (*F, C/groups, O) as torch's (C, O/groups, *F)."""
    r, c_g, o = w.ndim - 2, w.shape[-2], w.shape[-1]
    v = w.reshape(*w.shape[:r], c_g, groups, o // groups)
    v = np.moveaxis(v, (r + 1, r, r + 2), (0, 1, 2))  # (groups, C/groups, O/groups, *F)
    return v.reshape(groups * c_g, o // groups, *w.shape[:r])


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("stride, padding, dilation, extra, groups", TRANSPOSE_GRID)
def test_conv_transpose_against_torch(rank, stride, padding, dilation, extra, groups):
    torch = pytest.importorskip("torch")
    kernel = (3, 2, 3)[:rank]
    x = rand((2, *SPATIAL[rank][:rank], 6), 10).astype(np.float64)
    w = rand((*kernel, 6 // groups, 6), 11).astype(np.float64)
    b = rand((6,), 12).astype(np.float64)
    conv_t = getattr(torch.nn.functional, f"conv_transpose{rank}d")
    want = conv_t(
        torch.tensor(np.moveaxis(x, -1, 1)),
        torch.tensor(torch_weight(w, groups)),
        torch.tensor(b),
        stride=stride,
        padding=padding,
        output_padding=extra,
        groups=groups,
        dilation=dilation,
    )
    layer = layers.ConvTranspose(6, kernel, stride, padding, dilation, extra, groups)
    with jax.enable_x64(True):
        out_shape, _ = layer.init(jax.random.key(0), (-1, *x.shape[1:]))
        got = layer.apply({"w": jnp.asarray(w), "b": jnp.asarray(b)}, jnp.asarray(x))
    assert out_shape[1:] == got.shape[1:]
    np.testing.assert_allclose(np.asarray(got), np.moveaxis(want.numpy(), 1, -1), atol=1e-10)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(
    "stride, padding, dilation, extra", [(2, 1, 1, 1), (3, 0, 2, 1), (1, 2, 1, 0)]
)
def test_conv_transpose_matches_numpy_and_is_the_gradient_of_conv(
    rank, stride, padding, dilation, extra
):
    kernel = (3, 2, 3)[:rank]
    x, w = rand((2, *SPATIAL[rank][:rank], 3), 13), rand((*kernel, 3, 4), 14)
    y = ops.conv_transpose(jnp.asarray(x), jnp.asarray(w), None, stride, padding, dilation, extra)
    r1 = tup(stride, rank), ((padding, padding),) * rank, tup(dilation, rank), tup(extra, rank)
    want = np_conv_transpose(x, w, None, *r1)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4)
    # the transpose of z ↦ conv(z, w̃), w̃ the kernel with its channel axes swapped
    z = jnp.zeros((2, *y.shape[1:-1], 4))
    _, vjp = jax.vjp(
        lambda z: ops.conv(
            z, jnp.swapaxes(jnp.asarray(w), -1, -2), None, stride, padding, dilation
        ),
        z,
    )
    np.testing.assert_allclose(vjp(jnp.asarray(x))[0], y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("rank, stride, dilation", [(1, 2, 1), (2, 3, 1), (2, 1, 2), (3, 2, 2)])
def test_same_and_valid_are_those_of_lax_conv_transpose(padding, rank, stride, dilation):
    kernel = (3, 2, 4)[:rank]
    x, w = (
        jnp.asarray(rand((2, *SPATIAL[rank][:rank], 3), 15)),
        jnp.asarray(rand((*kernel, 3, 2), 16)),
    )
    spatial = "DHW"[3 - rank :]
    dn = (f"N{spatial}C", f"{spatial}OI", f"N{spatial}C")  # swapped by transpose_kernel
    want = lax.conv_transpose(
        x, w, (stride,) * rank, padding, (dilation,) * rank, dn, transpose_kernel=True
    )
    got = ops.conv_transpose(x, w, None, stride, padding, dilation)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    sizes = [
        ops.conv_transpose_output_size(n, f, padding, stride, dilation)
        for n, f in zip(x.shape[1:-1], kernel)
    ]
    assert list(got.shape[1:-1]) == sizes


@pytest.mark.parametrize(
    "n, f, padding, stride, dilation, extra, expected",
    [
        (14, 2, 0, 2, 1, 0, 28),  # s(N − 1) + F
        (7, 3, 1, 2, 1, 1, 14),  # 2·6 + 3 − 2 + 1
        (5, 3, 0, 1, 2, 0, 9),  # dilation: the kernel spans 5
        (4, 4, (1, 2), 2, 1, 0, 7),  # per-side padding
        (7, 3, "SAME", 2, 1, 0, 14),  # sN
        (7, 3, "VALID", 2, 1, 0, 15),  # sN + max(F − s, 0)
        (7, 1, "VALID", 3, 1, 0, 21),
    ],
)
def test_conv_transpose_output_size_by_hand(n, f, padding, stride, dilation, extra, expected):
    assert ops.conv_transpose_output_size(n, f, padding, stride, dilation, extra) == expected
    assert fn.conv_transpose_output_size is ops.conv_transpose_output_size


def test_conv_transpose_output_size_inverts_conv_output_size():
    """With explicit padding, a convolution maps each of the s transposed sizes back to N."""
    for n, f, p, s, d in itertools.product((3, 8), (1, 2, 3), (0, 1), (1, 2, 3), (1, 2)):
        for extra in range(max(s, d)):
            if extra >= s:
                continue  # beyond the stride the convolution sees one more position
            try:
                y = ops.conv_transpose_output_size(n, f, p, s, d, extra)
            except ValueError:
                continue
            assert F.conv_output_size(y, f, p, s, d) == n, (n, f, p, s, d, extra)


def test_conv_transpose_output_size_errors():
    with pytest.raises(ValueError, match="the output would be empty"):
        ops.conv_transpose_output_size(1, 3, 3)
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        ops.conv_transpose_output_size(4, 3, 1, 2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding needs explicit padding"):
        ops.conv_transpose_output_size(4, 3, "SAME", 2, output_padding=1)
    with pytest.raises(ValueError, match="stride"):
        ops.conv_transpose_output_size(4, 3, 1, 0)


# ----------------------------------------------------------------------------- the layers

LAYERS = {
    "Conv1D": (layers.Conv1D(4, 3, stride=2, padding="SAME"), (-1, 9, 2)),
    "Conv((3,))": (layers.Conv(4, (3,), dilation=2), (-1, 9, 2)),
    "Conv": (layers.Conv(4, 3, padding=1), (-1, 8, 8, 2)),
    "Conv3D": (layers.Conv3D(4, (1, 3, 3), groups=2), (-1, 3, 6, 6, 2)),
    "ConvTranspose 1-D": (layers.ConvTranspose(3, (4,), 2, 1), (-1, 5, 2)),
    "ConvTranspose": (layers.ConvTranspose(3, 3, 2, 1, output_padding=1), (-1, 4, 5, 2)),
    "ConvTranspose 3-D": (layers.ConvTranspose(3, (2, 2, 2), 2, "SAME"), (-1, 2, 3, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_init_promises_the_shape_apply_returns(name):
    layer, shape = LAYERS[name]
    x = jnp.asarray(rand((3, *shape[1:]), 17))
    out_shape, params = assert_shape_promise(layer, shape, x)
    assert params["w"].shape[-1] == out_shape[-1]


def test_descriptions_and_params():
    assert repr(layers.Conv1D(4, 3, stride=2)) == "<Layer Conv1D(4, 3, stride=2)>"
    assert repr(layers.Conv(8, (3, 3, 3))) == "<Layer Conv(8, (3, 3, 3))>"
    assert (
        repr(layers.ConvTranspose(3, 4, 2, 1)) == "<Layer ConvTranspose(3, 4, stride=2, padding=1)>"
    )
    _, p = layers.Conv3D(5, 3).init(jax.random.key(0), (-1, 4, 4, 4, 2))
    assert p["w"].shape == (3, 3, 3, 2, 5) and p["b"].shape == (5,)
    net = fn.serial(layers.Conv1D(8, 5), layers.Relu(), layers.Flatten(), layers.Dense(2))
    assert fn.summary(net, (-1, 20, 3)).total == 5 * 3 * 8 + 8 + 16 * 8 * 2 + 2


def test_a_2d_conv_layer_still_takes_the_cpu_kernels():
    """2-D convolutions go through functional.conv2d: a one-channel convolution's forward pass
    is shifted products in a program funcnn.jit compiles for a CPU, as before."""
    layer = layers.Conv(4, 3, padding="SAME")
    _, params = layer.init(jax.random.key(0), (-1, 8, 8, 1))
    x = jnp.ones((2, 8, 8, 1))

    def loss(p):
        return layer.apply(p, x).sum()

    with compiler.cpu_tuning(True):
        cpu = fn.jit(jax.grad(loss)).trace(params).lower(lowering_platforms=("cpu",)).as_text()
    assert cpu.count("stablehlo.convolution") == 1  # the weight gradient's; two with plain lax


# ------------------------------------------------------------------------------ bad input


def test_apply_refuses_an_input_smaller_than_the_window():
    layer = layers.Conv(4, 5)
    _, params = layer.init(jax.random.key(0), (-1, 16, 16, 1))
    for apply in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(
            ValueError, match=r"Conv\(4, 5\): on input \(1, 3, 3, 1\), along the height.*larger"
        ):
            apply(params, jnp.ones((1, 3, 3, 1)))
    layer = layers.Conv1D(2, 4, dilation=3)
    _, params = layer.init(jax.random.key(0), (-1, 16, 1))
    with pytest.raises(
        ValueError, match=r"Conv1D\(2, 4, dilation=3\): on input \(1, 9, 1\), along the width"
    ):
        layer.apply(params, jnp.ones((1, 9, 1)))


def test_apply_refuses_params_of_the_wrong_shape():
    layer = layers.Conv(4, 3)
    _, params = layer.init(jax.random.key(0), (-1, 8, 8, 1))
    x = jnp.ones((1, 8, 8, 1))
    _, big = layers.Conv(4, 5).init(jax.random.key(0), (-1, 8, 8, 1))
    cases = [
        (big, r"params\['w'\] must have shape \(3, 3, 1, 4\), got shape \(5, 5, 1, 4\)"),
        ({**params, "b": jnp.zeros(1)}, r"params\['b'\] must have shape \(4,\)"),
        ({"w": params["w"]}, r"params must hold \['w', 'b'\].*missing 'b'"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=r"Conv\(4, 3\): " + match):
            jax.jit(layer.apply)(bad, x)
    no_bias = layers.Conv(4, 3, use_bias=False)
    with pytest.raises(ValueError, match=r"unexpected 'b'"):
        no_bias.apply(params, x)
    layer = layers.ConvTranspose(2, (3,), 2)
    _, params = layer.init(jax.random.key(0), (-1, 5, 3))
    with pytest.raises(ValueError, match=r"ConvTranspose\(2, \(3,\), stride=2\): params\['w'\]"):
        layer.apply({**params, "w": jnp.zeros((4, 3, 2))}, jnp.ones((1, 5, 3)))
    with pytest.raises(
        ValueError, match=r"ConvTranspose\(2, \(3,\), stride=2\): expected 3 input channels"
    ):
        layer.apply(params, jnp.ones((1, 5, 4)))


def test_wrong_rank_is_named_by_layout():
    with pytest.raises(
        ValueError,
        match=r"Conv1D\(4, 3\): expected NWC sequences of rank 3 \(batch, width, channels\)",
    ):
        layers.Conv1D(4, 3).init(jax.random.key(0), (-1, 8, 8, 1))
    layer = layers.Conv3D(4, 3)
    _, params = layer.init(jax.random.key(0), (-1, 5, 5, 5, 1))
    with pytest.raises(
        ValueError, match=r"Conv3D\(4, 3\): expected NDHWC volumes of rank 5 \(batch, depth, height"
    ):
        layer.apply(params, jnp.ones((1, 5, 5, 1)))


def test_an_empty_transposed_output_is_an_init_error():
    with pytest.raises(
        ValueError,
        match=r"ConvTranspose\(2, 3, padding=3\): on input \(-1, 1, 4, 1\), along the height, "
        "the output would be empty",
    ):
        layers.ConvTranspose(2, 3, padding=3).init(jax.random.key(0), (-1, 1, 4, 1))


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: layers.ConvTranspose(2, 3, 2, 1, output_padding=2),
            r"output_padding must be smaller than max\(stride, dilation\)",
        ),
        (
            lambda: layers.ConvTranspose(2, 3, 2, "SAME", output_padding=1),
            r"output_padding needs explicit padding",
        ),
        (
            lambda: layers.Conv(2, (3, 3, 3, 3)),
            r"Conv\(2, \(3, 3, 3, 3\)\): kernel must be an int \(2-D\) or a tuple of 1, 2 or 3",
        ),
        (
            lambda: layers.Conv1D(2, (3, 3)),
            r"Conv1D\(2, \(3, 3\)\): kernel must be an int >= 1 or one of them",
        ),
        (
            lambda: layers.Conv3D(2, 3, padding=((1, 1), (1, 1))),
            r"Conv3D.*padding must be .*one pair \(lo, hi\) per spatial axis \(3 of them\)",
        ),
        (
            lambda: layers.Conv1D(3, 3, groups=2),
            r"Conv1D\(3, 3, groups=2\): filters \(3\) must divide by groups",
        ),
    ],
)
def test_bad_construction_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
