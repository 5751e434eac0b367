"""Pure array operations: the maths of every layer, with no parameters of their own.

Every function here is pure, works under ``jax.jit``, ``jax.grad`` and ``jax.vmap``, and
imports no other funcnn module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = [
    "dense",
    "dropout",
    "conv2d",
    "conv_output_size",
    "spatial_padding",
    "max_pool",
    "avg_pool",
    "flatten",
    "lrn",
]


def dense(x: Array, w: Array, b: Array | None = None) -> Array:
    """Affine map of the last axis: ``y = x W + b``.

    This is the lecture's ``h = W x + b`` written for a batch of row vectors.

    Args:
      x: inputs, shape ``(..., n_in)``.
      w: weights, shape ``(n_in, n_out)``.
      b: bias, shape ``(n_out,)``, or ``None`` for no bias.

    Returns:
      ``(..., n_out)``.

    >>> import jax.numpy as jnp
    >>> dense(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.zeros(4)).shape
    (2, 4)
    """
    y = jnp.matmul(x, w)
    return y if b is None else y + b


def dropout(key: Array, x: Array, rate: float) -> Array:
    """Inverted dropout: each element is dropped with probability ``rate``.

    ``y = m ⊙ x / (1 − rate)`` with ``m ~ Bernoulli(1 − rate)``, so ``E[y] = x``.

    Args:
      key: a PRNG key.
      x: any array.
      rate: probability of dropping an element, in ``[0, 1)``.

    >>> import jax
    >>> y = dropout(jax.random.key(0), jax.numpy.ones(1000), 0.5)
    >>> set(y.tolist()) <= {0.0, 2.0}
    True
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate!r}")
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


# ------------------------------------------------------------------ convolution, pooling

Padding = str | int | Sequence[Sequence[int]]


