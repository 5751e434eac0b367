"""Pure array operations: the maths of every layer, with no parameters of their own.

Every function here is pure, works under ``jax.jit``, ``jax.grad`` and ``jax.vmap``, and is
the ``lax`` / ``jax.numpy`` call its formula reads as. It imports only :mod:`funcnn.checks`
(argument checks) and the private ``funcnn._cpu``, to which ``conv2d`` and ``max_pool`` may
hand their work inside :func:`funcnn.jit` on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from . import _cpu, checks

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
    "moments",
    "batch_norm",
    "layer_norm",
    "group_norm",
]


def dense(x: Array, w: Array, b: Array | None = None) -> Array:
    """Affine map of the last axis: ``y = x W + b``.

    This is the lecture's ``h = W x + b`` written for a batch of row vectors. ``x`` and ``w``
    promote as in ``jnp.matmul`` (integers to the floating dtype beside them, float16 or
    bfloat16 beside float32 to float32); complex arrays raise a ``TypeError``.

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
    checks.real_dtype(x, w, argument="dense")  # complex refused; ints promote as in matmul
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
        pairs = tuple(tuple(int(v) for v in side) for side in padding)  # type: ignore[union-attr]  # a bool was refused above
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
            lo, hi = (int(v) for v in padding)  # type: ignore[union-attr]  # bools refused above
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

    This is ``lax.conv_general_dilated`` with dimension numbers ``("NHWC", "HWIO", "NHWC")``
    and ``feature_group_count=groups``. Inside :func:`funcnn.jit` on a CPU, the work may go
    to equivalent, faster kernels (see ``funcnn/_cpu``). ``x`` and ``w`` first promote to one
    dtype as :func:`dense`'s matmul does (integers to the floating dtype beside them, float16
    or bfloat16 beside float32 to float32); complex arrays raise a ``TypeError``.

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
    stride = checks.int_tuple(stride, "conv2d: stride")
    dilation = checks.int_tuple(dilation, "conv2d: dilation")
    pad = spatial_padding(padding, "conv2d: padding")

    def conv(x, w):
        return lax.conv_general_dilated(
            x,
            w,
            window_strides=stride,
            padding=pad,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )

    dtype = checks.real_dtype(x, w, argument="conv2d")  # promoted as dense's matmul promotes
    x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    y = _cpu.conv2d(conv, x, w, stride, pad, dilation, groups)  # conv(x, w) or its CPU twin
    return y if b is None else y + b


def _pool_window(x: Array, window, stride, padding, who: str):
    window = checks.int_tuple(window, f"{who}: window")
    stride = window if stride is None else checks.int_tuple(stride, f"{who}: stride")
    pad = spatial_padding(padding, f"{who}: padding")
    if isinstance(pad, str):
        pad = tuple(lax.padtype_to_pads(x.shape[1:3], window, stride, pad))
    return (1, *window, 1), (1, *stride, 1), ((0, 0), *pad, (0, 0))


