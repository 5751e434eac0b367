"""The CPU formulations of ``conv2d`` (one input channel; 2–8 input channels) and
``max_pool`` (tiling windows), in ``funcnn._cpu``.

In a program that ``funcnn.jit`` compiles for a CPU, funcnn computes a one-channel convolution
as a sum of shifted products, gives a few-channel convolution an in-place input gradient, and
gives tiling max pooling a cheaper derivative (docs/benchmarks.md has the timings). They must
be the same functions, with the same derivatives, as ``lax.conv_general_dilated`` and
``lax.reduce_window``, which every other platform (and every program outside ``funcnn.jit``)
still runs: checked here value for value, in reverse and forward mode, on ties, and in the
lowered programs. So what is compared with lax below is compiled by ``fn.jit`` (outermost, as
fit's programs are), after a check that its CPU program does take the formulation;
tests/test_cpu_tuning.py checks that nothing else takes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import funcnn as fn
from funcnn import compiler, core, layers, losses, train
from funcnn import functional as F
from funcnn._cpu import conv as cpu_conv

DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def tuning_on():
    """These tests are about the tuned programs, whatever FUNCNN_CPU_TUNING says."""
    with compiler.cpu_tuning(True):
        yield


def lax_conv(x, w, stride, padding, dilation):
    pad = F.spatial_padding(padding)
    if isinstance(pad, str):
        dilated = [d * (k - 1) + 1 for k, d in zip(w.shape[:2], dilation)]
        pad = lax.padtype_to_pads(x.shape[1:3], dilated, stride, pad)
    return lax.conv_general_dilated(x, w, stride, pad, rhs_dilation=dilation, dimension_numbers=DN)


def lax_max_pool(x, window):
    dims = (1, *window, 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID")


def lowered(f, *args, platform):
    """The program ``fn.jit(f)`` lowers to for ``platform``."""
    return fn.jit(f).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def tuned_vjp(f):
    """``(g, *args) ↦ ∂f/∂args`` applied to ``g``, traced whole by ``fn.jit`` (which must be the
    outermost transformation: it adds compiler options, which JAX takes only at the top)."""
    return fn.jit(lambda g, *args: jax.vjp(f, *args)[1](g))


def tuned_jvp(f):
    """``(primals, tangents) ↦`` the tangent of ``f``, traced whole by ``fn.jit``."""
    return fn.jit(lambda primals, tangents: jax.jvp(f, primals, tangents)[1])


def shifted_products(f, *args):
    """The CPU program of ``f`` computes its forward convolutions without one."""
    return "stablehlo.convolution" not in lowered(f, *args, platform="cpu")


def in_place(f, *args):
    """The CPU program of ``f`` sums an input gradient in place."""
    return "dynamic_update_slice" in lowered(f, *args, platform="cpu")


def winners_index(f, *args):
    """The CPU program of ``f`` has the pooling derivative over (value, int8 position)."""
    text = lowered(f, *args, platform="cpu")
    return "xi8>" in text and "select_and_scatter" not in text


CONVS = [  # stride, padding, dilation, kernel
    ((1, 1), "SAME", (1, 1), (5, 5)),
    ((2, 2), "VALID", (1, 1), (3, 3)),
    ((1, 2), ((1, 2), (0, 3)), (2, 1), (3, 4)),
    ((3, 1), "SAME", (2, 2), (2, 3)),
]


@pytest.mark.parametrize("stride, padding, dilation, kernel", CONVS)
def test_one_channel_conv_is_lax_conv_with_its_derivatives(x64, stride, padding, dilation, kernel):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 11, 13, 1)))
    w = jnp.asarray(rng.normal(size=(*kernel, 1, 4)))

    def conv(x, w):
        return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)

    def ref(x, w):
        return lax_conv(x, w, stride, padding, dilation)

    assert shifted_products(conv, x, w)
    ours = fn.jit(conv)
    y, y_ref = ours(x, w), ref(x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    g = jnp.asarray(rng.normal(size=y.shape))
    for got, want in zip(tuned_vjp(conv)(g, x, w), jax.vjp(ref, x, w)[1](g)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    tx, tw = jnp.asarray(rng.normal(size=x.shape)), jnp.asarray(rng.normal(size=w.shape))
    t_ours = tuned_jvp(conv)((x, w), (tx, tw))
    _, t_ref = jax.jvp(ref, (x, w), (tx, tw))
    np.testing.assert_allclose(t_ours, t_ref, rtol=1e-12, atol=1e-12)

    # second order: a Hessian-vector product through the loss ½‖y‖²
    def hvp(f):
        def loss(w):
            return 0.5 * jnp.sum(f(x, w) ** 2)

        return jax.jvp(jax.grad(loss), (w,), (tw,))[1]

    np.testing.assert_allclose(fn.jit(lambda: hvp(conv))(), hvp(ref), rtol=1e-10, atol=1e-10)


def test_one_channel_conv_in_bfloat16_sums_in_float32():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 28, 28, 1)).astype(np.float32)
    w = rng.normal(size=(5, 5, 1, 6)).astype(np.float32)
    xb, wb = (jnp.asarray(a, jnp.bfloat16).astype(jnp.float32) for a in (x, w))
    exact = lax_conv(xb, wb, (1, 1), "SAME", (1, 1))

    def conv(x, w):
        return F.conv2d(x, w, padding="SAME")

    x16, w16 = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    assert shifted_products(conv, x16, w16)
    y = fn.jit(conv)(x16, w16)
    assert y.dtype == jnp.bfloat16
    err = np.abs(np.asarray(y, np.float32) - exact).max() / np.abs(exact).max()
    assert err < 2**-8  # one bfloat16 rounding of the output, not 25 of the partial sums


@pytest.mark.parametrize("window, shape", [((2, 2), (3, 9, 7, 4)), ((2, 3), (2, 8, 8, 3)),
                                           ((3, 3), (2, 6, 7, 1))])  # fmt: skip
def test_tiled_max_pool_is_reduce_window_with_its_derivative(window, shape):
    rng = np.random.default_rng(2)
    # small integers: many ties, where the derivative must pick each window's first maximum
    x = jnp.asarray(rng.integers(0, 3, shape).astype(np.float32))

    def pool(x):
        return F.max_pool(x, window)

    def ref(x):
        return lax_max_pool(x, window)

    assert winners_index(jax.grad(lambda x: pool(x).sum()), x)
    ours = fn.jit(pool)
    y = ours(x)
    np.testing.assert_array_equal(y, ref(x))
    g = jnp.asarray(rng.normal(size=y.shape).astype(np.float32))
    np.testing.assert_array_equal(tuned_vjp(pool)(g, x)[0], jax.vjp(ref, x)[1](g)[0])
    t = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    np.testing.assert_array_equal(tuned_jvp(pool)((x,), (t,)), jax.jvp(ref, (x,), (t,))[1])
    np.testing.assert_array_equal(fn.jit(jax.jacfwd(lambda x: pool(x).sum()))(x),
                                  jax.grad(lambda x: ref(x).sum())(x))  # fmt: skip
    batched = fn.jit(jax.vmap(lambda xi: pool(xi[None])[0]))(x)
    np.testing.assert_array_equal(batched, ref(x))


def test_max_pool_gradient_by_hand():
    """The first maximum of each window gets the whole upstream gradient."""
    x = jnp.array([[1.0, 3.0, 2.0, 2.0], [3.0, 0.0, 0.0, 1.0]]).reshape(1, 2, 4, 1)
    g = jnp.array([10.0, 20.0]).reshape(1, 1, 2, 1)
    assert winners_index(jax.grad(lambda x: F.max_pool(x).sum()), x)
    for vjp in (lambda g, x: jax.vjp(F.max_pool, x)[1](g), tuned_vjp(F.max_pool)):
        dx = vjp(g, x)[0][0, :, :, 0]  # lax's own, then the CPU formulation
        np.testing.assert_array_equal(dx, [[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_a_cpu_program_takes_the_fast_paths_and_a_gpu_program_does_not():
    x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 4))

    def net(w):
        return F.max_pool(F.conv2d(x, w, padding="SAME")).sum()

    cpu, gpu = lowered(jax.grad(net), w, platform="cpu"), lowered(jax.grad(net), w, platform="cuda")
    # forward on the CPU: shifted products, no convolution; the weight gradient is still the
    # convolution's own, so exactly one convolution remains (two elsewhere)
    assert cpu.count("stablehlo.convolution") == 1 and gpu.count("stablehlo.convolution") == 2
    # the pooling derivative: a reduce-window over (value, int8 position), no select-and-scatter
    assert "xi8>" in cpu and "select_and_scatter" not in cpu
    assert "xi8>" not in gpu and "select_and_scatter" in gpu


def test_other_shapes_keep_lax():
    """Many input channels, strides, dilations, groups, overlapping or padded pools: the
    plain ops (a convolution's input gradient stays a convolution)."""
    for shape, kernel, kw in [
        ((1, 8, 8, 16), (3, 3, 16, 2), {}),
        ((1, 8, 8, 3), (3, 3, 3, 2), {"stride": 2}),
        ((1, 8, 8, 3), (3, 3, 3, 2), {"dilation": 2}),
        ((1, 8, 8, 4), (3, 3, 2, 2), {"groups": 2}),
    ]:
        x, w = jnp.ones(shape), jnp.ones(kernel)
        text = lowered(
            jax.grad(lambda x, w=w, kw=kw: F.conv2d(x, w, **kw).sum()), x, platform="cpu"
        )
        assert text.count("stablehlo.convolution") == 1 and "dynamic_update_slice" not in text
    x1 = jnp.ones((1, 8, 8, 1))
    for pool in (lambda x: F.max_pool(x, 3, stride=2), lambda x: F.max_pool(x, 2, padding=1)):
        text = lowered(jax.grad(lambda x, pool=pool: pool(x).sum()), x1, platform="cpu")
        assert "select_and_scatter" in text and "xi8>" not in text


def test_mismatched_channels_are_still_an_error():
    for conv in (F.conv2d, fn.jit(F.conv2d)):
        with pytest.raises(ValueError, match="feature"):
            conv(jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 2, 4)))