def _pair(value: int | Sequence[int], argument: str) -> tuple[int, int]:
    """An int ``v`` as ``(v, v)``, or a pair of ints; each must be >= 1."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ValueError(f"{argument} must be an int >= 1 or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def spatial_padding(padding: Padding, argument: str = "padding") -> str | tuple:
    """Normalize a 2-D padding: ``"SAME"``/``"VALID"``, an int ``p`` or per-side pairs.

    An int ``p`` means ``((p, p), (p, p))``; per-side pairs are
    ``((top, bottom), (left, right))``. Strings are returned upper-cased.

    >>> spatial_padding(1)
    ((1, 1), (1, 1))
    >>> spatial_padding(((0, 1), (2, 0)))
    ((0, 1), (2, 0))
    """
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f'{argument} must be "SAME", "VALID", an int or pairs, got {padding!r}'
            )
        return padding.upper()
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"{argument} must be >= 0, got {padding!r}")
        return ((int(padding), int(padding)),) * 2
    try:
        pairs = tuple(tuple(int(v) for v in side) for side in padding)
        ok = len(pairs) == 2 and all(len(s) == 2 and min(s) >= 0 for s in pairs)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f'{argument} must be "SAME", "VALID", an int p >= 0 or per-side pairs '
            f"((top, bottom), (left, right)), got {padding!r}"
        )
    return pairs


def conv_output_size(
    n: int,
    f: int,
    padding: str | int | tuple[int, int] = 0,
    stride: int = 1,
    dilation: int = 1,
) -> int:
    """Output length of a convolution or pooling along one axis.

    The lecture's ``Y = ⌊(N + 2p − F)/s⌋ + 1``; in general, with per-side padding
    ``(lo, hi)`` and dilation ``D`` (effective kernel ``D(F − 1) + 1``):
    ``Y = ⌊(N + lo + hi − D(F − 1) − 1)/s⌋ + 1``. ``"VALID"`` is ``p = 0``; ``"SAME"``
    follows TF/XLA, ``Y = ⌈N/s⌉`` whatever ``F``.

    Args:
      n: the input length ``N``.
      f: the kernel (window) length ``F``.
      padding: an int ``p`` (both sides), ``"VALID"``, ``"SAME"`` or a pair ``(lo, hi)``.
      stride: the step ``s >= 1``.
      dilation: the kernel dilation ``D >= 1``.

    Raises:
      ValueError: if the (dilated) kernel is larger than the padded input.

    >>> conv_output_size(227, 11, 0, 4)  # AlexNet's first layer
    55
    >>> conv_output_size(32, 3, 1, 1)  # F = 3, p = 1, s = 1 keeps N
    32
    """
    for value, name in ((n, "n"), (f, "f"), (stride, "stride"), (dilation, "dilation")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"conv_output_size: {name} must be an int >= 1, got {value!r}")
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            return -(-n // stride)
        if padding.upper() != "VALID":
            raise ValueError(
                f'conv_output_size: padding must be "SAME" or "VALID", got {padding!r}'
            )
        lo = hi = 0
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        lo = hi = int(padding)
    else:
        try:
            lo, hi = (int(v) for v in padding)
        except (TypeError, ValueError):
            raise ValueError(
                f'conv_output_size: padding must be "SAME", "VALID", an int or (lo, hi), '
                f"got {padding!r}"
            ) from None
    if min(lo, hi) < 0:
        raise ValueError(f"conv_output_size: padding must be >= 0, got {padding!r}")
    span = dilation * (f - 1) + 1
    if span > n + lo + hi:
        raise ValueError(
            f"conv_output_size: the kernel (size {f}, dilation {dilation}, spanning {span}) is "
            f"larger than the padded input ({n} + {lo} + {hi} = {n + lo + hi})"
        )
    return (n + lo + hi - span) // stride + 1


def conv2d(
    x: Array,
    w: Array,
    b: Array | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Array:
    """2-D convolution (cross-correlation, as in every deep-learning library) plus bias.

    ``y[n, i, j, o] = b[o] + Σ_{u, v, c} x̂[n, s_h i + D_h u, s_w j + D_w v, g·C_g + c]
    · w[u, v, c, o]``, where ``x̂`` is ``x`` zero-padded, ``g = o // (O / groups)`` is the
    group of output channel ``o`` and ``C_g = C / groups`` the channels per group.

    A thin wrapper over ``lax.conv_general_dilated`` with dimension numbers
    ``("NHWC", "HWIO", "NHWC")`` and ``feature_group_count=groups``. On a CPU a one-channel
    input (a grayscale first layer) is computed as the sum of the ``F_h F_w`` shifted
    products instead, several times faster there, with the convolution's own derivatives;
    and a stride-1 convolution of 2 to 8 input channels gets its input gradient
    ``∂L/∂x̂[n, i + u, j + v, c] += Σ_o ∂L/∂y[n, i, j, o] · w[u, v, c, o]`` as one matmul
    whose ``F_h F_w`` blocks are added in place, about twice as fast there as XLA's.

    Args:
      x: images, NHWC ``(n, H, W, C)``.
      w: kernels, HWIO ``(F_h, F_w, C / groups, O)``.
      b: bias ``(O,)`` or ``None``.
      stride: ``s`` or ``(s_h, s_w)``.
      padding: ``"SAME"`` (TF/XLA: output ``⌈N/s⌉``), ``"VALID"``, an int ``p`` or
        ``((top, bottom), (left, right))``.
      dilation: kernel dilation ``D`` or ``(D_h, D_w)``.
      groups: split the channels into this many independent groups.

    Returns:
      ``(n, Y_h, Y_w, O)`` with ``Y`` from :func:`conv_output_size`.

    >>> import jax.numpy as jnp
    >>> conv2d(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 2)), padding=1).shape
    (1, 5, 5, 2)
    """
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be an int >= 1, got {groups!r}")
    stride = _pair(stride, "conv2d: stride")
    dilation = _pair(dilation, "conv2d: dilation")
    pad = spatial_padding(padding, "conv2d: padding")
    if isinstance(pad, str) and jnp.ndim(x) == 4 and jnp.ndim(w) == 4:
        pad = tuple(lax.padtype_to_pads(x.shape[1:3], _dilated(w.shape[:2], dilation), stride, pad))
    conv = functools.partial(_conv, stride=stride, pad=pad, dilation=dilation, groups=groups)
    one_channel = (
        jnp.ndim(x) == 4 and jnp.ndim(w) == 4 and x.shape[-1] == w.shape[2] == 1 and groups == 1
    )
    fits = (
        one_channel
        and all(  # else lax.conv_general_dilated says what is wrong
            n + lo + hi >= span
            for n, (lo, hi), span in zip(x.shape[1:3], pad, _dilated(w.shape[:2], dilation))
        )
    )
    same_dtype = jnp.result_type(x) == jnp.result_type(w)  # else lax says they differ
    fast_dtype = same_dtype and _fast_dtype(jnp.result_type(x))
    if fits and fast_dtype:
        # one input channel (a grayscale first layer): XLA's CPU convolution is slow there
        y = _on_cpu(_single_channel_conv(stride, pad, dilation), conv, x, w)
    elif fast_dtype and _few_channels(x, w, stride, pad, dilation, groups):
        y = _on_cpu(_few_channel_conv(pad), conv, x, w)
    else:
        y = conv(x, w)
    return y if b is None else y + b


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


def _fast_dtype(dtype) -> bool:
    """The CPU fast paths take IEEE half, bfloat16, single and double precision (their sums
    run in float32 or wider); float8 and other types keep the plain lax ops."""
    return dtype in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


def _on_cpu(fast, default, *args):
    """``fast(*args)`` in programs compiled for a CPU, ``default(*args)`` elsewhere.

    The two compute the same function; ``fast`` is a formulation that XLA's CPU backend runs
    several times faster (measured in ``docs/benchmarks.md``). Only the branch for the
    platform a program is compiled for is lowered."""
    return lax.platform_dependent(*args, cpu=fast, default=default)


@functools.cache
def _single_channel_conv(stride, pad, dilation):
    """``conv2d`` of a one-channel image as ``Σ_{u,v} x̂[s i + D u, s j + D v] · w[u, v, 0, :]``:
    one fused loop over the output instead of XLA CPU's convolution (about 10× faster for
    LeNet's first layer). Derivatives are the convolution's own (``lax.conv_general_dilated``
    on the tangents), in forward and reverse mode."""
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


def _few_channels(x, w, stride, pad, dilation, groups) -> bool:
    """Whether ``conv2d`` takes :func:`_few_channel_conv` on a CPU: stride and dilation 1, no
    groups, 2–8 input channels (measured in ``docs/benchmarks.md``: 0.25–0.92× the time of
    XLA's input gradient from 3 to 8 channels; from 12 to 32 channels 0.76–0.89× on small
    images but 1.4–4× on larger ones), and blocks of bounded size."""
    if jnp.ndim(x) != 4 or jnp.ndim(w) != 4 or groups != 1 or stride != (1, 1):
        return False
    if dilation != (1, 1) or not _FEW_CHANNELS[0] <= x.shape[-1] == w.shape[2] <= _FEW_CHANNELS[1]:
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
# padded blocks into its consumers and recomputes it there. Bilinear in ``(x, w)``: forward
# and reverse mode, any order, and ``vmap`` all work (checked in tests/test_cpu_fast_paths.py).
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


@functools.cache
def _few_channel_conv(pad):
    """``conv2d`` (stride 1) as ``_few_channel_conv_p`` on the zero-padded images."""
    config = ((0, 0, 0), *((lo, hi, 0) for lo, hi in pad), (0, 0, 0))

    def f(x, w):
        x = jnp.asarray(x)  # a NumPy float64 array becomes float32 here without x64, as in lax
        return _few_channel_conv_p.bind(lax.pad(x, jnp.zeros((), x.dtype), config), w)

    return f


def _pool_window(x: Array, window, stride, padding, who: str):
    window = _pair(window, f"{who}: window")
    stride = window if stride is None else _pair(stride, f"{who}: stride")
    pad = spatial_padding(padding, f"{who}: padding")
    if isinstance(pad, str):
        pad = lax.padtype_to_pads(x.shape[1:3], window, stride, pad)
    return (1, *window, 1), (1, *stride, 1), ((0, 0), *pad, (0, 0))


def max_pool(
    x: Array,
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
) -> Array:
    """Max pooling: ``y[n, i, j, c] = max_{u, v} x̂[n, s_h i + u, s_w j + v, c]``.

    ``x̂`` is ``x`` padded with ``−∞`` (padding never wins the max); the window is
    ``F_h × F_w``. Built on ``lax.reduce_window``; its derivative sends each window's
    gradient to the window's first maximum (row-major). On a CPU, windows that tile the image
    (``stride = window``, no padding) get that derivative from one small index of the winners
    instead of XLA's generic scatter.

    Args:
      x: NHWC ``(n, H, W, C)``.
      window: ``F`` or ``(F_h, F_w)``.
      stride: ``s`` or ``(s_h, s_w)``; ``None`` (default) means the window, i.e. the
        windows do not overlap.
      padding: as for :func:`conv2d`.

    >>> import jax.numpy as jnp
    >>> max_pool(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    dims, strides, pads = _pool_window(x, window, stride, padding, "max_pool")
    tiled = dims == strides and all(lo == hi == 0 for lo, hi in pads) and jnp.ndim(x) == 4
    if tiled and dims[1] * dims[2] <= 127 and _fast_dtype(jnp.result_type(x)):
        # windows that tile the image: a cheaper derivative than the generic one on a CPU
        return _on_cpu(_tiled_max_pool(dims[1:3]), _reduce_max(dims), x)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)


