"""Convolutional layers, channels last, of 1, 2 or 3 spatial axes: the convolution with the
lecture's ``Y = ⌊(N + 2p − F)/s⌋ + 1``, the transposed convolution with
``Y = s(N − 1) + F − 2p``, and AlexNet's local response normalization."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import checks, initializers, ops
from .. import functional as F
from ..checks import input_shape as check_input_shape
from ..core import Layer
from . import spatial
from .params import check_input, check_params

__all__ = ["Conv", "Conv1D", "Conv3D", "ConvTranspose", "LRN"]

Kernel = int | tuple[int, ...]


def _rank(kernel, who: str) -> int:
    """The spatial rank a kernel names: its length, or 2 (images) for an int."""
    if not isinstance(kernel, (tuple, list)):
        return 2
    if not 1 <= len(kernel) <= 3:
        raise ValueError(
            f"{who}: kernel must be an int (2-D) or a tuple of 1, 2 or 3 sizes (1-D, 2-D, "
            f"3-D), got {kernel!r}"
        )
    return len(kernel)


def _weights(who: str, w_init, b_init, use_bias: bool, dtype):
    """``draw(key, w_shape, filters)``: the params ``{"w", "b"}`` of a convolution."""
    w_fn = initializers.get(w_init, argument=f"{who}: w_init")
    b_fn = initializers.get(b_init, argument=f"{who}: b_init") if use_bias else None

    def draw(key, w_shape, filters):
        kw, kb = jax.random.split(key)
        params = {"w": w_fn(kw, w_shape, dtype)}
        if b_fn is not None:
            params["b"] = b_fn(kb, (filters,), dtype)
        return params

    return draw


def _expected(params, window, filters, use_bias, groups, shape, who) -> dict:
    """The params' shapes for inputs of ``shape``; a kernel made for another channel count
    (right window and filters) is an error of the input, as for ``Dense``."""
    w = params.get("w") if isinstance(params, dict) else None
    w_shape = tuple(jnp.shape(w)) if w is not None and hasattr(w, "shape") else ()
    if w_shape[:-2] == window and w_shape[-1:] == (filters,) and w_shape[-2] * groups != shape[-1]:
        raise ValueError(
            f"{who}: expected {w_shape[-2] * groups} input channels, got shape {shape}"
        )
    if shape[-1] % groups:
        raise ValueError(
            f"{who}: the input channels ({shape[-1]}) must divide by groups ({groups})"
        )
    w_want = (*window, shape[-1] // groups, filters)
    return {"w": w_want, "b": (filters,)} if use_bias else {"w": w_want}


class _Settings(NamedTuple):
    """A convolution's arguments, checked and normalized: one entry per spatial axis."""

    window: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    extra: tuple[int, ...]  # output_padding (0 for a plain convolution)
    pad: str | tuple
    groups: int


def _settings(who: str, rank: int, filters, kernel, options: dict) -> _Settings:
    checks.positive_int(filters, f"{who}: filters")
    window = checks.int_tuple(kernel, f"{who}: kernel", rank)
    strides = checks.int_tuple(options["stride"], f"{who}: stride", rank)
    dilations = checks.int_tuple(options["dilation"], f"{who}: dilation", rank)
    extra = options.get("output_padding", 0)
    extra = checks.int_tuple(extra, f"{who}: output_padding", rank, minimum=0)
    pad = ops.padding_pairs(options["padding"], rank, f"{who}: padding")
    groups = checks.positive_int(options["groups"], f"{who}: groups")
    if filters % groups:
        raise ValueError(f"{who}: filters ({filters}) must divide by groups ({groups})")
    if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilations)):
        raise ValueError(
            f"{who}: output_padding must be smaller than max(stride, dilation) on each axis, "
            f"got output_padding {extra} for stride {strides} and dilation {dilations}"
        )
    if isinstance(pad, str) and any(extra):
        raise ValueError(f"{who}: output_padding needs explicit padding, got {pad!r}")
    return _Settings(window, strides, dilations, extra, pad, groups)


