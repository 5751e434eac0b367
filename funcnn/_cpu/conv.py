"""Two CPU formulations of ``lax.conv_general_dilated`` (NHWC images, HWIO kernels).

* :func:`single_channel_conv`: a one-channel input (a grayscale first layer) as the sum of the
  ``F_h F_w`` shifted products, one fused loop over the output instead of XLA CPU's
  convolution; derivatives are the convolution's own.
* :func:`few_channel_conv`: a stride-1 convolution of 2 to 8 input channels whose input
  gradient ``∂L/∂x̂[n, i + u, j + v, c] += Σ_o ∂L/∂y[n, i, j, o] · w[u, v, c, o]`` is one
  matmul whose ``F_h F_w`` blocks are added in place, through a primitive of its own.

Both compute the convolution exactly, with the same derivatives in forward and reverse mode,
any order, and under ``vmap`` (checked against lax to 1e-12 in float64 in
``tests/test_cpu_fast_paths.py``); ``docs/benchmarks.md`` has the measurements that chose
them and the bounds of :func:`few_channels`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = [
    "explicit_padding",
    "one_channel",
    "single_channel_conv",
    "few_channels",
    "few_channel_conv",
]


def _dilated(window, dilation):
    return tuple(d * (f - 1) + 1 for f, d in zip(window, dilation))


def _conv(x, w, *, stride, pad, dilation, groups):
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=stride,
        padding=pad,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def explicit_padding(x, w, stride, pad, dilation) -> tuple:
    """``pad`` as per-side pairs ``((top, bottom), (left, right))``: ``"SAME"`` and ``"VALID"``
    resolved as ``lax.conv_general_dilated`` resolves them for 4-D ``x`` and ``w``.

    >>> explicit_padding(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 2)), (1, 1), "SAME", (1, 1))
    ((1, 1), (1, 1))
    """
    if not isinstance(pad, str):
        return tuple(pad)
    window = _dilated(w.shape[:2], dilation)
    return tuple(tuple(p) for p in lax.padtype_to_pads(x.shape[1:3], window, stride, pad))


def one_channel(x, w, pad, dilation, groups) -> bool:
    """Whether :func:`single_channel_conv` applies: one input channel, no groups, and a padded
    input at least as large as the dilated kernel (else ``lax.conv_general_dilated`` says what
    is wrong).

    >>> one_channel(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 2)), ((0, 0),) * 2, (1, 1), 1)
    True
    """
    if groups != 1 or not x.shape[-1] == w.shape[2] == 1:
        return False
    spans = _dilated(w.shape[:2], dilation)
    return all(n + lo + hi >= span for n, (lo, hi), span in zip(x.shape[1:3], pad, spans))


@functools.cache
def single_channel_conv(stride, pad, dilation):
    """``conv2d`` of a one-channel image as ``Σ_{u,v} x̂[s i + D u, s j + D v] · w[u, v, 0, :]``:
    one fused loop over the output instead of XLA CPU's convolution (several times faster
    for LeNet's first layer, ``docs/benchmarks.md``). Derivatives are the convolution's own
    (``lax.conv_general_dilated`` on the tangents), in forward and reverse mode.

    >>> x, w = jnp.arange(16.0).reshape(1, 4, 4, 1), jnp.ones((2, 2, 1, 1))
    >>> single_channel_conv((2, 2), ((0, 0), (0, 0)), (1, 1))(x, w)[0, :, :, 0].tolist()
    [[10.0, 18.0], [42.0, 50.0]]
    """
    conv = functools.partial(_conv, stride=stride, pad=pad, dilation=dilation, groups=1)

    @jax.custom_jvp
    def f(x, w):
        (sh, sw), (dh, dw) = stride, dilation
        dtype = jnp.result_type(x, w)
        acc = jnp.promote_types(dtype, jnp.float32)  # bfloat16 sums in float32, as XLA's
        xp, w = jnp.pad(x, ((0, 0), *pad, (0, 0))).astype(acc), w.astype(acc)
        fh, fw = w.shape[:2]
        ho = (xp.shape[1] - dh * (fh - 1) - 1) // sh + 1
        wo = (xp.shape[2] - dw * (fw - 1) - 1) // sw + 1
        y = None
        for u in range(fh):
            for v in range(fw):
                window = xp[:, u * dh : u * dh + (ho - 1) * sh + 1 : sh,
                            v * dw : v * dw + (wo - 1) * sw + 1 : sw]  # fmt: skip
                term = window * w[u, v, 0]
                y = term if y is None else y + term
        return y.astype(dtype)

    def jvp(primals, tangents):
        (x, w), (tx, tw) = primals, tangents
        y = f(x, w)
        # an input nobody differentiates comes as a symbolic zero: no convolution for it
        parts = [] if isinstance(tx, SymbolicZero) else [conv(tx, w)]
        parts += [] if isinstance(tw, SymbolicZero) else [conv(x, tw)]
        return y, functools.reduce(jnp.add, parts) if parts else jnp.zeros_like(y)

    f.defjvp(jvp, symbolic_zeros=True)
    return f


_FEW_CHANNELS = (2, 8)  # input channels for which the in-place input gradient wins
_MAX_BLOCKS = 2**24  # elements of its n·Y_h·Y_w·F_h·F_w·C blocks: at most 64 MB in float32


def few_channels(x, w, stride, pad, dilation, groups) -> bool:
    """Whether :func:`few_channel_conv` applies: stride and dilation 1, no groups, 2–8 input
    channels, concrete shapes, no explicit or manual mesh axes, and blocks of at most
    ``2²⁴`` elements. The channel range is where the in-place input gradient measured faster
    than XLA's (``docs/benchmarks.md``: from 3 to 8 channels always; from 12 up only on small
    images, and slower on larger ones).

    >>> pad = ((0, 0), (0, 0))
    >>> few_channels(jnp.ones((2, 8, 8, 2)), jnp.ones((3, 3, 2, 4)), (1, 1), pad, (1, 1), 1)
    True
    >>> few_channels(jnp.ones((2, 8, 8, 9)), jnp.ones((3, 3, 9, 4)), (1, 1), pad, (1, 1), 1)
    False
    """
    if groups != 1 or stride != (1, 1) or dilation != (1, 1):
        return False
    if not _FEW_CHANNELS[0] <= x.shape[-1] == w.shape[2] <= _FEW_CHANNELS[1]:
        return False
    if not all(isinstance(d, (int, np.integer)) for d in (*x.shape, *w.shape)):
        return False  # symbolic shapes (jax.export): nothing to compare the sizes with
    if not _auto_sharded(x, w):
        return False
    out = [n + lo + hi - f + 1 for n, (lo, hi), f in zip(x.shape[1:3], pad, w.shape[:2])]
    return min(out) > 0 and x.shape[0] * math.prod(out) * math.prod(w.shape[:3]) <= _MAX_BLOCKS


def _auto_sharded(*arrays) -> bool:
    """No explicit or manual mesh axes (explicit sharding, inside ``shard_map``): the
    primitive's type rule carries no sharding, so those keep ``lax.conv_general_dilated``."""
    typeof, axis_type = getattr(jax, "typeof", None), getattr(jax.sharding, "AxisType", None)
    if typeof is None or axis_type is None:  # a JAX without typed sharding
        return True
    for a in arrays:
        mesh = getattr(getattr(typeof(a), "sharding", None), "mesh", None)
        if any(t != axis_type.Auto for t in getattr(mesh, "axis_types", ())):
            return False
    return True