def test_second_derivatives_through_both():
    """A Hessian through conv2d then max_pool: the pooling derivative's window positions are
    constants (max pooling is piecewise linear), so it must differentiate again like lax's."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 4, 4, 1)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 1, 2)).astype(np.float32))

    def loss(pool, conv):
        return lambda w: jnp.sum(pool(jnp.tanh(conv(x, w))) ** 2)

    def ref_conv(x, w):
        return lax_conv(x, w, (1, 1), "SAME", (1, 1))

    ours = loss(F.max_pool, lambda x, w: F.conv2d(x, w, padding="SAME"))
    ref = loss(lambda h: lax_max_pool(h, (2, 2)), ref_conv)
    v = jnp.asarray(rng.normal(size=w.shape).astype(np.float32))

    def hvp(loss):  # forward over reverse, as jax.hessian
        return jax.jvp(jax.grad(loss), (w,), (v,))[1]

    assert shifted_products(ours, w) and winners_index(jax.grad(ours), w)
    np.testing.assert_allclose(fn.jit(lambda: hvp(ours))(), hvp(ref), rtol=1e-4, atol=1e-4)

    def pool_loss(x):
        return jnp.sum(F.max_pool(x) ** 2)

    assert winners_index(jax.grad(pool_loss), x)
    h_pool = fn.jit(jax.hessian(pool_loss))(x)
    h_ref = jax.hessian(lambda x: jnp.sum(lax_max_pool(x, (2, 2)) ** 2))(x)
    np.testing.assert_array_equal(h_pool, h_ref)


@pytest.mark.parametrize("dx, dw", [(jnp.int32, jnp.float32), (jnp.float16, jnp.float32)])
def test_one_channel_conv_of_mixed_dtypes_is_lax_on_the_promoted_operands(dx, dw):
    """conv2d promotes its operands as ``jnp.matmul`` does (int and half precision beside
    float32 weights compute in float32); the CPU formulation then computes what lax does
    on the promoted operands."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.integers(-3, 4, size=(1, 5, 5, 1)), dx)
    w = jnp.asarray(rng.normal(size=(3, 3, 1, 2)), dw)
    dtype = jnp.promote_types(dx, dw)
    want = lax_conv(x.astype(dtype), w.astype(dtype), (1, 1), "VALID", (1, 1))
    for conv in (F.conv2d, fn.jit(F.conv2d)):
        got = conv(x, w)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_tiled_max_pool_with_nan_and_infinities(dtype):
    """NaN wins a window's value; the derivative picks the same position as lax's."""
    rng = np.random.default_rng(4)
    values = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0])
    x = rng.choice(values, size=(2, 6, 6, 2), p=[0.1, 0.1, 0.3, 0.25, 0.25])
    x[0, :2, :2, 0] = -np.inf  # a window of -inf only
    x[0, :2, 2:4, 0] = np.nan  # a window of NaN only
    x = jnp.asarray(x, dtype)

    def ref(x):
        return lax_max_pool(x, (2, 2))

    def same(a, b):  # float32 first: numpy sees no NaN in bfloat16
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))

    assert winners_index(jax.grad(lambda x: F.max_pool(x).astype(jnp.float32).sum()), x)
    y, y_ref = fn.jit(F.max_pool)(x), ref(x)
    assert y.dtype == dtype
    same(y, y_ref)
    g = jnp.asarray(rng.normal(size=y.shape), dtype)
    same(tuned_vjp(F.max_pool)(g, x)[0], jax.vjp(ref, x)[1](g)[0])
    t = jnp.asarray(rng.normal(size=x.shape), dtype)
    ty, ty_ref = tuned_jvp(F.max_pool)((x,), (t,)), jax.jvp(ref, (x,), (t,))[1]
    # on a window of -inf only, lax's forward derivative is 0 while its reverse derivative
    # sends the cotangent to the first position; ours is one linear map and keeps the reverse
    # one (the one training uses): the tangent of the window's first position
    only_minus_inf = np.asarray(y_ref == -np.inf)
    assert only_minus_inf[0, 0, 0, 0]
    same(jnp.where(only_minus_inf, 0, ty), jnp.where(only_minus_inf, 0, ty_ref))
    same(ty[only_minus_inf], t[:, ::2, ::2][only_minus_inf])