def _layer(name, kind, rank, filters, kernel, options, defaults, out_size, op, inits) -> Layer:
    """A convolution-like layer: ``options`` are stride, padding, dilation, groups (and
    output_padding); ``out_size(n, f, pad, s, d, extra)`` gives an axis's output length and
    ``op(x, w, b, stride, pad, dilation, extra, groups)`` computes it."""
    who = spatial.describe(name, [filters, kernel], options, defaults)
    window, strides, dilations, extra, pad, groups = _settings(who, rank, filters, kernel, options)
    axes = ops.layout(ops.channels_last(rank))
    sides = (pad,) * rank if isinstance(pad, str) else pad
    draw = _weights(who, *inits)

    def sizes(i, n):
        return out_size(n, window[i], sides[i], strides[i], dilations[i], extra[i])

    def init(key, input_shape):
        shape = spatial.input_shape(input_shape, axes, who, channels_known=True)
        if shape[-1] % groups:
            raise ValueError(
                f"{who}: the input channels ({shape[-1]}) must divide by groups ({groups})"
            )
        out = spatial.spatial_out(shape, axes, sizes, who)
        return (*out[:-1], filters), draw(key, (*window, shape[-1] // groups, filters), filters)

    def apply(params, x, *, key=None, train=False):
        shape = spatial.check_input(x, axes, who)
        check_params(params, _expected(params, window, filters, inits[2], groups, shape, who), who)
        spatial.spatial_out(shape, axes, sizes, who)  # the window fits the input
        return op(x, params["w"], params.get("b"), strides, pad, dilations, extra, groups)

    return Layer(init, apply, kind=kind, description=who)


def _conv_size(n, f, pad, s, d, extra):
    return F.conv_output_size(n, f, pad, s, d)


def _conv_op(x, w, b, stride, pad, dilation, extra, groups):
    return ops.conv(x, w, b, stride, pad, dilation, groups)


def _conv(name, rank, filters, kernel, stride, padding, dilation, groups, inits) -> Layer:
    defaults = {"stride": 1, "padding": "VALID", "dilation": 1, "groups": 1}
    options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return _layer(
        name, "conv", rank, filters, kernel, options, defaults, _conv_size, _conv_op, inits
    )


def Conv(
    filters: int,
    kernel: Kernel,
    stride: Kernel = 1,
    padding: ops.convolution.Padding = "VALID",
    dilation: Kernel = 1,
    groups: int = 1,
    *,
    w_init: str | initializers.Initializer = "he_normal",
    b_init: str | initializers.Initializer = "zeros",
    use_bias: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """Convolution layer, channels last: ``y = conv(x, w) + b`` (see
    :func:`funcnn.ops.conv`; for images, :func:`funcnn.functional.conv2d`), with
    ``filters`` output channels.

    The kernel's length sets the spatial rank: an int ``F`` or ``(F_h, F_w)`` is 2-D, over
    NHWC images; ``(F,)`` is 1-D over NWC sequences; ``(F_d, F_h, F_w)`` is 3-D over NDHWC
    volumes (:func:`Conv1D` and :func:`Conv3D` take an int for those).

    Params: ``{"w": (*F, C / groups, filters), "b": (filters,)}`` (HWIO in 2-D). The output
    size per axis is the lecture's ``Y = ⌊(N + 2p − F)/s⌋ + 1`` (with dilation ``D`` the
    kernel spans ``D(F − 1) + 1``; ``"SAME"`` gives ``⌈N/s⌉``). ``w_init`` defaults to
    He normal, N(0, 2/fan_in) with ``fan_in = F_h · F_w · C / groups``, since the networks
    here follow their convolutions with ReLU. ``apply`` refuses, naming the layer, an input
    of the wrong rank or channel count, an input smaller than the (dilated) kernel, and
    params of the wrong shape.

    Args:
      filters: the number of filters (output channels) ``O``.
      kernel: ``F`` or one size per spatial axis.
      stride: ``s`` or one per spatial axis.
      padding: ``"VALID"`` (default), ``"SAME"``, an int ``p`` or one pair
        ``(lo, hi)`` per spatial axis (``((top, bottom), (left, right))`` in 2-D).
      dilation: ``D`` or one per spatial axis.
      groups: split input and output channels into this many independent groups; both
        ``C`` and ``filters`` must divide by it.

    >>> import jax
    >>> shape, params = Conv(6, 5).init(jax.random.key(0), (-1, 32, 32, 1))
    >>> shape, params["w"].shape
    ((-1, 28, 28, 6), (5, 5, 1, 6))
    >>> Conv(8, (3,), padding=1).init(jax.random.key(0), (-1, 100, 2))[0]  # 1-D
    (-1, 100, 8)
    """
    rank = _rank(kernel, spatial.describe("Conv", [filters, kernel], {}, {}))
    inits = (w_init, b_init, use_bias, dtype)
    return _conv("Conv", rank, filters, kernel, stride, padding, dilation, groups, inits)


def Conv1D(
    filters: int,
    kernel: int | tuple[int],
    stride: int | tuple[int] = 1,
    padding: ops.convolution.Padding = "VALID",
    dilation: int | tuple[int] = 1,
    groups: int = 1,
    *,
    w_init: str | initializers.Initializer = "he_normal",
    b_init: str | initializers.Initializer = "zeros",
    use_bias: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """1-D convolution over NWC sequences ``(n, W, C)``:
    ``y[n, i, o] = b[o] + Σ_{u, c} x̂[n, s i + D u, c] · w[u, c, o]``; :func:`Conv` with a
    kernel ``(F,)``. Params ``{"w": (F, C / groups, filters), "b": (filters,)}``.

    >>> import jax
    >>> Conv1D(16, 5, stride=2).init(jax.random.key(0), (-1, 99, 3))[0]  # ⌊(99 − 5)/2⌋ + 1
    (-1, 48, 16)
    """
    inits = (w_init, b_init, use_bias, dtype)
    return _conv("Conv1D", 1, filters, kernel, stride, padding, dilation, groups, inits)


def Conv3D(
    filters: int,
    kernel: int | tuple[int, int, int],
    stride: int | tuple[int, int, int] = 1,
    padding: ops.convolution.Padding = "VALID",
    dilation: int | tuple[int, int, int] = 1,
    groups: int = 1,
    *,
    w_init: str | initializers.Initializer = "he_normal",
    b_init: str | initializers.Initializer = "zeros",
    use_bias: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """3-D convolution over NDHWC volumes ``(n, D, H, W, C)``:
    ``y[n, i, o] = b[o] + Σ_{u, c} x̂[n, s ⊙ i + D ⊙ u, c] · w[u, c, o]`` over 3-D indices;
    :func:`Conv` with a kernel ``(F_d, F_h, F_w)``. Params
    ``{"w": (F_d, F_h, F_w, C / groups, filters), "b": (filters,)}``.

    >>> import jax
    >>> Conv3D(4, 3, padding="SAME").init(jax.random.key(0), (-1, 8, 16, 16, 1))[0]
    (-1, 8, 16, 16, 4)
    """
    inits = (w_init, b_init, use_bias, dtype)
    return _conv("Conv3D", 3, filters, kernel, stride, padding, dilation, groups, inits)


def ConvTranspose(
    filters: int,
    kernel: Kernel,
    stride: Kernel = 1,
    padding: ops.convolution.Padding = "VALID",
    dilation: Kernel = 1,
    output_padding: Kernel = 0,
    groups: int = 1,
    *,
    w_init: str | initializers.Initializer = "he_normal",
    b_init: str | initializers.Initializer = "zeros",
    use_bias: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """Transposed convolution layer, channels last: ``y = conv_transpose(x, w) + b`` (see
    :func:`funcnn.ops.conv_transpose`): each input position spreads its value over the
    output through the kernel, ``y[s ⊙ j + D ⊙ u − p] += x[j] · w[u]``.

    The kernel's length sets the spatial rank, as for :func:`Conv`: an int is 2-D (NHWC),
    ``(F,)`` 1-D (NWC), ``(F_d, F_h, F_w)`` 3-D (NDHWC). Params
    ``{"w": (*F, C / groups, filters), "b": (filters,)}``. The output size per axis is
    :func:`funcnn.ops.conv_transpose_output_size`, ``Y = s(N − 1) + D(F − 1) + 1 − 2p +
    output_padding`` with explicit padding; ``"SAME"`` gives ``sN`` and ``"VALID"``
    ``sN + max(D(F − 1) + 1 − s, 0)``, as ``lax.conv_transpose``. An empty output is an
    error at ``init``.

    Args:
      filters: the number of output channels ``O``.
      kernel: ``F`` or one size per spatial axis.
      stride: ``s`` or one per spatial axis: the upsampling factor.
      padding: ``"VALID"`` (default), ``"SAME"``, an int ``p`` or one pair ``(lo, hi)``
        per axis: the padding of the convolution this one transposes.
      dilation: ``D`` or one per spatial axis.
      output_padding: extra rows at the high end of each axis, ``< max(s, D)``; explicit
        padding only.
      groups: split input and output channels into this many independent groups.

    >>> import jax
    >>> ConvTranspose(3, 4, stride=2, padding=1).init(jax.random.key(0), (-1, 16, 16, 8))[0]
    (-1, 32, 32, 3)
    """
    who = spatial.describe("ConvTranspose", [filters, kernel], {}, {})
    defaults = {"stride": 1, "padding": "VALID", "dilation": 1, "output_padding": 0, "groups": 1}
    options = {
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "output_padding": output_padding,
        "groups": groups,
    }
    inits = (w_init, b_init, use_bias, dtype)
    sizes, op, rank = ops.conv_transpose_output_size, ops.conv_transpose, _rank(kernel, who)
    name, kind = "ConvTranspose", "conv_transpose"
    return _layer(name, kind, rank, filters, kernel, options, defaults, sizes, op, inits)


def LRN(k: float = 2.0, n: int = 5, alpha: float = 1e-4, beta: float = 0.75) -> Layer:
    """AlexNet's local response normalization across channels (see
    :func:`funcnn.functional.lrn`):
    ``b_c = a_c / (k + α Σ_{|c' − c| ≤ n/2} a_{c'}²)^β``.

    >>> import jax
    >>> LRN().init(jax.random.key(0), (-1, 55, 55, 96))[0]
    (-1, 55, 55, 96)
    """
    defaults = {"k": 2.0, "n": 5, "alpha": 1e-4, "beta": 0.75}
    options = {"k": k, "n": n, "alpha": alpha, "beta": beta}
    who = spatial.describe("LRN", [], options, defaults)
    checks.positive_int(n, f"{who}: n")
    for name in ("k", "alpha", "beta"):
        checks.number(options[name], f"{who}: {name}", low=0)

    def init(key, input_shape):
        return check_input_shape(input_shape, who), {}

    def apply(params, x, *, key=None, train=False):
        check_params(params, {}, who)
        check_input(x, who)
        return F.lrn(x, k, n, alpha, beta)

    return Layer(init, apply, kind="lrn", description=who)