def _reduce_max(dims):
    return lambda x: lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID")


@functools.cache
def _tiled_max_pool(window):
    """Max pooling with ``stride = window`` and no padding, with the derivative of
    ``lax.reduce_window``'s (each window's tangent is that of its first maximum in row-major
    order) computed from one small index: ``k* = argmax_k x_k`` over the window's positions
    ``k = F_w u + v``, found by a reduce-window over ``(x, k)`` pairs, then
    ``ẏ = Σ_k [k = k*] ẋ_k``. XLA CPU's generic derivative materializes four full-size index
    arrays and a scatter instead."""
    fh, fw = window
    dims = (1, fh, fw, 1)
    f = jax.custom_jvp(_reduce_max(dims))

    def pick(a, b):  # the larger value; on a tie, the smaller position
        (va, ka), (vb, kb) = a, b
        take_a = (va > vb) | ((va == vb) & (ka < kb))
        return jnp.where(take_a, va, vb), jnp.where(take_a, ka, kb)

    def jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        y = f(x)
        n, h, w, c = x.shape
        ho, wo = h // fh, w // fw
        x = x[:, : ho * fh, : wo * fw]
        pos = jnp.arange(fh, dtype=jnp.int8)[:, None] * fw + jnp.arange(fw, dtype=jnp.int8)
        pos = jnp.broadcast_to(jnp.tile(pos, (ho, wo))[None, :, :, None], x.shape)
        init = (jnp.array(-jnp.inf, x.dtype), jnp.array(127, jnp.int8))
        # which position wins is piecewise constant in x: no derivative flows through it
        x = lax.stop_gradient(x)
        _, first = lax.reduce_window((x, pos), init, pick, dims, dims, "VALID")
        t = t[:, : ho * fh, : wo * fw]
        dy = functools.reduce(
            jnp.add,
            [
                jnp.where(first == u * fw + v, t[:, u::fh, v::fw], jnp.zeros((), t.dtype))
                for u in range(fh)
                for v in range(fw)
            ],
        )
        return y, dy

    f.defjvp(jvp)
    return f


