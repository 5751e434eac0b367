"""Pooling layers: max, average and sum over windows of 1, 2 or 3 spatial axes, in NHWC or
any layout named by ``spec``, and the global average of a ResNet's head."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from .. import checks, ops
from .. import functional as F
from ..core import Layer
from . import spatial
from .params import check_params

__all__ = ["MaxPool", "AvgPool", "SumPool", "GlobalAvgPool"]

Window = int | tuple[int, ...]


def _layout(window, spec, who: str) -> ops.Layout:
    """The layout named by ``spec``, or channels last of the window's rank (2 for an int)."""
    if spec is not None:
        return ops.layout(spec, f"{who}: spec")
    rank = len(window) if isinstance(window, (tuple, list)) else 2
    if not 1 <= rank <= 3:
        raise ValueError(
            f"{who}: window must be an int (2-D) or a tuple of 1, 2 or 3 sizes, or give spec; "
            f"got {window!r}"
        )
    return ops.layout(ops.channels_last(rank))


def _pool(kind: str, name: str, op: Callable, window, stride, padding, spec) -> Layer:
    defaults = {"stride": None, "padding": "VALID", "spec": None}
    options = {"stride": stride, "padding": padding, "spec": spec}
    who = spatial.describe(name, [window], options, defaults)
    axes = _layout(window, spec, who)
    rank = len(axes.spatial)
    size = checks.int_tuple(window, f"{who}: window", rank)
    strides = size if stride is None else checks.int_tuple(stride, f"{who}: stride", rank)
    pad = ops.padding_pairs(padding, rank, f"{who}: padding")
    sides = (pad,) * rank if isinstance(pad, str) else pad

    def sizes(i, n):
        return F.conv_output_size(n, size[i], sides[i], strides[i])

    def init(key, input_shape):
        shape = spatial.input_shape(input_shape, axes, who)
        return spatial.spatial_out(shape, axes, sizes, who), {}

    def apply(params, x, *, key=None, train=False):
        check_params(params, {}, who)
        shape = spatial.check_input(x, axes, who)
        spatial.spatial_out(shape, axes, sizes, who)  # the window fits the input
        return op(x, size, strides, pad, axes.spec)

    return Layer(init, apply, kind=kind, description=who)


def MaxPool(
    window: Window = 2,
    stride: Window | None = None,
    padding: ops.convolution.Padding = "VALID",
    *,
    spec: str | None = None,
) -> Layer:
    """Max pooling: the largest value of each window, per channel,
    ``y[n, i, c] = max_u x̂[n, s ⊙ i + u, c]`` (see :func:`funcnn.ops.max_pool`).

    ``stride`` defaults to the window (non-overlapping windows); AlexNet's overlapping
    pooling is ``MaxPool(3, 2)``. Output size per axis ``⌊(N + 2p − F)/s⌋ + 1``. Inputs are
    NHWC images by default; a window ``(F,)`` or ``(F_d, F_h, F_w)`` pools NWC sequences or
    NDHWC volumes, and ``spec`` names any other layout, e.g. ``"NCHW"`` (then an int window
    covers every spatial axis). A window larger than the padded input is an error, at
    ``init`` and at ``apply``.

    >>> import jax
    >>> MaxPool(3, 2).init(jax.random.key(0), (-1, 55, 55, 96))[0]
    (-1, 27, 27, 96)
    >>> MaxPool(2, spec="NCHW").init(jax.random.key(0), (-1, 96, 55, 55))[0]
    (-1, 96, 27, 27)
    """
    return _pool("max_pool", "MaxPool", ops.max_pool, window, stride, padding, spec)


def AvgPool(
    window: Window = 2,
    stride: Window | None = None,
    padding: ops.convolution.Padding = "VALID",
    *,
    spec: str | None = None,
) -> Layer:
    """Average pooling: the mean of each window's real (unpadded) elements, per channel
    (see :func:`funcnn.ops.avg_pool`).

    ``stride`` defaults to the window. Output size per axis ``⌊(N + 2p − F)/s⌋ + 1``.
    Layouts as :func:`MaxPool`.

    >>> import jax
    >>> AvgPool(2).init(jax.random.key(0), (-1, 28, 28, 6))[0]
    (-1, 14, 14, 6)
    >>> AvgPool((4,)).init(jax.random.key(0), (-1, 100, 3))[0]  # 1-D, NWC
    (-1, 25, 3)
    """
    return _pool("avg_pool", "AvgPool", ops.avg_pool, window, stride, padding, spec)


def SumPool(
    window: Window = 2,
    stride: Window | None = None,
    padding: ops.convolution.Padding = "VALID",
    *,
    spec: str | None = None,
) -> Layer:
    """Sum pooling: ``y[n, i, c] = Σ_u x̂[n, s ⊙ i + u, c]``, the padding adding zeros
    (see :func:`funcnn.ops.sum_pool`).

    ``stride`` defaults to the window. Output size per axis ``⌊(N + 2p − F)/s⌋ + 1``.
    Layouts as :func:`MaxPool`.

    >>> import jax, jax.numpy as jnp
    >>> SumPool(2).apply({}, jnp.ones((1, 4, 4, 1)))[0, :, :, 0].tolist()
    [[4.0, 4.0], [4.0, 4.0]]
    """
    return _pool("sum_pool", "SumPool", ops.sum_pool, window, stride, padding, spec)


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
    axes = ops.layout("NHWC")

    def init(key, input_shape):
        shape = spatial.input_shape(input_shape, axes, who)
        return (shape[0], shape[3]), {}

    def apply(params, x, *, key=None, train=False):
        check_params(params, {}, who)
        spatial.check_input(x, axes, who)
        return jnp.mean(x, axis=(1, 2))

    return Layer(init, apply, kind="global_avg_pool", description=who)
