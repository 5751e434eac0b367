"""Private: what makes funcnn fast on a CPU, and the one switch that turns it off.

:mod:`funcnn.functional` states each op as the ``lax`` call it computes. ``conv2d`` and
``max_pool`` then hand that call to :func:`conv2d` / :func:`max_pool` here, which return it
untouched, except in a program that ``funcnn.jit`` traces with the CPU tuning on: there they
return a formulation that XLA's CPU backend runs faster, selected by ``lax.platform_dependent``
so that a program lowered for a GPU or TPU keeps the ``lax`` op:

* a one-channel convolution as the sum of its shifted products (:mod:`.conv`);
* a stride-1 convolution of 2 to 8 input channels with an in-place input gradient
  (:mod:`.conv`);
* max pooling over windows that tile the image, with a cheaper derivative (:mod:`.pool`).

Each is the same function as the ``lax`` op, with the same derivatives
(``tests/test_cpu_fast_paths.py``); ``docs/benchmarks.md`` has the measurements.
:mod:`.options` holds the XLA options ``funcnn.jit`` compiles with on a CPU.

Only ``funcnn.jit`` allows the fast paths (:func:`allow_fast_paths`), so ``jax.jit``,
``jax.make_jaxpr``, ``jax.export`` and ``funcnn.graph.trace`` see the ``lax`` ops. The flag it
sets is part of JAX's trace context (``jax.make_user_context``): a jitted function called
inside a ``funcnn.jit`` program is traced anew there, never taken from a trace made outside,
nor the other way round.

The switch: ``FUNCNN_CPU_TUNING=0`` in the environment, or ``funcnn.compiler.cpu_tuning(False)``
(:func:`set_enabled`), read when a ``funcnn.jit`` function is built.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from . import conv, pool
from .options import xla_options

__all__ = [
    "ENV",
    "enabled",
    "set_enabled",
    "allow_fast_paths",
    "conv2d",
    "max_pool",
    "xla_options",
]

#: The environment variable that turns the CPU tuning off when set to ``0`` (or ``false``,
#: ``off``, ``no``).
ENV = "FUNCNN_CPU_TUNING"

_switch: bool | None = None  # set_enabled's setting; None: the environment decides


def enabled() -> bool:
    """Whether a ``funcnn.jit`` function built now gets the CPU tuning: :func:`set_enabled`'s
    setting, else on unless the environment sets ``FUNCNN_CPU_TUNING=0``.

    >>> isinstance(enabled(), bool)
    True
    """
    if _switch is not None:
        return _switch
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def set_enabled(value: bool | None) -> bool | None:
    """Turn the CPU tuning on or off (``None``: as the environment says); returns the
    previous setting, to restore it with.

    >>> previous = set_enabled(False)
    >>> enabled()
    False
    >>> _ = set_enabled(previous)
    """
    global _switch
    previous, _switch = _switch, value
    return previous


class _Flag:
    """``jax.make_user_context``'s interface over a ``contextvars.ContextVar``, for a JAX
    without it (there, a jitted function traced both inside and outside a ``funcnn.jit``
    program may reuse one trace for both)."""

    def __init__(self) -> None:
        self._var = contextvars.ContextVar("funcnn_cpu_fast_paths", default=False)

    @property
    def value(self) -> bool:
        return self._var.get()

    @contextlib.contextmanager
    def __call__(self, value: bool):
        token = self._var.set(value)
        try:
            yield
        finally:
            self._var.reset(token)


_make_user_context = getattr(jax, "make_user_context", None)
# True while funcnn.jit traces a function: the only time the fast paths are taken
_allowed = _make_user_context(False) if _make_user_context else _Flag()


def allow_fast_paths(fun: Callable) -> Callable:
    """``fun``, with the fast paths allowed while it runs: ``funcnn.jit`` hands this to
    ``jax.jit``, which runs it to trace it.

    >>> import jax
    >>> x, w = jnp.ones((1, 6, 6, 1)), jnp.ones((3, 3, 1, 2))
    >>> from funcnn.functional import conv2d
    >>> def ops(f):
    ...     return {e.primitive.name for e in jax.make_jaxpr(f)(x, w).jaxpr.eqns}
    >>> sorted(ops(conv2d)), sorted(ops(allow_fast_paths(conv2d)))
    (['conv_general_dilated'], ['cond', 'platform_index'])
    """

    @functools.wraps(fun)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with _allowed(True):
            return fun(*args, **kwargs)

    return traced


_FAST_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


def _fast_dtype(*arrays) -> bool:
    """The fast paths take operands of one dtype among IEEE half, bfloat16, single and double
    precision (their sums run in float32 or wider); float8 and other types keep the plain
    lax ops, and operands of different dtypes get lax's own error."""
    dtypes = {jnp.result_type(a) for a in arrays}
    return len(dtypes) == 1 and dtypes.pop() in _FAST_DTYPES


def _on_cpu(fast, default, *args):
    """``fast(*args)`` in programs compiled for a CPU, ``default(*args)`` elsewhere.

    The two compute the same function; ``fast`` is a formulation that XLA's CPU backend runs
    faster. Only the branch for the platform a program is compiled for is lowered."""
    return lax.platform_dependent(*args, cpu=fast, default=default)


def conv2d(default: Callable, x, w, stride, pad, dilation, groups):
    """``default(x, w)``: the convolution ``functional.conv2d`` states, with these
    ``stride``, ``pad`` (a padding string or per-side pairs), ``dilation`` and ``groups``;
    in a ``funcnn.jit`` program on a CPU, one of :mod:`.conv`'s formulations where one applies.

    >>> x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2))
    >>> conv2d(lambda x, w: "lax's", x, w, (1, 1), "VALID", (1, 1), 1)  # outside funcnn.jit
    "lax's"
    """
    if not _allowed.value or jnp.ndim(x) != 4 or jnp.ndim(w) != 4 or not _fast_dtype(x, w):
        return default(x, w)
    pad = conv.explicit_padding(x, w, stride, pad, dilation)
    if conv.one_channel(x, w, pad, dilation, groups):
        return _on_cpu(conv.single_channel_conv(stride, pad, dilation), default, x, w)
    if conv.few_channels(x, w, stride, pad, dilation, groups):
        return _on_cpu(conv.few_channel_conv(pad), default, x, w)
    return default(x, w)


def max_pool(default: Callable, x, dims, strides, pads):
    """``default(x)``: the max pooling ``functional.max_pool`` states, over windows ``dims``
    with ``strides`` and per-axis ``pads``; in a ``funcnn.jit`` program on a CPU,
    :func:`.pool.tiled_max_pool` where the windows tile the image.

    >>> max_pool(lambda x: "lax's", jnp.ones((1, 4, 4, 1)), (1, 2, 2, 1), (1, 2, 2, 1), ())
    "lax's"
    """
    if not _allowed.value or not pool.tiles(x, dims, strides, pads) or not _fast_dtype(x):
        return default(x)
    return _on_cpu(pool.tiled_max_pool(dims[1:3]), default, x)