def test_shapes_smaller_than_the_window_are_empty_as_with_lax():
    x = jnp.ones((1, 1, 3, 1))
    y = fn.jit(lambda x: F.max_pool(x, 2))(x)
    assert y.shape == lax_max_pool(x, (2, 2)).shape == (1, 0, 1, 1)
    np.testing.assert_array_equal(fn.jit(jax.grad(lambda x: F.max_pool(x, 2).sum()))(x), 0 * x)
    x, w = jnp.ones((1, 2, 4, 1)), jnp.ones((3, 3, 1, 2))  # a kernel taller than the image
    for padding in ("VALID", ((0, 0), (1, 1))):
        y = fn.jit(lambda x, w, p=padding: F.conv2d(x, w, padding=p))(x, w)
        assert y.shape == lax_conv(x, w, (1, 1), padding, (1, 1)).shape
        assert y.shape[1] == 0


def test_one_channel_conv_in_float16():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 1)), jnp.float16)
    w = jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float16)
    kw = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2))

    def conv(x, w):
        return F.conv2d(x, w, **kw)

    assert shifted_products(conv, x, w)
    y = fn.jit(conv)(x, w)
    exact = lax_conv(
        np.asarray(x, np.float64), np.asarray(w, np.float64), (2, 1), kw["padding"], (1, 2)
    )
    assert y.dtype == jnp.float16
    assert np.abs(np.asarray(y, np.float64) - exact).max() / np.abs(exact).max() < 2**-10


