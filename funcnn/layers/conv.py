"""Convolutional layers over NHWC images: convolution, pooling and AlexNet's local response
normalization, with output sizes from the lecture's ``Y = ⌊(N + 2p − F)/s⌋ + 1``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import checks, initializers
from .. import functional as F
from ..checks import input_shape as check_input_shape
from ..core import Layer

__all__ = ["Conv", "MaxPool", "AvgPool", "GlobalAvgPool", "LRN"]


def _describe(kind: str, args: list, options: dict, defaults: dict) -> str:
    def show(v):  # NumPy integers read as the ints they are
        return repr(int(v)) if checks.is_int(v) else repr(v)

    parts = [show(a) for a in args]
    parts += [f"{k}={show(v)}" for k, v in options.items() if v != defaults.get(k)]
    return f"{kind}({', '.join(parts)})"


def _image_shape(input_shape, who: str) -> tuple:
    if isinstance(input_shape, (tuple, list)) and len(input_shape) != 4:
        raise ValueError(
            f"{who}: expected NHWC images of rank 4 (batch, height, width, channels), "
            f"got shape {tuple(input_shape)}"
        )
    return check_input_shape(input_shape, who, rank=4)


def _check_images(x, who: str, channels: int | None = None) -> None:
    shape = jnp.shape(x)
    if len(shape) != 4:
        raise ValueError(
            f"{who}: expected NHWC images of rank 4 (batch, height, width, channels), "
            f"got shape {shape}"
        )
    if channels is not None and shape[-1] != channels:
        raise ValueError(f"{who}: expected {channels} input channels, got shape {shape}")


def _spatial_out(shape: tuple, window, padding, stride, dilation, who: str) -> tuple:
    """Output (H, W) by the lecture's formula, per axis; unknown (-1) sizes stay unknown."""
    out = []
    for axis, (n, f, s, d) in enumerate(zip(shape[1:3], window, stride, dilation)):
        pad = padding if isinstance(padding, str) else padding[axis]
        if n == -1:
            out.append(-1)
            continue
        try:
            out.append(F.conv_output_size(n, f, pad, s, d))
        except ValueError as err:
            detail = str(err).removeprefix("conv_output_size: ")
            axis_name = "height" if axis == 0 else "width"
            raise ValueError(f"{who}: on input {shape}, along the {axis_name}, {detail}") from None
    return tuple(out)


