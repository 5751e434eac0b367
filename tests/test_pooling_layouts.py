"""Max, average and sum pooling of 1 to 3 spatial axes in any layout (``spec``).

Checked against NumPy loops written from the formulas, against the 2-D NHWC ops already in
funcnn (another layout is a transpose away), and against PyTorch's max_pool / avg_pool 1d,
2d and 3d in their NC... layouts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import compiler, layers, ops
from funcnn import functional as F
from tests.layer_support import assert_shape_promise, rand


def np_pool(x, spec, window, stride, padding, kind):
    """Pool ``x`` laid out as ``spec``: to channels last, windows by loops, back."""
    axes = ops.layout(spec)
    order = (axes.batch, *axes.spatial, axes.channels)
    xl = np.transpose(x.astype(np.float64), order)
    r = len(axes.spatial)
    window, stride = (window,) * r if isinstance(window, int) else window, stride
    stride = window if stride is None else (stride,) * r if isinstance(stride, int) else stride
    if padding == "VALID":
        pads = ((0, 0),) * r
    elif padding == "SAME":
        pads = []
        for n, f, s in zip(xl.shape[1:-1], window, stride):
            total = max((-(-n // s) - 1) * s + f - n, 0)
            pads.append((total // 2, total - total // 2))
    else:
        pads = ((padding, padding),) * r if isinstance(padding, int) else padding
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(xl, ((0, 0), *pads, (0, 0)), constant_values=fill)
    real = np.pad(np.ones(xl.shape[1:-1]), pads)
    out = [(m - f) // s + 1 for m, f, s in zip(xp.shape[1:-1], window, stride)]
    y = np.zeros((xl.shape[0], *out, xl.shape[-1]))
    for idx in np.ndindex(*out):
        sl = tuple(slice(i * s, i * s + f) for i, s, f in zip(idx, stride, window))
        patch = xp[(slice(None), *sl)].reshape(xl.shape[0], -1, xl.shape[-1])
        if kind == "max":
            y[(slice(None), *idx)] = patch.max(1)
        elif kind == "sum":
            y[(slice(None), *idx)] = patch.sum(1)
        else:
            y[(slice(None), *idx)] = patch.sum(1) / real[sl].sum()
    return np.transpose(y, np.argsort(order))


SPECS = {1: ["NWC", "NCW"], 2: ["NHWC", "NCHW", "HWNC"], 3: ["NDHWC", "NCDHW"]}
SIZES = {1: (9,), 2: (7, 8), 3: (5, 6, 4)}
POOL_GRID = [(2, None, "VALID"), (3, 2, "SAME"), (3, 1, 1), (2, 3, 0)]
OPS = {"max": ops.max_pool, "avg": ops.avg_pool, "sum": ops.sum_pool}


def laid_out(spec, spatial, channels=3, batch=2, seed=0):
    axes = ops.layout(spec)
    shape = [0] * len(spec)
    shape[axes.batch], shape[axes.channels] = batch, channels
    for a, n in zip(axes.spatial, spatial):
        shape[a] = n
    return rand(tuple(shape), seed)


@pytest.mark.parametrize("kind", sorted(OPS))
@pytest.mark.parametrize("spec", [s for r in SPECS.values() for s in r])
@pytest.mark.parametrize("window, stride, padding", POOL_GRID)
def test_pooling_matches_numpy_in_every_layout(kind, spec, window, stride, padding):
    x = laid_out(spec, SIZES[len(spec) - 2])
    got = OPS[kind](jnp.asarray(x), window, stride, padding, spec)
    np.testing.assert_allclose(
        np.asarray(got), np_pool(x, spec, window, stride, padding, kind), rtol=1e-5, atol=1e-5
    )


def test_asymmetric_padding_and_per_axis_windows():
    x = laid_out("NCDHW", (5, 6, 4), seed=1)
    window, stride, pads = (2, 3, 2), (1, 2, 2), ((1, 0), (0, 2), (1, 1))
    for kind, op in OPS.items():
        got = op(jnp.asarray(x), window, stride, pads, "NCDHW")
        want = np_pool(x, "NCDHW", window, stride, pads, kind)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_a_layout_is_a_transpose_of_the_2d_nhwc_ops():
    x = jnp.asarray(rand((2, 3, 9, 8), 2))  # NCHW
    nhwc = jnp.transpose(x, (0, 2, 3, 1))
    for op, op2d in ((ops.max_pool, F.max_pool), (ops.avg_pool, F.avg_pool)):
        for args in ((2, None, "VALID"), (3, 2, "SAME"), (3, 2, ((0, 2), (1, 0)))):
            want = jnp.transpose(op2d(nhwc, *args), (0, 3, 1, 2))
            np.testing.assert_allclose(op(x, *args, spec="NCHW"), want, rtol=1e-6, atol=1e-6)
    sums = ops.sum_pool(x, 3, 2, 1, "NCHW")
    counts = ops.sum_pool(jnp.ones_like(x), 3, 2, 1, "NCHW")
    np.testing.assert_allclose(sums / counts, ops.avg_pool(x, 3, 2, 1, "NCHW"), rtol=1e-6)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("window, stride, padding", [(2, None, 0), (3, 2, 1), (3, 1, 1)])
def test_pooling_against_torch(rank, window, stride, padding):
    torch = pytest.importorskip("torch")
    spec = "NC" + "DHW"[3 - rank :]
    x = laid_out(spec, SIZES[rank], seed=3)
    tf = torch.nn.functional
    xt = torch.tensor(x)
    s = window if stride is None else stride
    kw = dict(kernel_size=window, stride=s, padding=padding)
    max_t = getattr(tf, f"max_pool{rank}d")(xt, **kw)
    avg_t = getattr(tf, f"avg_pool{rank}d")(xt, count_include_pad=False, **kw)
    # torch has no sum pooling: the average over whole windows, zeros included, times F^r
    sum_t = getattr(tf, f"avg_pool{rank}d")(xt, count_include_pad=True, **kw) * window**rank
    for op, want in ((ops.max_pool, max_t), (ops.avg_pool, avg_t), (ops.sum_pool, sum_t)):
        got = op(jnp.asarray(x), window, stride, padding, spec)
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the layers

LAYERS = {
    "MaxPool NCHW": (layers.MaxPool(2, spec="NCHW"), (-1, 3, 8, 9)),
    "AvgPool NWC": (layers.AvgPool((3,), 2, "SAME"), (-1, 9, 2)),
    "SumPool NCDHW": (layers.SumPool(2, 1, 1, spec="NCDHW"), (-1, 2, 3, 4, 5)),
    "SumPool NHWC": (layers.SumPool(2), (-1, 6, 6, 2)),
    "MaxPool NDHWC": (layers.MaxPool((1, 2, 2)), (-1, 3, 4, 4, 2)),
    "AvgPool HWNC": (layers.AvgPool((2, 3), spec="HWNC"), (4, 9, -1, 2)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_init_promises_the_shape_apply_returns(name):
    layer, shape = LAYERS[name]
    x = jnp.asarray(rand(tuple(3 if d == -1 else d for d in shape), 4))
    out_shape, params = assert_shape_promise(layer, shape, x, vmap=-1 not in shape[1:])
    assert params == {}


def test_layers_keep_their_nhwc_signature_and_say_their_layout():
    assert repr(layers.MaxPool(3, 2)) == "<Layer MaxPool(3, stride=2)>"
    assert repr(layers.AvgPool(2, spec="NCHW")) == "<Layer AvgPool(2, spec='NCHW')>"
    assert layers.SumPool().init(jax.random.key(0), (-1, 6, 6, 1))[0] == (-1, 3, 3, 1)
    x = jnp.asarray(rand((2, 3, 8, 8), 5))
    y = layers.MaxPool(2, spec="NCHW").apply({}, x)
    np.testing.assert_array_equal(
        y, jnp.transpose(F.max_pool(jnp.transpose(x, (0, 2, 3, 1))), (0, 3, 1, 2))
    )


def test_nhwc_max_pooling_still_takes_the_cpu_kernel():
    x = jnp.ones((1, 8, 8, 1))

    def loss(x):
        return layers.MaxPool(2).apply({}, x).sum()

    with compiler.cpu_tuning(True):
        cpu = fn.jit(jax.grad(loss)).trace(x).lower(lowering_platforms=("cpu",)).as_text()
    assert "xi8>" in cpu and "select_and_scatter" not in cpu


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: layers.MaxPool(2, spec="NHHC"),
            r"MaxPool\(2, spec='NHHC'\): spec must name each axis once, got 'NHHC' \(H twice\)",
        ),
        (
            lambda: layers.AvgPool(2, spec="NHW"),
            r"AvgPool\(2, spec='NHW'\): spec must name the batch N, the channels C",
        ),
        (
            lambda: layers.SumPool(2, spec="N-HC"),
            r"SumPool\(2, spec='N-HC'\): spec must be a string of axis letters",
        ),
        (
            lambda: layers.MaxPool((2, 2), spec="NCW"),
            r"MaxPool\(\(2, 2\), spec='NCW'\): window must be an int >= 1 or one of them",
        ),
        (
            lambda: layers.MaxPool((2, 2, 2, 2)),
            r"window must be an int \(2-D\) or a tuple of 1, 2 or 3 sizes",
        ),
        (lambda: layers.SumPool(2, padding=((1, 1),)), r"SumPool.*padding must be"),
    ],
)
def test_bad_construction_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_an_empty_output_is_an_error_at_init_and_at_apply():
    with pytest.raises(
        ValueError,
        match=r"AvgPool\(3, spec='NCW'\): on input \(-1, 4, 2\), along the width.*larger than "
        "the padded input",
    ):
        layers.AvgPool(3, spec="NCW").init(jax.random.key(0), (-1, 4, 2))
    layer = layers.MaxPool(5)
    layer.init(jax.random.key(0), (-1, 16, 16, 1))
    for apply in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(
            ValueError, match=r"MaxPool\(5\): on input \(1, 3, 3, 1\), along the height.*larger"
        ):
            apply({}, jnp.ones((1, 3, 3, 1)))
    with pytest.raises(
        ValueError,
        match=r"SumPool\(2, spec='NCDHW'\): expected NCDHW volumes of rank 5 \(batch, channels, "
        r"depth, height, width\), got shape \(1, 2, 4, 4\)",
    ):
        layers.SumPool(2, spec="NCDHW").apply({}, jnp.ones((1, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"MaxPool\(2\): this layer has no params"):
        layers.MaxPool(2).apply({"w": jnp.ones(2)}, jnp.ones((1, 4, 4, 1)))
    with pytest.raises(TypeError, match=r"MaxPool\(2\): expected one array as input"):
        layers.MaxPool(2).apply({}, (jnp.ones((1, 4, 4, 1)),) * 2)