@functools.cache
def few_channel_conv(pad):
    """``conv2d`` (stride 1) as the primitive ``funcnn_few_channel_conv`` on the zero-padded
    images: the same value, and an input gradient summed in place (:func:`_input_gradient`).

    >>> x, w = jnp.ones((1, 3, 3, 2)), jnp.ones((2, 2, 2, 1))
    >>> few_channel_conv(((0, 0), (0, 0)))(x, w)[0, :, :, 0].tolist()
    [[8.0, 8.0], [8.0, 8.0]]
    """
    config = ((0, 0, 0), *((lo, hi, 0) for lo, hi in pad), (0, 0, 0))

    def f(x, w):
        x = jnp.asarray(x)  # a NumPy float64 array becomes float32 here without x64, as in lax
        return _few_channel_conv_p.bind(lax.pad(x, jnp.zeros((), x.dtype), config), w)

    return f


def _valid_conv(x, w):
    return _conv(x, w, stride=(1, 1), pad="VALID", dilation=(1, 1), groups=1)


def _input_gradient(ct, w, x_shape):
    """The transpose of ``x ↦ _valid_conv(x, w)``: ``B = ∂L/∂y · Wᵀ`` as one matmul into
    blocks ``B[u, v] = (n, Y_h, Y_w, C)``, then ``∂L/∂x[:, u : u + Y_h, v : v + Y_w] += B[u, v]``
    for each of the ``F_h F_w`` kernel positions, in place (``dynamic_update_slice``)."""
    fh, fw, c, _ = w.shape
    n, yh, yw = ct.shape[:3]
    dtype = jnp.result_type(ct, w)
    acc = jnp.promote_types(dtype, jnp.float32)  # bfloat16 sums in float32, as XLA's
    blocks = jnp.einsum("nijo,uvco->uvnijc", ct, w, preferred_element_type=acc)
    out = jnp.zeros((*x_shape[:3], c), acc)
    for u in range(fh):
        for v in range(fw):
            at = (0, u, v, 0)
            here = lax.dynamic_slice(out, at, (n, yh, yw, c))
            out = lax.dynamic_update_slice(out, here + blocks[u, v], at)
    return out.astype(dtype)


