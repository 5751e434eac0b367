"""Layer constructors: each a thin ``(init, apply)`` pair over one functional op.

Every constructor returns a :class:`funcnn.core.Layer`; call it, even without arguments
(``Tanh()``), and compose with :func:`funcnn.core.serial`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from . import functional as F
from . import initializers
from .core import Layer, check_input_shape

__all__ = [
    "Dense",
    "Dropout",
    "Identity",
    "Tanh",
    "Relu",
    "Sigmoid",
    "Softmax",
    "LogSoftmax",
    "Gelu",
    "LeakyRelu",
    "elementwise",
    "Conv",
    "MaxPool",
    "AvgPool",
    "Flatten",
    "LRN",
]


def _positive_int(value, who: str, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {argument} must be a positive int, got {value!r}")
    return value


def Dense(
    out: int,
    *,
    w_init: str | initializers.Initializer = "lecun_normal",
    b_init: str | initializers.Initializer = "zeros",
    use_bias: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """Fully connected layer: ``y = x W + b`` over the last axis.

    Params: ``{"w": (n_in, out), "b": (out,)}``. ``w_init`` / ``b_init`` take an initializer
    name from :mod:`funcnn.initializers` (default the lecture's N(0, 1/n_in)) or a callable.

    >>> import jax
    >>> shape, params = Dense(3).init(jax.random.key(0), (-1, 2))
    >>> shape, params["w"].shape, params["b"].shape
    ((-1, 3), (2, 3), (3,))
    """
    who = f"Dense({out})"
    _positive_int(out, "Dense", "out")
    w_fn = initializers.get(w_init, argument=f"{who}: w_init")
    b_fn = initializers.get(b_init, argument=f"{who}: b_init") if use_bias else None

    def init(key, input_shape):
        shape = check_input_shape(input_shape, who)
        n_in = shape[-1]
        if n_in == -1:
            raise ValueError(f"{who}: the input width (last axis) must be known, got {shape}")
        kw, kb = jax.random.split(key)
        params = {"w": w_fn(kw, (n_in, out), dtype)}
        if b_fn is not None:
            params["b"] = b_fn(kb, (out,), dtype)
        return shape[:-1] + (out,), params

    def apply(params, x, *, key=None, train=False):
        if not isinstance(params, dict) or "w" not in params:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{who}: params must be a dict with 'w' (and 'b'), got {got}")
        w = params["w"]
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != w.shape[0]:
            raise ValueError(
                f"{who}: expected inputs whose last axis has size {w.shape[0]}, "
                f"got shape {jnp.shape(x)}"
            )
        return F.dense(x, w, params.get("b"))

    return Layer(init, apply, kind="dense", description=who)


def elementwise(fn: Callable, kind: str, description: str | None = None) -> Layer:
    """A parameter-free layer applying ``fn`` to its input: ``y = fn(x)``; the shape is kept.

    Args:
      fn: an elementwise function of an array ``x`` of any shape ``(n, ...)``, returning
        an array of the same shape.
      kind: the stem of the layer's automatic name (``kind_0``, ...).
      description: the text shown in messages and summaries; default ``"<kind>()"``.

    >>> import jax.numpy as jnp
    >>> square = elementwise(jnp.square, "square")
    >>> square, square.apply({}, jnp.arange(3.0)).tolist()
    (<Layer square()>, [0.0, 1.0, 4.0])
    """

    def init(key, input_shape):
        return input_shape, {}

    def apply(params, x, *, key=None, train=False):
        return fn(x)

    return Layer(init, apply, kind=kind, description=description or f"{kind}()")


def Identity() -> Layer:
    """``y = x``.

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    >>> import jax.numpy as jnp
    >>> Identity().apply({}, jnp.array([1.0, -2.0])).tolist()
    [1.0, -2.0]
    """
    return elementwise(lambda x: x, "identity", "Identity()")


def Tanh() -> Layer:
    """``y = tanh(x) = (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ)``, values in (−1, 1).

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    >>> import jax.numpy as jnp
    >>> y = Tanh().apply({}, jnp.array([-1.0, 0.0, 1.0]))
    >>> [round(v, 4) for v in y.tolist()]
    [-0.7616, 0.0, 0.7616]
    """
    return elementwise(jnp.tanh, "tanh", "Tanh()")


def Relu() -> Layer:
    """``y = max(0, x)``.

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    >>> import jax.numpy as jnp
    >>> Relu().apply({}, jnp.array([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 2.0]
    """
    return elementwise(jax.nn.relu, "relu", "Relu()")


def Sigmoid() -> Layer:
    """``y = σ(x) = 1/(1 + e⁻ˣ)``, values in (0, 1).

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    >>> import jax.numpy as jnp
    >>> y = Sigmoid().apply({}, jnp.array([-1.0, 0.0, 1.0]))
    >>> [round(v, 4) for v in y.tolist()]
    [0.2689, 0.5, 0.7311]
    """
    return elementwise(jax.nn.sigmoid, "sigmoid", "Sigmoid()")


def Softmax(axis: int = -1) -> Layer:
    """``softmax_i(x) = exp(x_i) / Σ_k exp(x_k)`` along ``axis``.

    Input ``x`` of any shape, e.g. logits ``(n, c)``; ``y`` has the same shape, with
    non-negative entries summing to 1 along ``axis``. No params.

    Args:
      axis: the axis of the classes.

    >>> import jax.numpy as jnp
    >>> y = Softmax().apply({}, jnp.log(jnp.array([[1.0, 3.0]])))
    >>> [round(v, 4) for v in y[0].tolist()]
    [0.25, 0.75]
    """
    return elementwise(lambda x: jax.nn.softmax(x, axis=axis), "softmax", f"Softmax({axis})")


def LogSoftmax(axis: int = -1) -> Layer:
    """``log softmax_i(x) = x_i − log Σ_k exp(x_k)`` along ``axis``.

    Input ``x`` of any shape, e.g. logits ``(n, c)``; ``y`` has the same shape. No params.

    Args:
      axis: the axis of the classes.

    >>> import jax.numpy as jnp
    >>> y = LogSoftmax().apply({}, jnp.zeros((1, 2)))  # log(1/2) = −0.6931
    >>> [round(v, 4) for v in y[0].tolist()]
    [-0.6931, -0.6931]
    """
    return elementwise(
        lambda x: jax.nn.log_softmax(x, axis=axis), "log_softmax", f"LogSoftmax({axis})"
    )


def Gelu(approximate: bool = False) -> Layer:
    """``y = x Φ(x)`` with Φ the standard normal CDF (tanh approximation if asked).

    With ``approximate=True``: ``y = x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))``.

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    Args:
      approximate: use the tanh approximation instead of the exact ``Φ``.

    >>> import jax.numpy as jnp
    >>> y = Gelu().apply({}, jnp.array([-1.0, 0.0, 1.0]))  # Φ(1) = 0.8413
    >>> [round(v, 4) for v in y.tolist()]
    [-0.1587, 0.0, 0.8413]
    """
    return elementwise(
        lambda x: jax.nn.gelu(x, approximate=approximate), "gelu", f"Gelu({approximate})"
    )


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """``y = x`` for ``x ≥ 0``, ``negative_slope · x`` otherwise.

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    Args:
      negative_slope: the slope ``a`` of ``y = a x`` for ``x < 0``.

    >>> import jax.numpy as jnp
    >>> y = LeakyRelu(0.1).apply({}, jnp.array([-2.0, 3.0]))
    >>> [round(v, 4) for v in y.tolist()]
    [-0.2, 3.0]
    """
    if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool):
        raise TypeError(f"LeakyRelu: negative_slope must be a number, got {negative_slope!r}")
    return elementwise(
        lambda x: jax.nn.leaky_relu(x, negative_slope), "leaky_relu", f"LeakyRelu({negative_slope})"
    )


def Dropout(rate: float) -> Layer:
    """Inverted dropout with drop probability ``rate``, active only in training.

    ``train=True``: ``y = m ⊙ x / (1 − rate)``, ``m ~ Bernoulli(1 − rate)``, needs ``key``.
    ``train=False``: ``y = x``.

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    Args:
      rate: the probability of dropping a unit, in ``[0, 1)``.

    >>> import jax, jax.numpy as jnp
    >>> layer, x = Dropout(0.5), jnp.ones((4, 8))
    >>> bool((layer.apply({}, x) == x).all())  # evaluation: y = x
    True
    >>> y = layer.apply({}, x, key=jax.random.key(0), train=True)
    >>> sorted(set(y.ravel().tolist()))  # dropped: 0; kept: x / (1 − 0.5)
    [0.0, 2.0]
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
    who = f"Dropout({rate})"

    def init(key, input_shape):
        return input_shape, {}

    def apply(params, x, *, key=None, train=False):
        if not train or rate == 0.0:
            return x
        if key is None:
            raise ValueError(
                f"{who}: train=True needs a PRNG key, call apply(params, x, key=key, train=True)"
            )
        return F.dropout(key, x, rate)

    return Layer(init, apply, kind="dropout", description=who)


# ------------------------------------------------------------------ convolutional layers


def _describe(kind: str, args: list, options: dict, defaults: dict) -> str:
    parts = [repr(a) for a in args]
    parts += [f"{k}={v!r}" for k, v in options.items() if v != defaults.get(k)]
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
    _positive_int(filters, who, "filters")
    window = F._pair(kernel, f"{who}: kernel")
    strides = F._pair(stride, f"{who}: stride")
    dilations = F._pair(dilation, f"{who}: dilation")
    pad = F.spatial_padding(padding, f"{who}: padding")
    _positive_int(groups, who, "groups")
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
    size = F._pair(window, f"{who}: window")
    strides = size if stride is None else F._pair(stride, f"{who}: stride")
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


def Flatten() -> Layer:
    """``(n, d_1, ..., d_k) -> (n, d_1 ⋯ d_k)``: images to vectors for a dense head.

    >>> import jax
    >>> Flatten().init(jax.random.key(0), (-1, 6, 6, 256))[0]
    (-1, 9216)
    """
    who = "Flatten()"

    def init(key, input_shape):
        shape = check_input_shape(input_shape, who, min_rank=2)
        if -1 in shape[1:]:
            raise ValueError(f"{who}: every axis but the batch must be known, got {shape}")
        return (shape[0], math.prod(shape[1:])), {}

    def apply(params, x, *, key=None, train=False):
        if jnp.ndim(x) < 2:
            raise ValueError(f"{who}: expected a batch of arrays (rank >= 2), got {jnp.shape(x)}")
        return F.flatten(x)

    return Layer(init, apply, kind="flatten", description=who)


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
    _positive_int(n, who, "n")
    for name in ("k", "alpha", "beta"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{who}: {name} must be a number >= 0, got {value!r}")

    def init(key, input_shape):
        return check_input_shape(input_shape, who), {}

    def apply(params, x, *, key=None, train=False):
        return F.lrn(x, k, n, alpha, beta)

    return Layer(init, apply, kind="lrn", description=who)