def Conv(
    filters: int,
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: F.Padding = "VALID",
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    w_init: str | initializers.Initializer = "he_normal",
    b_init: str | initializers.Initializer = "zeros",
    use_bias: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """2-D convolution layer over NHWC images: ``y = conv2d(x, w, b)`` (see
    :func:`funcnn.functional.conv2d`), with ``filters`` output channels.

    Params: ``{"w": (F_h, F_w, C / groups, filters), "b": (filters,)}`` (HWIO). The output
    size per axis is the lecture's ``Y = ⌊(N + 2p − F)/s⌋ + 1`` (with dilation ``D`` the
    kernel spans ``D(F − 1) + 1``; ``"SAME"`` gives ``⌈N/s⌉``). ``w_init`` defaults to
    He normal, N(0, 2/fan_in) with ``fan_in = F_h · F_w · C / groups``, since the networks
    here follow their convolutions with ReLU.

    Args:
      filters: the number of filters (output channels) ``O``.
      kernel: ``F`` or ``(F_h, F_w)``.
      stride: ``s`` or ``(s_h, s_w)``.
      padding: ``"VALID"`` (default), ``"SAME"``, an int ``p`` or
        ``((top, bottom), (left, right))``.
      dilation: ``D`` or ``(D_h, D_w)``.
      groups: split input and output channels into this many independent groups; both
        ``C`` and ``filters`` must divide by it.

    >>> import jax
    >>> shape, params = Conv(6, 5).init(jax.random.key(0), (-1, 32, 32, 1))
    >>> shape, params["w"].shape
    ((-1, 28, 28, 6), (5, 5, 1, 6))
    """
    defaults = {"stride": 1, "padding": "VALID", "dilation": 1, "groups": 1}
    options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    who = _describe("Conv", [filters, kernel], options, defaults)
    checks.positive_int(filters, f"{who}: filters")
    window = checks.int_tuple(kernel, f"{who}: kernel")
    strides = checks.int_tuple(stride, f"{who}: stride")
    dilations = checks.int_tuple(dilation, f"{who}: dilation")
    pad = F.spatial_padding(padding, f"{who}: padding")
    checks.positive_int(groups, f"{who}: groups")
    if filters % groups:
        raise ValueError(f"{who}: filters ({filters}) must divide by groups ({groups})")
    w_fn = initializers.get(w_init, argument=f"{who}: w_init")
    b_fn = initializers.get(b_init, argument=f"{who}: b_init") if use_bias else None

    def init(key, input_shape):
        shape = _image_shape(input_shape, who)
        channels = shape[-1]
        if channels == -1:
            raise ValueError(f"{who}: the number of input channels must be known, got {shape}")
        if channels % groups:
            raise ValueError(
                f"{who}: the input channels ({channels}) must divide by groups ({groups})"
            )
        out_hw = _spatial_out(shape, window, pad, strides, dilations, who)
        kw, kb = jax.random.split(key)
        params = {"w": w_fn(kw, (*window, channels // groups, filters), dtype)}
        if b_fn is not None:
            params["b"] = b_fn(kb, (filters,), dtype)
        return (shape[0], *out_hw, filters), params

    def apply(params, x, *, key=None, train=False):
        w = params["w"]
        _check_images(x, who, w.shape[2] * groups)
        return F.conv2d(x, w, params.get("b"), strides, pad, dilations, groups)

    return Layer(init, apply, kind="conv", description=who)


def _pool(kind: str, name: str, fn, window, stride, padding) -> Layer:
    defaults = {"stride": None, "padding": "VALID"}
    who = _describe(name, [window], {"stride": stride, "padding": padding}, defaults)
    size = checks.int_tuple(window, f"{who}: window")
    strides = size if stride is None else checks.int_tuple(stride, f"{who}: stride")
    pad = F.spatial_padding(padding, f"{who}: padding")

    def init(key, input_shape):
        shape = _image_shape(input_shape, who)
        out_hw = _spatial_out(shape, size, pad, strides, (1, 1), who)
        return (shape[0], *out_hw, shape[3]), {}

    def apply(params, x, *, key=None, train=False):
        _check_images(x, who)
        return fn(x, size, strides, pad)

    return Layer(init, apply, kind=kind, description=who)


def MaxPool(
    window: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    padding: F.Padding = "VALID",
) -> Layer:
    """Max pooling: the largest value of each ``F_h × F_w`` window, per channel.

    ``stride`` defaults to the window (non-overlapping windows); AlexNet's overlapping
    pooling is ``MaxPool(3, 2)``. Output size per axis ``⌊(N + 2p − F)/s⌋ + 1``.

    >>> import jax
    >>> MaxPool(3, 2).init(jax.random.key(0), (-1, 55, 55, 96))[0]
    (-1, 27, 27, 96)
    """
    return _pool("max_pool", "MaxPool", F.max_pool, window, stride, padding)


def AvgPool(
    window: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    padding: F.Padding = "VALID",
) -> Layer:
    """Average pooling: the mean of each window's real (unpadded) elements, per channel.

    ``stride`` defaults to the window. Output size per axis ``⌊(N + 2p − F)/s⌋ + 1``.

    >>> import jax
    >>> AvgPool(2).init(jax.random.key(0), (-1, 28, 28, 6))[0]
    (-1, 14, 14, 6)
    """
    return _pool("avg_pool", "AvgPool", F.avg_pool, window, stride, padding)


def GlobalAvgPool() -> Layer:
    """Global average pooling: ``y[n, c] = (1/(H W)) Σ_{i, j} x[n, i, j, c]``, one value per
    channel, the head of a ResNet: ``(n, H, W, C) -> (n, C)``.

    >>> import jax, jax.numpy as jnp
    >>> GlobalAvgPool().init(jax.random.key(0), (-1, 8, 8, 64))[0]
    (-1, 64)
    >>> GlobalAvgPool().apply({}, jnp.arange(4.0).reshape(1, 2, 2, 1)).tolist()
    [[1.5]]
    """
    who = "GlobalAvgPool()"

    def init(key, input_shape):
        shape = _image_shape(input_shape, who)
        return (shape[0], shape[3]), {}

    def apply(params, x, *, key=None, train=False):
        _check_images(x, who)
        return jnp.mean(x, axis=(1, 2))

    return Layer(init, apply, kind="global_avg_pool", description=who)


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
    who = _describe("LRN", [], options, defaults)
    checks.positive_int(n, f"{who}: n")
    for name in ("k", "alpha", "beta"):
        checks.number(options[name], f"{who}: {name}", low=0)

    def init(key, input_shape):
        return check_input_shape(input_shape, who), {}

    def apply(params, x, *, key=None, train=False):
        return F.lrn(x, k, n, alpha, beta)

    return Layer(init, apply, kind="lrn", description=who)