def test_vmap_and_remat_around_both():
    """Per-example images and kernels under vmap; the gradient through jax.checkpoint."""
    rng = np.random.default_rng(6)
    xs = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 1)).astype(np.float32))
    ws = jnp.asarray(rng.normal(size=(3, 3, 3, 1, 2)).astype(np.float32))

    def ours(x, w):
        return F.max_pool(F.conv2d(x, w, padding="SAME"))

    def ref(x, w):
        return lax_max_pool(lax_conv(x, w, (1, 1), "SAME", (1, 1)), (2, 2))

    assert shifted_products(jax.vmap(ours), xs, ws)
    want = np.stack([ref(x, w) for x, w in zip(xs, ws)])
    np.testing.assert_allclose(fn.jit(jax.vmap(ours))(xs, ws), want, rtol=1e-5, atol=1e-5)
    shared = fn.jit(jax.vmap(ours, (0, None)))(xs, ws[0])
    shared_ref = jax.vmap(ref, (0, None))(xs, ws[0])
    np.testing.assert_allclose(shared, shared_ref, rtol=1e-5, atol=1e-5)

    def loss(f):
        return lambda w: jnp.sum(jax.vmap(f, (0, None))(xs, w) ** 2)

    assert winners_index(jax.grad(jax.checkpoint(loss(ours))), ws[0])
    np.testing.assert_allclose(
        fn.jit(jax.grad(jax.checkpoint(loss(ours))))(ws[0]),
        jax.grad(loss(ref))(ws[0]),
        rtol=1e-4,
        atol=1e-4,
    )


