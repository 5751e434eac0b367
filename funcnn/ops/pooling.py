"""Max, average and sum pooling over any window, stride and layout.

A layout (``spec``) names the axes of the input, as ``stax``'s pooling layers do: ``"NHWC"``
(the default for 2-D windows), ``"NCHW"``, ``"NWC"``, ``"NCDHW"``, ... ``N`` is the batch,
``C`` the channels, every other letter a spatial axis, pooled in the order the letters come.
Channels-last 2-D pooling is :func:`funcnn.functional.max_pool` / ``avg_pool`` themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array, lax

from .. import checks
from .. import functional as F
from .convolution import Padding, padding_pairs, planar

__all__ = ["Layout", "layout", "channels_last", "max_pool", "avg_pool", "sum_pool"]


class Layout(NamedTuple):
    """The axes a layout string names: ``spec`` (upper-cased), ``batch`` and ``channels``
    (the positions of ``N`` and ``C``) and ``spatial`` (the other positions, in order)."""

    spec: str
    batch: int
    channels: int
    spatial: tuple[int, ...]


def layout(spec: str, argument: str = "spec") -> Layout:
    """The axes of a layout such as ``"NCHW"``: one ``N``, one ``C``, at least one spatial
    letter, no letter twice.

    >>> layout("NCHW")
    Layout(spec='NCHW', batch=0, channels=1, spatial=(2, 3))
    >>> layout("NHHC")
    Traceback (most recent call last):
    ...
    ValueError: spec must name each axis once, got 'NHHC' (H twice)
    """
    if not isinstance(spec, str) or not spec.isalpha():
        raise ValueError(
            f'{argument} must be a string of axis letters such as "NCHW", got {spec!r}'
        )
    spec = spec.upper()
    twice = sorted({a for a in spec if spec.count(a) > 1})
    if twice:
        raise ValueError(
            f"{argument} must name each axis once, got {spec!r} ({', '.join(twice)} twice)"
        )
    if "N" not in spec or "C" not in spec or len(spec) < 3:
        raise ValueError(
            f"{argument} must name the batch N, the channels C and at least one spatial axis, "
            f"got {spec!r}"
        )
    spatial = tuple(i for i, a in enumerate(spec) if a not in "NC")
    return Layout(spec, spec.index("N"), spec.index("C"), spatial)


def channels_last(rank: int) -> str:
    """The channels-last layout of ``rank`` spatial axes: ``NWC``, ``NHWC``, ``NDHWC``.

    >>> channels_last(1), channels_last(2), channels_last(3)
    ('NWC', 'NHWC', 'NDHWC')
    """
    if not checks.is_int(rank) or not 1 <= rank <= 3:
        raise ValueError(
            f"channels_last: expected 1, 2 or 3 spatial axes (NWC, NHWC, NDHWC), got {rank!r}; "
            "name the layout with spec"
        )
    return "N" + "DHW"[3 - rank :] + "C"


def _windows(x: Array, window, stride, padding, spec, who: str):
    """``(dims, strides, pads, layout)`` of ``lax.reduce_window`` for a pooling of ``x``."""
    if spec is None and not 3 <= jnp.ndim(x) <= 5:
        raise ValueError(
            f"{who}: expected channels-last inputs (NWC, NHWC, NDHWC) or a spec naming the "
            f"layout, got shape {jnp.shape(x)}"
        )
    axes = layout(spec or channels_last(jnp.ndim(x) - 2), f"{who}: spec")
    rank = len(axes.spatial)
    if jnp.ndim(x) != len(axes.spec):
        raise ValueError(f"{who}: expected {axes.spec} inputs, got shape {jnp.shape(x)}")
    size = checks.int_tuple(window, f"{who}: window", rank)
    steps = size if stride is None else checks.int_tuple(stride, f"{who}: stride", rank)
    pad = padding_pairs(padding, rank, f"{who}: padding")
    sides = (
        lax.padtype_to_pads([x.shape[a] for a in axes.spatial], size, steps, pad)
        if isinstance(pad, str)
        else pad
    )
    dims, strides, pads = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
    for a, f, s, p in zip(axes.spatial, size, steps, sides):
        dims[a], strides[a], pads[a] = f, s, tuple(p)
    return tuple(dims), tuple(strides), tuple(pads), axes


def _nhwc(spec, x) -> bool:
    named = isinstance(spec, str) and spec.upper() == "NHWC"
    return named or (spec is None and jnp.ndim(x) == 4)


def max_pool(
    x: Array,
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    spec: str | None = None,
) -> Array:
    """Max pooling over the spatial axes of any layout:
    ``y[n, i, c] = max_u x̂[n, s ⊙ i + u, c]``, ``x̂`` padded with ``−∞``.

    ``spec=None`` means channels last (``NWC``, ``NHWC``, ``NDHWC`` by the rank of ``x``);
    NHWC is :func:`funcnn.functional.max_pool`. Output size per axis
    ``⌊(N + lo + hi − F)/s⌋ + 1`` (``"SAME"``: ``⌈N/s⌉``).

    Args:
      x: inputs laid out as ``spec``.
      window: ``F`` or one per spatial axis (in the order of ``spec``).
      stride: ``s`` or one per spatial axis; ``None`` (default) means the window.
      padding: as :func:`funcnn.ops.padding_pairs`.
      spec: the layout, e.g. ``"NCHW"``; ``None`` for channels last.

    >>> import jax.numpy as jnp
    >>> max_pool(jnp.arange(16.0).reshape(1, 1, 4, 4), 2, spec="NCHW")[0, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    if _nhwc(spec, x):
        return F.max_pool(x, window, stride, planar(padding))
    dims, strides, pads, _ = _windows(x, window, stride, padding, spec, "max_pool")
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)


def sum_pool(
    x: Array,
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    spec: str | None = None,
) -> Array:
    """Sum pooling: ``y[n, i, c] = Σ_u x̂[n, s ⊙ i + u, c]``, ``x̂`` padded with zeros.

    Arguments as :func:`max_pool`.

    >>> import jax.numpy as jnp
    >>> sum_pool(jnp.arange(6.0).reshape(1, 6, 1), 3)[0, :, 0].tolist()  # NWC
    [3.0, 12.0]
    """
    dims, strides, pads, _ = _windows(x, window, stride, padding, spec, "sum_pool")
    return lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)


def avg_pool(
    x: Array,
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
    spec: str | None = None,
) -> Array:
    """Average pooling over each window's real (unpadded) elements:
    ``y[n, i, c] = Σ_{u ∈ W_i} x[n, u, c] / |W_i|``, as :func:`funcnn.functional.avg_pool`
    (PyTorch's ``count_include_pad=False``).

    Arguments as :func:`max_pool`.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(6.0).reshape(1, 1, 6)  # NCW; the padded window [·, 0, 1] averages 2
    >>> avg_pool(x, 3, 2, padding=1, spec="NCW")[0, 0].tolist()
    [0.5, 2.0, 4.0]
    """
    if _nhwc(spec, x):
        return F.avg_pool(x, window, stride, planar(padding))
    dims, strides, pads, axes = _windows(x, window, stride, padding, spec, "avg_pool")
    total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)
    ones = jnp.ones([x.shape[a] if a in axes.spatial else 1 for a in range(x.ndim)], x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, dims, strides, pads)
    return total / count