def avg_pool(
    x: Array,
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
) -> Array:
    """Average pooling over the real (unpadded) elements of each window.

    ``y[n, i, j, c] = Σ_{(u, v) ∈ W_ij} x[n, u, v, c] / |W_ij|``, where ``W_ij`` are the
    positions of window ``(i, j)`` that fall inside the input: a padded window divides by
    the number of real elements it covers, not by ``F_h · F_w``.

    Args:
      x: NHWC ``(n, H, W, C)``.
      window: ``F`` or ``(F_h, F_w)``.
      stride: ``s`` or ``(s_h, s_w)``; ``None`` (default) means the window.
      padding: as for :func:`conv2d`.

    >>> import jax.numpy as jnp
    >>> avg_pool(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    dims, strides, pads = _pool_window(x, window, stride, padding, "avg_pool")
    total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, dims, strides, pads)
    return total / count


def flatten(x: Array) -> Array:
    """Keep the leading (batch) axis, flatten the rest: ``(n, d_1, ..., d_k) -> (n, Π d_i)``.

    >>> import jax.numpy as jnp
    >>> flatten(jnp.ones((2, 3, 4, 5))).shape
    (2, 60)
    """
    return jnp.reshape(x, (x.shape[0], -1))


def lrn(x: Array, k: float = 2.0, n: int = 5, alpha: float = 1e-4, beta: float = 0.75) -> Array:
    """Local response normalization across channels (Krizhevsky et al., 2012, §3.3).

    ``b_c = a_c / (k + α Σ_{c' = max(0, c − ⌊n/2⌋)}^{min(C − 1, c + ⌊n/2⌋)} a_{c'}²)^β``,
    the paper's form (``α`` is not divided by ``n``, unlike PyTorch's ``LocalResponseNorm``).
    For an even ``n`` the window is ``c − n/2 … c + n/2 − 1``.

    Args:
      x: activations with channels last, e.g. NHWC ``(n, H, W, C)``.
      k: the additive constant (the paper's 2).
      n: the number of neighbouring channels summed over (the paper's 5).
      alpha: the scale of the sum of squares (the paper's 1e-4).
      beta: the exponent (the paper's 0.75).

    >>> import jax.numpy as jnp
    >>> round(float(lrn(jnp.ones((1, 1, 1, 1)))[0, 0, 0, 0]), 6)  # 1 / (2 + 1e-4)^0.75
    0.594581
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"lrn: n must be an int >= 1, got {n!r}")
    dims = (1,) * (x.ndim - 1) + (n,)
    pads = ((0, 0),) * (x.ndim - 1) + ((n // 2, n - 1 - n // 2),)
    sums = lax.reduce_window(x * x, 0.0, lax.add, dims, (1,) * x.ndim, pads)
    return x / (k + alpha * sums) ** beta