def max_pool(
    x: Array,
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
) -> Array:
    """Max pooling: ``y[n, i, j, c] = max_{u, v} x̂[n, s_h i + u, s_w j + v, c]``.

    ``x̂`` is ``x`` padded with ``−∞`` (padding never wins the max); the window is
    ``F_h × F_w``. This is ``lax.reduce_window`` with ``lax.max``; its derivative sends each
    window's gradient to the window's first maximum (row-major). Inside :func:`funcnn.jit`
    on a CPU, the work may go to an equivalent, faster kernel (see ``funcnn/_cpu``).

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

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)

    return _cpu.max_pool(pool, x, dims, strides, pads)  # pool(x) or its CPU twin


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


# ---------------------------------------------------------------------------- normalization


def moments(x: Array, axis: int = -1) -> tuple[Array, Array]:
    """Per-feature mean and (biased) variance over every axis but the feature ``axis``.

    ``μ_c = (1/m) Σ x_c``, ``σ²_c = (1/m) Σ (x_c − μ_c)²`` over the ``m`` values of feature
    ``c`` (the batch, and every spatial position of images); computed in float32 or wider.
    The variance's derivative is ``dσ² = (2/m) Σ (x − μ) dx``: the term of ``dμ`` drops out,
    since ``Σ (x − μ) = 0``, and is not computed.

    Args:
      x: activations, e.g. NHWC ``(n, H, W, C)`` or ``(n, d)``.
      axis: the feature axis.

    Returns:
      ``(μ, σ²)``, each of shape ``(x.shape[axis],)``.

    >>> import jax.numpy as jnp
    >>> [v.tolist() for v in moments(jnp.array([[1.0, 10.0], [3.0, 30.0]]))]
    [[2.0, 20.0], [1.0, 100.0]]
    """
    axis = axis % jnp.ndim(x)
    axes = tuple(i for i in range(jnp.ndim(x)) if i != axis)
    xf = jnp.asarray(x).astype(jnp.promote_types(jnp.result_type(x), jnp.float32))
    return jnp.mean(xf, axes), _variance(xf, axes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _variance(x: Array, axes: tuple[int, ...]) -> Array:
    """``σ² = (1/m) Σ (x − μ)²`` over ``axes``, in two passes (exact where ``E[x²] − μ²``
    cancels)."""
    return jnp.mean(jnp.square(x - jnp.mean(x, axes, keepdims=True)), axes)


@_variance.defjvp
def _variance_jvp(axes, primals, tangents):
    """``dσ² = (2/m) Σ (x − μ) dx``; differentiable again, so Hessians stay exact."""
    (x,), (dx,) = primals, tangents
    centred = x - jnp.mean(x, axes, keepdims=True)
    return jnp.mean(jnp.square(centred), axes), 2 * jnp.mean(centred * dx, axes)


def batch_norm(
    x: Array,
    mean: Array,
    var: Array,
    scale: Array | None = None,
    offset: Array | None = None,
    axis: int = -1,
    epsilon: float = 1e-5,
) -> Array:
    """Normalize with given statistics: ``y = γ (x − μ) / √(σ² + ε) + β`` per feature.

    ``μ``, ``σ²``, ``γ``, ``β`` have shape ``(C,)`` and broadcast along ``axis``; ``γ = 1``
    and ``β = 0`` when ``None``. BatchNorm calls it with the batch's :func:`moments` in
    training and with its running statistics in evaluation.

    Args:
      x: activations with ``C`` features along ``axis``.
      mean: ``μ``, ``(C,)``.
      var: ``σ²``, ``(C,)``.
      scale: ``γ``, ``(C,)`` or ``None``.
      offset: ``β``, ``(C,)`` or ``None``.
      axis: the feature axis.
      epsilon: ``ε``.

    >>> import jax.numpy as jnp
    >>> batch_norm(jnp.array([[3.0]]), jnp.array([1.0]), jnp.array([4.0]), epsilon=0.0).tolist()
    [[1.0]]
    """
    shape = [1] * jnp.ndim(x)
    shape[axis] = -1
    inv = lax.rsqrt(var + epsilon)
    if scale is not None:
        inv = inv * scale
    y = (x - jnp.reshape(mean, shape)) * jnp.reshape(inv, shape)
    if offset is not None:
        y = y + jnp.reshape(offset, shape)
    return y.astype(jnp.result_type(x))


def layer_norm(
    x: Array,
    scale: Array | None = None,
    offset: Array | None = None,
    n_axes: int = 1,
    epsilon: float = 1e-5,
) -> Array:
    """Normalize each example over its last ``n_axes`` axes:
    ``y = γ ⊙ (x − μ) / √(σ² + ε) + β``, ``μ`` and ``σ²`` (biased) over those axes.

    Args:
      x: activations ``(n, ..., d_1, ..., d_k)`` with ``k = n_axes``.
      scale: ``γ`` of shape ``(d_1, ..., d_k)`` or ``None`` (1).
      offset: ``β`` of that shape or ``None`` (0).
      n_axes: how many trailing axes are normalized over.
      epsilon: ``ε``.

    >>> import jax.numpy as jnp
    >>> layer_norm(jnp.array([[1.0, 3.0]]), epsilon=0.0).tolist()
    [[-1.0, 1.0]]
    """
    axes = tuple(range(jnp.ndim(x) - n_axes, jnp.ndim(x)))
    return _normalize(x, axes, scale, offset, epsilon)


def group_norm(
    x: Array,
    groups: int,
    scale: Array | None = None,
    offset: Array | None = None,
    epsilon: float = 1e-5,
) -> Array:
    """Normalize channels-last ``x`` per example and per group of ``C/groups`` channels:
    ``μ``, ``σ²`` over the group's channels at every spatial position, then
    ``y = γ_c (x − μ) / √(σ² + ε) + β_c``.

    Args:
      x: ``(n, ..., C)``, ``C`` divisible by ``groups``.
      groups: the number of groups ``G``.
      scale: ``γ``, ``(C,)`` or ``None``.
      offset: ``β``, ``(C,)`` or ``None``.
      epsilon: ``ε``.

    >>> import jax.numpy as jnp
    >>> group_norm(jnp.array([[1.0, 3.0, 10.0, 30.0]]), 2, epsilon=0.0).tolist()
    [[-1.0, 1.0, -1.0, 1.0]]
    """
    *lead, c = jnp.shape(x)
    xg = jnp.reshape(x, (*lead, groups, c // groups))
    axes = (*range(1, len(lead)), len(lead) + 1)  # the spatial axes and the group's channels
    y = jnp.reshape(_normalize(xg, axes, None, None, epsilon), jnp.shape(x))
    if scale is not None:
        y = y * scale
    return y if offset is None else y + offset


def _normalize(x, axes, scale, offset, epsilon):
    """``γ (x − μ)/√(σ² + ε) + β`` with ``μ``, ``σ²`` over ``axes`` (float32 or wider)."""
    xf = x.astype(jnp.promote_types(jnp.result_type(x), jnp.float32))
    mean = jnp.mean(xf, axes, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axes, keepdims=True)
    y = (xf - mean) * lax.rsqrt(var + epsilon)
    if scale is not None:
        y = y * scale
    if offset is not None:
        y = y + offset
    return y.astype(jnp.result_type(x))
