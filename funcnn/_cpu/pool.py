"""A CPU formulation of max pooling over windows that tile the image, with a cheaper derivative.

``lax.reduce_window`` with ``lax.max`` sends each window's gradient to the window's first
maximum (row-major). XLA CPU's generic derivative materializes four full-size index arrays
and a scatter for it; :func:`tiled_max_pool` gets the same derivative from one small index of
the winners. Same values and derivatives, ties and NaN included (tests/test_cpu_fast_paths.py);
``docs/benchmarks.md`` has the measurements and the formulations tried.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["tiles", "tiled_max_pool"]

_MAX_POSITIONS = 127  # positions are int8, with 127 as the reduction's start


def tiles(x, dims, strides, pads) -> bool:
    """Whether :func:`tiled_max_pool` applies: a 4-D input, windows that tile it (stride =
    window, no padding) and at most 127 positions a window.

    >>> tiles(jnp.ones((1, 4, 4, 1)), (1, 2, 2, 1), (1, 2, 2, 1), ((0, 0),) * 4)
    True
    """
    no_padding = all(lo == hi == 0 for lo, hi in pads)
    small = dims[1] * dims[2] <= _MAX_POSITIONS
    return jnp.ndim(x) == 4 and dims == strides and no_padding and small


def _reduce_max(dims):
    return lambda x: lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID")


def _first_winner(x, window):
    """``k* = argmax_k x_k`` over each window's positions ``k = F_w u + v`` (on a tie, the
    smallest ``k``), by one reduce-window over ``(x, k)`` pairs: an int8 array the size of
    the output."""
    fh, fw = window
    dims = (1, fh, fw, 1)

    def pick(a, b):  # the larger value; on a tie, the smaller position
        (va, ka), (vb, kb) = a, b
        take_a = (va > vb) | ((va == vb) & (ka < kb))
        return jnp.where(take_a, va, vb), jnp.where(take_a, ka, kb)

    ho, wo = x.shape[1] // fh, x.shape[2] // fw
    pos = jnp.arange(fh, dtype=jnp.int8)[:, None] * fw + jnp.arange(fw, dtype=jnp.int8)
    pos = jnp.broadcast_to(jnp.tile(pos, (ho, wo))[None, :, :, None], x.shape)
    init = (jnp.array(-jnp.inf, x.dtype), jnp.array(_MAX_POSITIONS, jnp.int8))
    _, first = lax.reduce_window((x, pos), init, pick, dims, dims, "VALID")
    return first


@functools.cache
def tiled_max_pool(window):
    """Max pooling with ``stride = window`` and no padding, with the derivative of
    ``lax.reduce_window``'s (each window's tangent is that of its first maximum in row-major
    order) computed from one small index: ``k*`` from :func:`_first_winner`, then
    ``ẏ = Σ_k [k = k*] ẋ_k``.

    >>> x = jnp.array([[1.0, 3.0, 2.0, 2.0], [3.0, 0.0, 0.0, 1.0]]).reshape(1, 2, 4, 1)
    >>> jax.grad(lambda x: tiled_max_pool((2, 2))(x).sum())(x)[0, :, :, 0].tolist()
    [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    fh, fw = window
    f = jax.custom_jvp(_reduce_max((1, fh, fw, 1)))

    def jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        y = f(x)
        ho, wo = x.shape[1] // fh, x.shape[2] // fw
        x, t = x[:, : ho * fh, : wo * fw], t[:, : ho * fh, : wo * fw]
        # which position wins is piecewise constant in x: no derivative flows through it
        first = _first_winner(lax.stop_gradient(x), window)
        zero = jnp.zeros((), t.dtype)
        picked = [
            jnp.where(first == u * fw + v, t[:, u::fh, v::fw], zero)
            for u in range(fh)
            for v in range(fw)
        ]
        return y, functools.reduce(jnp.add, picked)

    f.defjvp(jvp)
    return f