def test_fit_with_scan_takes_the_steps_of_plain_lax():
    """Two epochs of SGD inside fit(scan=True) against the same steps written out with lax."""
    net = core.serial(
        layers.Conv(2, 3, padding="SAME"), layers.MaxPool(2), layers.Flatten(), layers.Dense(3)
    )
    _, params = net.init(jax.random.key(0), (-1, 6, 6, 1))
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(8, 6, 6, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 3, 8))
    step = train.train_step(net.apply, losses.softmax_cross_entropy, optax.sgd(0.1), donate=False)
    opt_state = optax.sgd(0.1).init(params)
    text = step.trace(params, opt_state, (x[:4], y[:4])).lower().as_text()
    assert "xi8>" in text and "stablehlo.convolution" in text  # fit's steps are tuned ones
    result = train.fit(
        net,
        params,
        x,
        y,
        loss=losses.softmax_cross_entropy,
        optimizer=optax.sgd(0.1),
        epochs=2,
        batch_size=4,
        shuffle=False,
        scan=True,
        progress=False,
    )

    def ref_loss(p, x, y):
        h = lax_conv(x, p["conv_0"]["w"], (1, 1), "SAME", (1, 1)) + p["conv_0"]["b"]
        h = lax_max_pool(h, (2, 2)).reshape(len(x), -1)
        return losses.softmax_cross_entropy(h @ p["dense_0"]["w"] + p["dense_0"]["b"], y)

    p = params
    for _ in range(2):
        for i in (0, 4):
            g = jax.grad(ref_loss)(p, x[i : i + 4], y[i : i + 4])
            p = jax.tree.map(lambda a, b: a - 0.1 * b, p, g)
    for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_windows_of_more_than_127_positions_keep_lax():
    """Positions are int8 with 127 as the reduction's start: windows of up to 127 positions."""
    x = jnp.ones((1, 2, 256, 1))
    for window, fast in (((1, 127), True), ((1, 128), False), ((2, 64), False)):
        text = lowered(jax.grad(lambda x, w=window: F.max_pool(x, w).sum()), x, platform="cpu")
        assert ("xi8>" in text) == fast and ("select_and_scatter" in text) != fast


FEW = [  # input shape, kernel, padding
    ((3, 9, 9, 3), (3, 3, 3, 5), "VALID"),
    ((2, 10, 7, 6), (5, 5, 6, 4), "SAME"),
    ((2, 8, 9, 2), (2, 4, 2, 3), ((2, 0), (1, 3))),
    ((1, 6, 6, 8), (3, 3, 8, 1), 1),
]