# ``y = _valid_conv(x, w)`` as a primitive of its own, so that its transpose in ``x`` can be
# the in-place sum above: ``jax.grad`` transposes a slice into a pad, and XLA fuses a sum of
# padded blocks into its consumers and recomputes it there (docs/benchmarks.md has the
# formulations tried). Bilinear in ``(x, w)``: forward and reverse mode, any order, and
# ``vmap`` all work (checked in tests/test_cpu_fast_paths.py).
_few_channel_conv_p = Primitive("funcnn_few_channel_conv")
_few_channel_conv_p.def_impl(_valid_conv)
mlir.register_lowering(_few_channel_conv_p, mlir.lower_fun(_valid_conv, multiple_results=False))


@_few_channel_conv_p.def_abstract_eval
def _few_channel_conv_shape(x, w):
    spec = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, w)]
    out = jax.eval_shape(_valid_conv, *spec)
    return jax.core.ShapedArray(out.shape, out.dtype)


def _few_channel_conv_jvp(primals, tangents):
    (x, w), (tx, tw) = primals, tangents
    y = _few_channel_conv_p.bind(x, w)
    parts = [] if type(tx) is ad.Zero else [_few_channel_conv_p.bind(tx, w)]
    parts += [] if type(tw) is ad.Zero else [_few_channel_conv_p.bind(x, tw)]
    return y, functools.reduce(jnp.add, parts) if parts else ad.Zero.from_primal_value(y)


def _few_channel_conv_transpose(ct, x, w):
    if type(ct) is ad.Zero:
        return None, None
    if ad.is_undefined_primal(x):  # linear in x (w known): the in-place input gradient
        return _input_gradient(ct, w, x.aval.shape), None
    spec = jax.ShapeDtypeStruct(w.aval.shape, w.aval.dtype)  # linear in w: XLA's own
    return None, jax.linear_transpose(lambda w: _valid_conv(x, w), spec)(ct)[0]


def _few_channel_conv_batch(args, dims):
    (x, w), (bx, bw) = args, dims
    if bw is None:  # a batch of images, one kernel: fold the batch into the images'
        x = jnp.moveaxis(x, bx, 0)
        y = _few_channel_conv_p.bind(x.reshape(-1, *x.shape[2:]), w)
        return y.reshape(*x.shape[:2], *y.shape[1:]), 0
    return jax.vmap(_valid_conv, (bx, bw))(x, w), 0  # a kernel per example: lax's own


ad.primitive_jvps[_few_channel_conv_p] = _few_channel_conv_jvp
ad.primitive_transposes[_few_channel_conv_p] = _few_channel_conv_transpose
batching.primitive_batchers[_few_channel_conv_p] = _few_channel_conv_batch
