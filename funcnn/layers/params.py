"""What a layer's ``apply`` checks of its params: the keys, shapes and dtypes ``init`` made.

A layer knows at construction which params it has (``w``, and ``b`` when it uses a bias) and
derives their shapes from the input at ``apply``; :func:`check_params` then refuses, naming
the layer, a params dict that is not exactly that: a missing or an extra key, a leaf of
another shape (which would otherwise broadcast: a bias of shape ``(1,)`` for 3 outputs), or
a leaf that is not floating point. Shapes and dtypes are static under ``jax.jit``, so the
check runs once, at trace time, and costs nothing in the compiled program.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["check_params", "check_input"]


def check_params(
    params: Any,
    expected: Mapping[str, Sequence[int]],
    who: str,
    *,
    what: str = "params",
) -> dict:
    """``params`` if it is a dict with exactly the keys of ``expected``, each leaf a
    floating-point array of the shape ``expected`` gives it; otherwise a clear error.

    A layer without params passes ``expected={}``: its params must be ``{}``. Wrong keys or
    shapes raise ``ValueError``; params that are no dict, or a leaf that is not a floating
    array (integer, complex, a string), raise ``TypeError``. Every message starts with
    ``who``, the layer (``"Dense(3)"``), and says what was expected and what came.

    Args:
      params: the params (or state) given to ``apply``.
      expected: ``{name: shape}``, in the order the message lists them.
      who: the layer, as its messages name it.
      what: the name of the tree in messages: ``"params"``, or ``"state"`` for a layer's
        state.

    >>> import jax.numpy as jnp
    >>> p = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    >>> check_params(p, {"w": (2, 3), "b": (3,)}, "Dense(3)") is p
    True
    >>> check_params({**p, "b": jnp.zeros(1)}, {"w": (2, 3), "b": (3,)}, "Dense(3)")
    Traceback (most recent call last):
    ...
    ValueError: Dense(3): params['b'] must have shape (3,), got shape (1,)
    >>> shapes = {"w": (2, 3), "b": (3,)}
    >>> check_params({"b": jnp.zeros(3)}, shapes, "Dense(3)")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: Dense(3): params must hold ['w', 'b'] ('w' of shape (2, 3), 'b' of shape (3,)),
    got keys ['b'] (missing 'w')
    >>> check_params({"w": jnp.zeros(2)}, {}, "Tanh()")
    Traceback (most recent call last):
    ...
    ValueError: Tanh(): this layer has no params, so params must be {}, got keys ['w']
    """
    if not isinstance(params, dict):
        holding = f" holding {_listed(expected)}" if expected else " ({} for no params)"
        raise TypeError(f"{who}: {what} must be a dict{holding}, got {type(params).__name__}")
    if set(params) != set(expected):
        raise ValueError(_keys_message(params, expected, who, what))
    for name, shape in expected.items():
        _check_leaf(params[name], tuple(shape), f"{who}: {what}[{name!r}]")
    return params


def check_input(x: Any, who: str, *, min_rank: int = 0) -> tuple[int, ...]:
    """The shape of ``x``, an array (or a number) of rank ``>= min_rank``.

    A tuple or list of arrays (what :func:`~funcnn.core.fanout` and
    :func:`~funcnn.core.parallel` pass on) is refused rather than stacked into one array;
    nested lists of numbers pass, as the array they spell.

    >>> import jax.numpy as jnp
    >>> check_input(jnp.ones((4, 2)), "Dense(3)", min_rank=1), check_input([[1.0, 2.0]], "D")
    ((4, 2), (1, 2))
    >>> check_input((jnp.ones(2), jnp.ones(2)), "Tanh()")
    Traceback (most recent call last):
    ...
    TypeError: Tanh(): expected one array as input, got a tuple of 2 (join branches first, ...)
    """
    if isinstance(x, (tuple, list)) and any(hasattr(v, "shape") for v in x):
        raise TypeError(
            f"{who}: expected one array as input, got a {type(x).__name__} of {len(x)} (join "
            "branches first, e.g. with fanin_sum() or fanin_concat())"
        )
    shape = np.shape(x)
    if len(shape) < min_rank:
        raise ValueError(f"{who}: expected inputs of rank >= {min_rank}, got shape {shape}")
    return shape


def _listed(expected: Mapping[str, Sequence[int]]) -> str:
    """``['w', 'b'] ('w' of shape (2, 3), 'b' of shape (3,))``."""
    shapes = ", ".join(f"{name!r} of shape {tuple(shape)}" for name, shape in expected.items())
    return f"{list(expected)} ({shapes})"


def _keys_message(params: dict, expected: Mapping, who: str, what: str) -> str:
    got = sorted(map(str, params))
    if not expected:
        return f"{who}: this layer has no {what}, so {what} must be {{}}, got keys {got}"
    missing = [n for n in expected if n not in params]
    extra = sorted(str(n) for n in params if n not in expected)
    notes = [f"missing {', '.join(map(repr, missing))}"] if missing else []
    notes += [f"unexpected {', '.join(map(repr, extra))}"] if extra else []
    return f"{who}: {what} must hold {_listed(expected)}, got keys {got} ({'; '.join(notes)})"


def _check_leaf(leaf: Any, shape: tuple[int, ...], where: str) -> None:
    """``leaf`` is a floating-point array of ``shape``."""
    try:
        dtype, got = jnp.result_type(leaf), jnp.shape(leaf)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be an array of shape {shape}, got {leaf!r:.80}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{where} must be a floating-point array (float32, float64, bfloat16, ...), "
            f"got dtype {np.dtype(dtype)}"
        )
    if got != shape:
        raise ValueError(f"{where} must have shape {shape}, got shape {got}")