@pytest.mark.parametrize("shape, kernel, padding", FEW)
def test_few_channel_conv_is_lax_conv_with_its_derivatives(x64, shape, kernel, padding):
    """2–8 input channels: values, both gradients, forward mode, a Hessian-vector product
    and reverse over reverse, against lax, to 1e-12 in float64."""
    rng = np.random.default_rng(8)
    x, w = jnp.asarray(rng.normal(size=shape)), jnp.asarray(rng.normal(size=kernel))

    def conv(x, w):
        return F.conv2d(x, w, padding=padding)

    def ref(x, w):
        return lax_conv(x, w, (1, 1), padding, (1, 1))

    def input_gradient(x):
        return jax.grad(lambda x: conv(x, w).sum())(x)

    assert "dynamic_update_slice" in lowered(input_gradient, x, platform="cpu")
    assert "dynamic_update_slice" not in lowered(input_gradient, x, platform="cuda")
    ours = fn.jit(conv)
    y, y_ref = ours(x, w), ref(x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    g = jnp.asarray(rng.normal(size=y.shape))
    for got, want in zip(tuned_vjp(conv)(g, x, w), jax.vjp(ref, x, w)[1](g)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    tx, tw = jnp.asarray(rng.normal(size=x.shape)), jnp.asarray(rng.normal(size=w.shape))
    np.testing.assert_allclose(
        tuned_jvp(conv)((x, w), (tx, tw)),
        jax.jvp(ref, (x, w), (tx, tw))[1],
        rtol=1e-12,
        atol=1e-12,
    )

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)) ** 2)

    def hvp(f):  # forward over reverse, in both arguments
        return jax.jvp(jax.grad(loss(f), (0, 1)), (x, w), (tx, tw))[1]

    for got, want in zip(fn.jit(lambda: hvp(conv))(), hvp(ref)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

    def rev_rev(f):  # reverse over reverse: the gradient of a gradient's norm
        def norm(x, w):
            return jnp.sum(jax.grad(loss(f), 0)(x, w) ** 2)

        return jax.grad(norm, (0, 1))

    assert in_place(rev_rev(conv), x, w)
    for got, want in zip(fn.jit(rev_rev(conv))(x, w), rev_rev(ref)(x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_few_channel_conv_under_vmap_per_example_gradients_and_bfloat16():
    rng = np.random.default_rng(9)
    xs = jnp.asarray(rng.normal(size=(4, 2, 8, 8, 3)).astype(np.float32))
    ws = jnp.asarray(rng.normal(size=(4, 3, 3, 3, 2)).astype(np.float32))

    def ours(x, w):
        return F.conv2d(x, w, padding="SAME")

    def ref(x, w):
        return lax_conv(x, w, (1, 1), "SAME", (1, 1))

    def close(a, b):
        for got, want in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    shared = fn.jit(jax.vmap(ours, (0, None)))
    close(shared(xs, ws[0]), jax.vmap(ref, (0, None))(xs, ws[0]))
    close(fn.jit(jax.vmap(ours))(xs, ws), jax.vmap(ref)(xs, ws))  # a kernel per example

    def grads(f, in_axes, tuned=True):  # per-example gradients in the images and the kernels
        def one(x, w):
            return jax.grad(lambda x, w: jnp.sum(jnp.tanh(f(x, w)) ** 2), (0, 1))(x, w)

        jit = fn.jit if tuned else jax.jit
        return jit(jax.vmap(one, in_axes))(xs, ws if in_axes[1] == 0 else ws[0])

    assert in_place(jax.vmap(lambda x, w: jax.grad(lambda x: ours(x, w).sum())(x), (0, None)),
                    xs, ws[0])  # fmt: skip
    close(grads(ours, (0, None)), grads(ref, (0, None), tuned=False))
    close(grads(ours, (0, 0)), grads(ref, (0, 0), tuned=False))
    # bfloat16: the blocks are summed in float32, then rounded once
    xb, wb = xs[0].astype(jnp.bfloat16), ws[0].astype(jnp.bfloat16)
    g = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.bfloat16)
    assert in_place(lambda x, g: jax.vjp(lambda x: ours(x, wb), x)[1](g)[0], xb, g)
    got = fn.jit(lambda x, g: jax.vjp(lambda x: ours(x, wb), x)[1](g)[0])(xb, g)
    exact = jax.vjp(lambda x: ref(x, wb.astype(jnp.float32)), xb.astype(jnp.float32))[1](
        g.astype(jnp.float32)
    )[0]
    assert got.dtype == jnp.bfloat16
    err = np.abs(np.asarray(got, np.float32) - exact).max() / np.abs(exact).max()
    assert err < 2**-8


def test_few_channel_input_gradient_by_hand():
    """One 2×2 kernel on a 2-channel 3×3 image: each output's gradient lands, times the
    kernel, on the 2×2 patch it was computed from."""
    w = jnp.zeros((2, 2, 2, 1)).at[:, :, 0, 0].set(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    w = w.at[:, :, 1, 0].set(10.0)
    g = jnp.array([[1.0, 0.0], [0.0, -1.0]]).reshape(1, 2, 2, 1)
    x = jnp.ones((1, 3, 3, 2))

    def input_gradient(x, g):
        return jax.vjp(lambda x: F.conv2d(x, w), x)[1](g)[0][0]

    assert in_place(input_gradient, x, g)
    dx = fn.jit(input_gradient)(x, g)
    np.testing.assert_array_equal(
        dx[:, :, 0], [[1.0, 2.0, 0.0], [3.0, 3.0, -2.0], [0.0, -3.0, -4.0]]
    )
    np.testing.assert_array_equal(
        dx[:, :, 1], [[10.0, 10.0, 0.0], [10.0, 0.0, -10.0], [0.0, -10.0, -10.0]]
    )


def test_few_channel_conv_is_only_taken_where_it_fits():
    """Channel counts and the size of the blocks (n·Y_h·Y_w·F_h·F_w·C) decide."""
    no_pad = ((0, 0),) * 2
    assert cpu_conv.few_channels(jnp.ones((2, 8, 8, 2)), jnp.ones((3, 3, 2, 4)), (1, 1), no_pad,
                                 (1, 1), 1)  # fmt: skip
    assert not cpu_conv.few_channels(jnp.ones((2, 8, 8, 9)), jnp.ones((3, 3, 9, 4)), (1, 1),
                                     no_pad, (1, 1), 1)  # fmt: skip
    big = jax.ShapeDtypeStruct((4096, 64, 64, 8), jnp.float32)  # 4096·62·62·9·8 blocks
    assert not cpu_conv.few_channels(big, jnp.ones((3, 3, 8, 4)), (1, 1), no_pad, (1, 1), 1)
    assert not cpu_conv.few_channels(jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 1)), (1, 1),
                                     no_pad, (1, 1), 1)  # fmt: skip


def _few_channel_case():
    rng = np.random.default_rng(10)
    x = jnp.asarray(rng.normal(size=(2, 6, 7, 3)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
    return x, w


def _close(a, b, tol=1e-5):
    for got, want in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   rtol=tol, atol=tol)  # fmt: skip


def test_few_channel_conv_inside_shard_map_and_under_explicit_sharding():
    """Meshes whose axes are manual (inside shard_map) or explicit: lax's op, same numbers."""
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    x, w = _few_channel_case()

    def ours(x, w):
        return jnp.sum(jnp.tanh(F.conv2d(x, w, padding="SAME")) ** 2)

    def ref(x, w):
        return jnp.sum(jnp.tanh(lax_conv(x, w, (1, 1), "SAME", (1, 1))) ** 2)

    want = jax.grad(ref, (0, 1))(x, w)
    mesh = jax.make_mesh((1,), ("b",), axis_types=(AxisType.Auto,))

    def sharded(f):
        def per_shard(x, w):
            return jax.lax.psum(jnp.stack(jax.tree.leaves(jax.grad(f, 0)(x, w).sum())), "b")

        return fn.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=(P("b"), P()), out_specs=P()))

    _close(sharded(ours)(x, w), sharded(ref)(x, w))
    explicit = jax.make_mesh((1,), ("b",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(explicit):
        xs = jax.device_put(x, NamedSharding(explicit, P("b")))
        assert not in_place(jax.grad(ours, 0), xs, w)
        _close(fn.jit(jax.grad(ours, 0))(xs, w), want[0])
    assert in_place(jax.grad(ours, 0), x, w)  # the same program, unsharded


def test_few_channel_conv_exports_with_a_symbolic_batch():
    from jax import export

    x, w = _few_channel_case()
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 6, 7, 3"), jnp.float32)
    for jit in (jax.jit, fn.jit):  # lax's program; funcnn's, where the shapes keep lax too
        exported = export.export(jit(lambda x: F.conv2d(x, w, padding="SAME")))(spec)
        _close(exported.call(x), lax_conv(x, w, (1, 1), "SAME", (1, 1)))


@pytest.mark.parametrize("dtype", [jnp.float8_e4m3fn, jnp.float8_e5m2])
def test_float8_keeps_lax(dtype):
    """float8 cannot sum in float32 by promotion: every fast path leaves it to lax."""
    x3, w3 = _few_channel_case()
    for x, w in ((x3, w3), (x3[..., :1], w3[:, :, :1])):  # three channels, one channel
        x8, w8 = x.astype(dtype), w.astype(dtype)

        def ours(x, w8=w8):
            return F.max_pool(F.conv2d(x, w8, padding="SAME")).astype(jnp.float32).sum()

        def ref(x, w8=w8):
            h = lax_conv(x, w8, (1, 1), "SAME", (1, 1))
            return lax_max_pool(h, (2, 2)).astype(jnp.float32).sum()

        assert "platform_index" not in str(fn.jit(jax.grad(ours)).trace(x8).jaxpr)
        text = lowered(jax.grad(ours), x8, platform="cpu")
        assert text.count("stablehlo.convolution") == 2 and "select_and_scatter" in text
        _close(fn.jit(ours)(x8), ref(x8))
        _close(fn.jit(jax.grad(ours))(x8), jax.grad(ref)(x8))


def test_numpy_float64_images_without_x64_give_no_warning():
    import warnings

    x, w = _few_channel_case()
    x64 = np.asarray(x, np.float64)

    def conv(w):  # the NumPy array reaches conv2d as it is, not as a traced argument
        return F.conv2d(x64, w)

    assert in_place(lambda w: jax.vjp(lambda x: F.conv2d(x, w), x64)[1](conv(w))[0], w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fn.jit(conv)(w)
    assert y.dtype == jnp.float32
