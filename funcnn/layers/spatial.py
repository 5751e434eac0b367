"""What the convolution and pooling layers share: their descriptions, their layouts in error
messages, the output size of each spatial axis, and the checks ``apply`` makes of its input
at trace time (shapes are static under ``jax.jit``, so they cost nothing)."""

from __future__ import annotations

from collections.abc import Callable

from .. import checks
from ..ops import Layout
from . import params

AXIS_NAMES = {"N": "batch", "C": "channels", "D": "depth", "H": "height", "W": "width"}
KINDS = {1: "sequences", 2: "images", 3: "volumes"}


def describe(kind: str, args: list, options: dict, defaults: dict) -> str:
    """``Conv(6, 5, stride=2)``: the arguments, then the options that differ from their
    defaults; NumPy integers read as the ints they are."""

    def show(v):
        return repr(int(v)) if checks.is_int(v) else repr(v)

    parts = [show(a) for a in args]
    parts += [f"{k}={show(v)}" for k, v in options.items() if v != defaults.get(k)]
    return f"{kind}({', '.join(parts)})"


def axis_name(axes: Layout, axis: int) -> str:
    return AXIS_NAMES.get(axes.spec[axis], f"axis {axes.spec[axis]}")


def expected_inputs(axes: Layout) -> str:
    """``NHWC images of rank 4 (batch, height, width, channels)``."""
    names = ", ".join(axis_name(axes, a) for a in range(len(axes.spec)))
    kind = KINDS.get(len(axes.spatial), "inputs")
    return f"{axes.spec} {kind} of rank {len(axes.spec)} ({names})"


def input_shape(shape, axes: Layout, who: str, channels_known: bool = False) -> tuple:
    """The shape given to ``init``, of the layout's rank; with ``channels_known`` the
    channel count must not be ``-1``."""
    if isinstance(shape, (tuple, list)) and len(shape) != len(axes.spec):
        raise ValueError(f"{who}: expected {expected_inputs(axes)}, got shape {tuple(shape)}")
    shape = checks.input_shape(shape, who, rank=len(axes.spec))
    if channels_known and shape[axes.channels] == -1:
        raise ValueError(f"{who}: the number of input channels must be known, got {shape}")
    return shape


def check_input(x, axes: Layout, who: str, channels: int | None = None) -> tuple:
    """The shape of ``x`` at ``apply``: one array (not a tuple of branches), of the layout's
    rank, with ``channels`` channels."""
    shape = tuple(params.check_input(x, who))
    if len(shape) != len(axes.spec):
        raise ValueError(f"{who}: expected {expected_inputs(axes)}, got shape {shape}")
    if channels is not None and shape[axes.channels] != channels:
        raise ValueError(f"{who}: expected {channels} input channels, got shape {shape}")
    return shape


def spatial_out(shape: tuple, axes: Layout, sizes: Callable[[int, int], int], who: str) -> tuple:
    """The output shape: ``sizes(i, n)`` for the ``i``-th spatial axis of length ``n``
    (unknown, ``-1``, stays unknown); the other axes are kept. An error of ``sizes`` is
    raised again with the layer's name, the input shape and the axis."""
    out = list(shape)
    for i, a in enumerate(axes.spatial):
        if shape[a] == -1:
            continue
        try:
            out[a] = sizes(i, shape[a])
        except ValueError as err:
            detail = str(err).split(": ", 1)[-1]
            where = f"along the {axis_name(axes, a)}"
            raise ValueError(f"{who}: on input {tuple(shape)}, {where}, {detail}") from None
    return tuple(out)
