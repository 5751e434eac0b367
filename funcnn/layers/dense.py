"""The dense layer, dropout and flatten: ``y = x W + b``, its regularizer, and the step from
images to vectors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .. import checks, initializers
from .. import functional as F
from ..checks import input_shape as check_input_shape
from ..core import Layer
from .params import check_input, check_params

__all__ = ["Dense", "Dropout", "Flatten"]


def Dense(
    out: int,
    *,
    w_init: str | initializers.Initializer = "lecun_normal",
    b_init: str | initializers.Initializer = "zeros",
    use_bias: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """Fully connected layer: ``y = x W + b`` over the last axis.

    Params: ``{"w": (n_in, out), "b": (out,)}`` (no ``"b"`` without ``use_bias``).
    ``w_init`` / ``b_init`` take an initializer name from :mod:`funcnn.initializers` (default
    the lecture's N(0, 1/n_in)) or a callable; ``init`` takes a PRNG key or an int seed.

    ``apply`` refuses params that are not exactly these (a missing bias, a bias of shape
    ``(1,)`` that would broadcast, an integer leaf) and complex inputs; integer inputs are
    promoted to the params' dtype, and float16 / bfloat16 inputs beside float32 params are
    computed in float32 (``jnp.matmul``'s promotion).

    >>> import jax
    >>> shape, params = Dense(3).init(jax.random.key(0), (-1, 2))
    >>> shape, params["w"].shape, params["b"].shape
    ((-1, 3), (2, 3), (3,))
    """
    who = f"Dense({out})"
    out = checks.positive_int(out, "Dense: out")
    w_fn = initializers.get(w_init, argument=f"{who}: w_init")
    b_fn = initializers.get(b_init, argument=f"{who}: b_init") if use_bias else None

    def init(key, input_shape):
        key = checks.prng_key(key, f"{who}: key")
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
        n_in = _input_width(params, x, out, who)
        expected = {"w": (n_in, out), "b": (out,)} if use_bias else {"w": (n_in, out)}
        check_params(params, expected, who)
        checks.real_dtype(x, argument=f"{who}: inputs")
        return F.dense(x, params["w"], params.get("b"))

    return Layer(init, apply, kind="dense", description=who)


def _input_width(params, x, out: int, who: str) -> int:
    """``n_in``, the size of the last axis of ``x``; when ``params["w"]`` is a ``(k, out)``
    matrix, ``n_in`` must be ``k`` (the input, not the params, is then what is wrong)."""
    n_in = check_input(x, who, min_rank=1)[-1]
    w = params.get("w") if isinstance(params, dict) else None
    w_shape = jnp.shape(w) if w is not None and hasattr(w, "shape") else None
    if w_shape is not None and len(w_shape) == 2 and w_shape[1] == out and w_shape[0] != n_in:
        raise ValueError(
            f"{who}: expected inputs whose last axis has size {w_shape[0]}, "
            f"got shape {jnp.shape(x)}"
        )
    return n_in


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
    checks.number(rate, "Dropout: rate", low=0, high=1, high_open=True)
    who = f"Dropout({rate})"

    def init(key, input_shape):
        return check_input_shape(input_shape, who, min_rank=0), {}

    def apply(params, x, *, key=None, train=False):
        check_params(params, {}, who)
        check_input(x, who)
        if not train or rate == 0.0:
            return x
        if key is None:
            raise ValueError(
                f"{who}: train=True needs a PRNG key, call apply(params, x, key=key, train=True)"
            )
        return F.dropout(checks.prng_key(key, f"{who}: key"), x, rate)

    return Layer(init, apply, kind="dropout", description=who)


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
        check_params(params, {}, who)
        if len(check_input(x, who)) < 2:
            raise ValueError(f"{who}: expected a batch of arrays (rank >= 2), got {jnp.shape(x)}")
        return F.flatten(x)

    return Layer(init, apply, kind="flatten", description=who)
