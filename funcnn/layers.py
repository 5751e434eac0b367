"""Layer constructors: each a thin ``(init, apply)`` pair over one functional op.

Every constructor returns a :class:`funcnn.core.Layer`; call it, even without arguments
(``Tanh()``), and compose with :func:`funcnn.core.serial`.
"""

from __future__ import annotations

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
    """A parameter-free layer applying ``fn`` to its input; the shape is kept."""

    def init(key, input_shape):
        return input_shape, {}

    def apply(params, x, *, key=None, train=False):
        return fn(x)

    return Layer(init, apply, kind=kind, description=description or f"{kind}()")


def Identity() -> Layer:
    """``y = x``."""
    return elementwise(lambda x: x, "identity", "Identity()")


def Tanh() -> Layer:
    """``y = tanh(x) = (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ)``, values in (−1, 1)."""
    return elementwise(jnp.tanh, "tanh", "Tanh()")


def Relu() -> Layer:
    """``y = max(0, x)``."""
    return elementwise(jax.nn.relu, "relu", "Relu()")


def Sigmoid() -> Layer:
    """``y = σ(x) = 1/(1 + e⁻ˣ)``, values in (0, 1)."""
    return elementwise(jax.nn.sigmoid, "sigmoid", "Sigmoid()")


def Softmax(axis: int = -1) -> Layer:
    """``softmax_i(x) = exp(x_i) / Σ_k exp(x_k)`` along ``axis``."""
    return elementwise(lambda x: jax.nn.softmax(x, axis=axis), "softmax", f"Softmax({axis})")


def LogSoftmax(axis: int = -1) -> Layer:
    """``log softmax_i(x) = x_i − log Σ_k exp(x_k)`` along ``axis``."""
    return elementwise(
        lambda x: jax.nn.log_softmax(x, axis=axis), "log_softmax", f"LogSoftmax({axis})"
    )


def Gelu(approximate: bool = False) -> Layer:
    """``y = x Φ(x)`` with Φ the standard normal CDF (tanh approximation if asked)."""
    return elementwise(
        lambda x: jax.nn.gelu(x, approximate=approximate), "gelu", f"Gelu({approximate})"
    )


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """``y = x`` for ``x ≥ 0``, ``negative_slope · x`` otherwise."""
    if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool):
        raise TypeError(f"LeakyRelu: negative_slope must be a number, got {negative_slope!r}")
    return elementwise(
        lambda x: jax.nn.leaky_relu(x, negative_slope), "leaky_relu", f"LeakyRelu({negative_slope})"
    )


def Dropout(rate: float) -> Layer:
    """Inverted dropout with drop probability ``rate``, active only in training.

    ``train=True``: ``y = m ⊙ x / (1 − rate)``, ``m ~ Bernoulli(1 − rate)``, needs ``key``.
    ``train=False``: ``y = x``.
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
