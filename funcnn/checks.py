"""Argument checks shared by every module: one rule for each kind of argument.

Each check takes the value and ``argument``, the text that names it in the error message
(``"Conv(6, 5): stride"``, ``"fit: batch_size"``), and returns the value normalized (NumPy
integers become ``int``, a padding its per-side pairs, ...). The rules:

* a count (``positive_int``) is an ``int`` or NumPy integer ``>= 1``, never a ``bool``;
* a window, stride or dilation (``int_tuple``) is such an int or a tuple of ``rank`` of them;
* a number (``number``) is a real ``int``/``float`` (NumPy scalars too), never a ``bool``;
* a count, size, tuple of sizes or bounded number (a rate in ``[0, 1)``) that is not one of
  the allowed values raises ``ValueError``, whatever its type (``Dense(2.5)``,
  ``Dropout("0.5")``): the argument has a set of valid values and this is not one;
* an argument of the wrong kind otherwise (an unbounded number that is no number, a path,
  a key, a function, a flag, a shape) raises ``TypeError``.

This module imports no other funcnn module: :mod:`funcnn.functional` and everything above
it build on it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_int",
    "positive_int",
    "int_tuple",
    "number",
    "one_of",
    "boolean",
    "function",
    "named_functions",
    "path",
    "port",
    "prng_key",
    "input_shape",
    "shapes_match",
    "real_dtype",
]


def is_int(value: Any) -> bool:
    """``value`` is an ``int`` or a NumPy integer, and not a ``bool``.

    >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@overload
def positive_int(
    value: Any, argument: str, *, allow_none: Literal[False] = False, minimum: int = 1
) -> int: ...


@overload
def positive_int(
    value: Any, argument: str, *, allow_none: bool, minimum: int = 1
) -> int | None: ...


def positive_int(
    value: Any, argument: str, *, allow_none: bool = False, minimum: int = 1
) -> int | None:
    """An int ``>= minimum`` (default 1), returned as a Python ``int``; ``None`` passes
    when ``allow_none``.

    >>> positive_int(np.int64(3), "Dense: out"), positive_int(None, "x", allow_none=True)
    (3, None)
    >>> positive_int(2.5, "Dense: out")
    Traceback (most recent call last):
    ...
    ValueError: Dense: out must be a positive int, got 2.5
    """
    if value is None and allow_none:
        return None
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if not is_int(value) or value < minimum:
        raise ValueError(f"{argument} must be {what}, got {value!r}")
    return int(value)


def int_tuple(value: Any, argument: str, rank: int = 2, *, minimum: int = 1) -> tuple[int, ...]:
    """An int ``v >= minimum`` as ``(v,) * rank``, or a sequence of ``rank`` such ints.

    >>> int_tuple(2, "Conv(6, 5): stride"), int_tuple((1, np.int64(3)), "kernel")
    ((2, 2), (1, 3))
    >>> int_tuple(0, "Conv(4, 0): kernel")
    Traceback (most recent call last):
    ...
    ValueError: Conv(4, 0): kernel must be an int >= 1 or a pair of them, got 0
    """
    names = {1: "one of them", 2: "a pair of them", 3: "a triple of them"}
    what = f"an int >= {minimum} or {names.get(rank, f'{rank} of them')}"
    if is_int(value):
        values: tuple = (value,) * rank
    elif isinstance(value, (tuple, list)):
        values = tuple(value)
    else:
        values = ()
    if len(values) != rank or not all(is_int(v) for v in values) or min(values) < minimum:
        raise ValueError(f"{argument} must be {what}, got {value!r}")
    return tuple(int(v) for v in values)


def number(
    value: Any,
    argument: str,
    *,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
) -> float:
    """A finite real number in ``[low, high]`` (``[low, high)`` with ``high_open``).

    With bounds, anything outside them (a string too) is a ``ValueError``; without, a value
    that is no real number is a ``TypeError``.

    >>> number(0.5, "Dropout: rate", low=0, high=1, high_open=True)
    0.5
    >>> number(1.0, "Dropout: rate", low=0, high=1, high_open=True)
    Traceback (most recent call last):
    ...
    ValueError: Dropout: rate must be a number in [0, 1), got 1.0
    """
    if high is not None:
        where = f" in [{low}, {high}{')' if high_open else ']'}"
    else:
        where = "" if low is None else f" >= {low}"
    what = f"a number{where}"
    real = isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, (bool, np.bool_)) or not real:
        error = TypeError if low is None and high is None else ValueError
        raise error(f"{argument} must be {what}, got {value!r}")
    v = float(value)
    too_high = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or (low is not None and v < low) or too_high:
        raise ValueError(f"{argument} must be {what}, got {value!r}")
    return v


def one_of(value: Any, choices: Iterable[Any], argument: str) -> Any:
    """``value`` if it is one of ``choices``.

    >>> one_of("skip", ("raise", "skip", "ignore"), "fit: on_nonfinite")
    'skip'
    >>> one_of("stop", ("raise", "skip"), "fit: on_nonfinite")
    Traceback (most recent call last):
    ...
    ValueError: fit: on_nonfinite must be one of ('raise', 'skip'), got 'stop'
    """
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a dict's keys
        ok = False
    if not ok:
        raise ValueError(f"{argument} must be one of {choices}, got {value!r}")
    return value


