"""Activation layers: parameter-free, elementwise (``y = f(x)``, shape kept), each a
``jax.nn`` function."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .. import checks
from ..checks import input_shape as check_input_shape
from ..core import Layer
from .params import check_input, check_params

__all__ = [
    "elementwise",
    "Identity",
    "Tanh",
    "Relu",
    "Sigmoid",
    "Softmax",
    "LogSoftmax",
    "Gelu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Softplus",
    "Exp",
]


def elementwise(fn: Callable, kind: str, description: str | None = None) -> Layer:
    """A parameter-free layer applying ``fn`` to its input: ``y = fn(x)``; the shape is kept.

    Args:
      fn: an elementwise function of an array ``x`` of any shape ``(n, ...)``, returning
        an array of the same shape.
      kind: the stem of the layer's automatic name (``kind_0``, ...).
      description: the text shown in messages and summaries; default ``"<kind>()"``.

    ``apply`` refuses params other than ``{}`` and a tuple of arrays (branches not yet
    joined), naming the layer.

    >>> import jax.numpy as jnp
    >>> square = elementwise(jnp.square, "square")
    >>> square, square.apply({}, jnp.arange(3.0)).tolist()
    (<Layer square()>, [0.0, 1.0, 4.0])
    """

    who = description or f"{kind}()"

    def init(key, input_shape):
        return check_input_shape(input_shape, who, min_rank=0), {}

    def apply(params, x, *, key=None, train=False):
        check_params(params, {}, who)
        check_input(x, who)
        return fn(x)

    return Layer(init, apply, kind=kind, description=who)


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
    who = f"Softmax({axis})"
    return elementwise(_on_axis(jax.nn.softmax, axis, who), "softmax", who)


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
    who = f"LogSoftmax({axis})"
    return elementwise(_on_axis(jax.nn.log_softmax, axis, who), "log_softmax", who)


def _on_axis(fn: Callable, axis: int, who: str) -> Callable:
    """``x -> fn(x, axis=axis)``, refusing an ``axis`` out of range for ``x``."""

    def along(x):
        if not -jnp.ndim(x) <= axis < jnp.ndim(x):
            raise ValueError(
                f"{who}: axis {axis} is out of range for inputs of shape {jnp.shape(x)}"
            )
        return fn(x, axis=axis)

    return along


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
    checks.number(negative_slope, "LeakyRelu: negative_slope")
    return elementwise(
        lambda x: jax.nn.leaky_relu(x, negative_slope), "leaky_relu", f"LeakyRelu({negative_slope})"
    )


def Elu(alpha: float = 1.0) -> Layer:
    """``y = x`` for ``x > 0``, ``α (eˣ − 1)`` otherwise (``jax.nn.elu``).

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    Args:
      alpha: the value ``−α`` that ``y`` tends to as ``x → −∞``.

    >>> import jax.numpy as jnp
    >>> y = Elu().apply({}, jnp.array([-1.0, 0.0, 2.0]))  # e⁻¹ − 1 = −0.6321
    >>> [round(v, 4) for v in y.tolist()]
    [-0.6321, 0.0, 2.0]
    """
    checks.number(alpha, "Elu: alpha")
    return elementwise(lambda x: jax.nn.elu(x, alpha), "elu", f"Elu({alpha})")


def Selu() -> Layer:
    """``y = λ x`` for ``x > 0``, ``λ α (eˣ − 1)`` otherwise, with ``λ ≈ 1.0507`` and
    ``α ≈ 1.6733`` (``jax.nn.selu``), the constants that keep zero mean and unit variance
    through a deep network (Klambauer et al., 2017).

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    >>> import jax.numpy as jnp
    >>> y = Selu().apply({}, jnp.array([-1.0, 0.0, 1.0]))
    >>> [round(v, 4) for v in y.tolist()]
    [-1.1113, 0.0, 1.0507]
    """
    return elementwise(jax.nn.selu, "selu", "Selu()")


def Softplus(beta: float = 1.0) -> Layer:
    """``y = log(1 + e^{βx}) / β``, a smooth ReLU (``jax.nn.softplus`` of ``βx``, over ``β``).

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    Args:
      beta: the sharpness ``β > 0``; as ``β → ∞``, ``y → max(0, x)``.

    >>> import jax.numpy as jnp
    >>> y = Softplus().apply({}, jnp.array([-1.0, 0.0, 1.0]))  # log 2 = 0.6931
    >>> [round(v, 4) for v in y.tolist()]
    [0.3133, 0.6931, 1.3133]
    """
    beta = checks.number(beta, "Softplus: beta", low=0)
    if beta == 0:
        raise ValueError("Softplus: beta must be a number > 0, got 0")
    description = "Softplus()" if beta == 1.0 else f"Softplus({beta})"
    return elementwise(lambda x: jax.nn.softplus(beta * x) / beta, "softplus", description)


def Exp() -> Layer:
    """``y = eˣ``, elementwise.

    Input ``x`` of any shape ``(n, ...)``; ``y`` has the same shape. No params.

    >>> import jax.numpy as jnp
    >>> Exp().apply({}, jnp.array([0.0, 1.0])).tolist()[0]
    1.0
    """
    return elementwise(jnp.exp, "exp", "Exp()")