def boolean(value: Any, argument: str) -> bool:
    """A ``bool`` (or NumPy bool).

    >>> boolean(True, "fit: resume")
    True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argument} must be a bool, got {value!r}")
    return bool(value)


def function(value: Any, argument: str, *, allow_none: bool = False) -> Callable | None:
    """A callable; ``None`` passes when ``allow_none``.

    >>> function(len, "fit: loss") is len
    True
    """
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(f"{argument} must be callable, got {value!r}")
    return value


def named_functions(value: Any, argument: str) -> dict[str, Callable]:
    """A mapping of names (``str``) to callables, as a ``dict``: metrics by name.

    >>> named_functions({"accuracy": len}, "fit: metrics")
    {'accuracy': <built-in function len>}
    >>> named_functions([len], "fit: metrics")
    Traceback (most recent call last):
    ...
    TypeError: fit: metrics must be a dict of name -> fn(outputs, targets), ...; got a list
    """
    what = "a dict of name -> fn(outputs, targets), such as {'accuracy': losses.accuracy}"
    if not isinstance(value, Mapping):
        raise TypeError(f"{argument} must be {what}; got a {type(value).__name__}")
    for name, fn in value.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"{argument} must be {what}; got the entry {name!r}: {fn!r}")
    return dict(value)


def path(value: Any, argument: str) -> Path:
    """A ``str`` or ``os.PathLike`` as a :class:`pathlib.Path` (``bytes`` are refused).

    >>> path("runs/a", "fit: checkpoint_dir").as_posix()
    'runs/a'
    """
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argument}: path must be a str or os.PathLike, got {value!r}")
    return Path(value)


def port(value: Any, argument: str = "port") -> int:
    """A TCP port: an int in ``[0, 65535]``, ``0`` asking for a free one.

    >>> port(8000)
    8000
    >>> port(99999)
    Traceback (most recent call last):
    ...
    ValueError: port: expected an int in [0, 65535] (0: a free port), got 99999
    """
    if not is_int(value) or not 0 <= value <= 65535:
        raise ValueError(
            f"{argument}: expected an int in [0, 65535] (0: a free port), got {value!r}"
        )
    return int(value)


def prng_key(key: Any, argument: str = "key") -> jax.Array:
    """A PRNG key, or an int seed made into one: ``k = jax.random.key(seed)``.

    Legacy ``uint32[2]`` keys (``jax.random.PRNGKey``) pass too.

    >>> k = jax.random.key(1)
    >>> prng_key(k) is k, prng_key(7).shape
    (True, ())
    """
    if is_int(key):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        legacy = key.dtype == jnp.uint32 and key.shape[-1:] == (2,)
        if typed or legacy:
            return key
    raise TypeError(f"{argument}: expected a jax.random key or an int seed, got {key!r}")


def _is_dim(d: Any) -> bool:
    return d is None or (is_int(d) and (d > 0 or d == -1))


def input_shape(
    shape: Any, who: str, *, min_rank: int = 1, rank: int | None = None
) -> tuple[int, ...]:
    """A shape given to ``init``: a tuple of positive ints, ``-1`` / ``None`` for an unknown
    size (``None`` becomes ``-1``), of rank ``rank`` or at least ``min_rank``.

    >>> input_shape([None, 3], "Dense(4)")
    (-1, 3)
    >>> input_shape((-1, 3), "Conv(6, 5)", rank=4)
    Traceback (most recent call last):
    ...
    ValueError: Conv(6, 5): expected an input of rank 4, got shape (-1, 3)
    """
    if not isinstance(shape, (tuple, list)) or not all(_is_dim(d) for d in shape):
        raise TypeError(
            f"{who}: input_shape must be a tuple of positive ints (the batch may be -1), "
            f"got {shape!r}"
        )
    out = tuple(-1 if d is None else int(d) for d in shape)
    if rank is not None and len(out) != rank:
        raise ValueError(f"{who}: expected an input of rank {rank}, got shape {out}")
    if len(out) < min_rank:
        raise ValueError(f"{who}: expected an input of rank >= {min_rank}, got shape {out}")
    return out


def shapes_match(a: Sequence[int], b: Sequence[int]) -> bool:
    """Shapes are equal, where ``-1`` (an unknown batch) matches any size.

    ``a ~ b`` when ``len(a) == len(b)`` and ``a_i = b_i`` or ``-1 ∈ {a_i, b_i}`` for every
    ``i``.

    >>> shapes_match((-1, 3), (32, 3)), shapes_match((2, 3), (2, 4)), shapes_match((3,), (3, 1))
    (True, False, False)
    """
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def real_dtype(*arrays: Any, argument: str) -> np.dtype:
    """The dtype ``arrays`` promote to (``jnp.result_type``, as ``jnp.matmul`` promotes its
    operands), which must be real: bool, integer or floating point. Complex is refused.

    Integers promote to the floating dtype beside them; float16 or bfloat16 beside float32
    give float32.

    >>> x, w = jnp.ones((2, 3), jnp.int32), jnp.ones((3, 4), jnp.float32)
    >>> real_dtype(x, w, argument="conv2d"), real_dtype(x.astype(jnp.bfloat16), w, argument="d")
    (dtype('float32'), dtype('float32'))
    >>> real_dtype(x.astype(jnp.complex64), w, argument="Dense(4): inputs")
    Traceback (most recent call last):
    ...
    TypeError: Dense(4): inputs: expected real arrays (...), got dtypes complex64 and float32; ...
    """
    dtypes = [jnp.result_type(a) for a in arrays]
    if any(jnp.issubdtype(d, jnp.complexfloating) for d in dtypes):
        shown = " and ".join(str(np.dtype(d)) for d in dtypes)
        raise TypeError(
            f"{argument}: expected real arrays (bool, integer or floating point), got dtypes "
            f"{shown}; complex numbers are not supported"
        )
    return np.dtype(jnp.result_type(*arrays))
