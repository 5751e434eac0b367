"""Convolution of any spatial rank, channels last, and the transposed convolution.

``conv`` is ``lax.conv_general_dilated`` over ``(n, *spatial, C)`` inputs and
``(*F, C / groups, O)`` kernels; its 2-D case is :func:`funcnn.functional.conv2d` itself, so
the CPU kernels behind that function keep applying. ``conv_transpose`` is the convolution
``lax.conv_transpose`` computes, ``lax.conv_general_dilated`` over the input dilated by the
stride, with output sizes from :func:`conv_transpose_output_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import jax.numpy as jnp
from jax import Array, lax

from .. import checks
from .. import functional as F

__all__ = [
    "padding_pairs",
    "conv",
    "conv_transpose",
    "conv_transpose_padding",
    "conv_transpose_output_size",
]

Padding = str | int | Sequence[int] | Sequence[Sequence[int]]


def planar(padding: Padding) -> F.Padding:
    """``padding`` for the 2-D functions of :mod:`funcnn.functional`, which check it: a bare
    pair ``(lo, hi)``, a padding of one axis only, is refused there."""
    return cast(F.Padding, padding)


def _pairs(padding, rank: int) -> tuple | None:
    """``padding`` as ``rank`` pairs ``(lo, hi) >= 0``, or ``None`` if it is none."""
    if checks.is_int(padding):
        return ((int(padding), int(padding)),) * rank if padding >= 0 else None
    try:
        sides = tuple(padding)
        if rank == 1 and len(sides) == 2 and all(checks.is_int(v) for v in sides):
            sides = (sides,)  # one axis: (lo, hi) is its pair
        pairs = tuple(tuple(side) for side in sides)
    except TypeError:
        return None
    ok = len(pairs) == rank and all(
        len(s) == 2 and all(checks.is_int(v) and v >= 0 for v in s) for s in pairs
    )
    return tuple((int(lo), int(hi)) for lo, hi in pairs) if ok else None


def padding_pairs(padding: Padding, rank: int, argument: str = "padding") -> str | tuple:
    """A padding for ``rank`` spatial axes: ``"SAME"`` / ``"VALID"`` (upper-cased), an int
    ``p`` (``(p, p)`` on every axis) or one pair ``(lo, hi)`` per axis.

    The 2-D case is :func:`funcnn.functional.spatial_padding`; for one axis, a bare pair
    ``(lo, hi)`` is its pair.

    >>> padding_pairs(1, 3), padding_pairs((0, 2), 1), padding_pairs("same", 1)
    (((1, 1), (1, 1), (1, 1)), ((0, 2),), 'SAME')
    """
    if rank == 2:
        return F.spatial_padding(planar(padding), argument)
    if isinstance(padding, str):
        return F.spatial_padding(padding, argument)
    pairs = _pairs(padding, rank)
    if pairs is None:
        raise ValueError(
            f'{argument} must be "SAME", "VALID", an int p >= 0 or one pair (lo, hi) per '
            f"spatial axis ({rank} of them), got {padding!r}"
        )
    return pairs


def _dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    """Channels last: inputs and outputs ``(n, *spatial, C)``, kernels ``(*F, I, O)``."""
    spatial = tuple(range(1, rank + 1))
    lhs = (0, rank + 1, *spatial)
    return lax.ConvDimensionNumbers(lhs, (rank + 1, rank, *range(rank)), lhs)


def conv(
    x: Array,
    w: Array,
    b: Array | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Array:
    """Convolution over any number ``r`` of spatial axes, channels last, plus bias.

    ``y[n, i, o] = b[o] + Σ_{u, c} x̂[n, s ⊙ i + D ⊙ u, g·C_g + c] · w[u, c, o]``, with
    ``i`` and ``u`` multi-indices over the ``r`` spatial axes, ``x̂`` the zero-padded input,
    ``g = o // (O / groups)`` the group of output channel ``o`` and ``C_g = C / groups``.
    Each axis's output size is :func:`funcnn.functional.conv_output_size`'s
    ``⌊(N + lo + hi − D(F − 1) − 1)/s⌋ + 1`` (``"SAME"``: ``⌈N/s⌉``).

    This is ``lax.conv_general_dilated`` with inputs ``(n, *spatial, C)`` (NWC, NHWC,
    NDHWC) and kernels ``(*F, C / groups, O)`` (WIO, HWIO, DHWIO); for ``r = 2`` it is
    :func:`funcnn.functional.conv2d`.

    Args:
      x: inputs ``(n, *spatial, C)``.
      w: kernels ``(*F, C / groups, O)``, of rank ``r + 2``.
      b: bias ``(O,)`` or ``None``.
      stride: ``s`` or one per spatial axis.
      padding: as :func:`padding_pairs`.
      dilation: ``D`` or one per spatial axis.
      groups: split the channels into this many independent groups.

    >>> import jax.numpy as jnp
    >>> conv(jnp.ones((1, 8, 2)), jnp.ones((3, 2, 4)), padding=1).shape  # 1-D: NWC, WIO
    (1, 8, 4)
    >>> conv(jnp.ones((1, 5, 6, 7, 1)), jnp.ones((3, 3, 3, 1, 2)), stride=2).shape
    (1, 2, 2, 3, 2)
    """
    rank = jnp.ndim(w) - 2
    if rank == 2:
        return F.conv2d(x, w, b, stride, planar(padding), dilation, groups)
    if rank < 1 or jnp.ndim(x) != rank + 2:
        raise ValueError(
            f"conv: expected inputs of rank {rank + 2} for kernels of shape {jnp.shape(w)}, "
            f"got shape {jnp.shape(x)}"
        )
    checks.positive_int(groups, "conv: groups")
    y = lax.conv_general_dilated(
        x,
        w,
        window_strides=checks.int_tuple(stride, "conv: stride", rank),
        padding=padding_pairs(padding, rank, "conv: padding"),
        rhs_dilation=checks.int_tuple(dilation, "conv: dilation", rank),
        dimension_numbers=_dimension_numbers(rank),
        feature_group_count=groups,
    )
    return y if b is None else y + b


def conv_transpose_padding(
    f: int,
    padding: str | tuple[int, int],
    stride: int = 1,
    dilation: int = 1,
    output_padding: int = 0,
) -> tuple[int, int]:
    """The padding ``(a, b)`` of the dilated input that makes a transposed convolution.

    With ``k = D(F − 1) + 1`` the span of the kernel: explicit ``(lo, hi)`` (the padding of
    the convolution it transposes) gives ``(k − 1 − lo, k − 1 − hi + output_padding)``;
    ``"SAME"`` and ``"VALID"`` are ``lax.conv_transpose``'s: ``"VALID"`` gives
    ``(k − 1, s − 1 + max(k − s, 0))``; ``"SAME"`` gives ``a + b = k + s − 2`` with
    ``a = k − 1`` when ``s > k − 1``, else ``a = ⌈(k + s − 2)/2⌉``.

    >>> conv_transpose_padding(3, (1, 1), stride=2, output_padding=1)
    (1, 2)
    >>> conv_transpose_padding(3, "SAME", stride=2), conv_transpose_padding(3, "VALID", 2)
    ((2, 1), (2, 2))
    """
    k = dilation * (f - 1) + 1
    if padding == "VALID":
        return k - 1, stride - 1 + max(k - stride, 0)
    if padding == "SAME":
        total = k + stride - 2
        a = k - 1 if stride > k - 1 else -(-total // 2)
        return a, total - a
    if isinstance(padding, str):
        raise ValueError(
            'conv_transpose_padding: padding must be "SAME", "VALID" or a pair (lo, hi), '
            f"got {padding!r}"
        )
    lo, hi = padding
    return k - 1 - lo, k - 1 - hi + output_padding


def conv_transpose_output_size(
    n: int,
    f: int,
    padding: str | int | tuple[int, int] = 0,
    stride: int = 1,
    dilation: int = 1,
    output_padding: int = 0,
) -> int:
    """Output length of a transposed convolution along one axis.

    The convolution formula run backwards: with explicit padding ``p`` (or ``(lo, hi)``),
    ``Y = s(N − 1) + D(F − 1) + 1 − 2p + output_padding``, the ``N`` from which a
    convolution with that padding (:func:`funcnn.functional.conv_output_size`) returns
    ``N``; ``output_padding < max(s, D)`` picks one of the ``s`` sizes that it maps to
    the same ``N``. ``"SAME"`` and ``"VALID"`` are ``lax.conv_transpose``'s:
    ``Y = sN`` and ``Y = sN + max(D(F − 1) + 1 − s, 0)``.

    Args:
      n: the input length ``N``.
      f: the kernel length ``F``.
      padding: an int ``p``, a pair ``(lo, hi)``, ``"SAME"`` or ``"VALID"``.
      stride: ``s >= 1``.
      dilation: ``D >= 1``.
      output_padding: extra rows on the high side, ``0 <= output_padding < max(s, D)``;
        only with explicit padding.

    Raises:
      ValueError: a bad argument, or an empty output (``Y < 1``).

    >>> conv_transpose_output_size(14, 2, 0, 2)  # the inverse of a 2×2 pooling's size
    28
    >>> conv_transpose_output_size(7, 3, 1, 2, output_padding=1)  # 7 → 14
    14
    >>> conv_transpose_output_size(7, 3, "SAME", 2), conv_transpose_output_size(7, 3, "VALID", 2)
    (14, 15)
    """
    who = "conv_transpose_output_size"
    for value, name in ((n, "n"), (f, "f"), (stride, "stride"), (dilation, "dilation")):
        checks.positive_int(value, f"{who}: {name}")
    checks.positive_int(output_padding, f"{who}: output_padding", minimum=0)
    pad = padding_pairs(padding, 1, f"{who}: padding")
    if output_padding >= max(stride, dilation):
        raise ValueError(
            f"{who}: output_padding must be smaller than the stride or the dilation "
            f"(max({stride}, {dilation})), got {output_padding}"
        )
    if isinstance(pad, str) and output_padding:
        raise ValueError(f"{who}: output_padding needs explicit padding, got {padding!r}")
    side = pad if isinstance(pad, str) else pad[0]
    lo, hi = conv_transpose_padding(f, side, stride, dilation, output_padding)
    y = stride * (n - 1) + 1 + lo + hi - (dilation * (f - 1) + 1) + 1
    if y < 1:
        raise ValueError(
            f"{who}: the output would be empty: s(N − 1) + D(F − 1) + 1 − lo − hi + "
            f"output_padding = {y} for N = {n}, F = {f}, padding {padding!r}, s = {stride}, "
            f"D = {dilation}, output_padding = {output_padding}"
        )
    return y


def conv_transpose(
    x: Array,
    w: Array,
    b: Array | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
) -> Array:
    """Transposed convolution over any number ``r`` of spatial axes, channels last.

    Each input position ``j`` spreads its value over the output through the kernel:
    ``y[n, s ⊙ j + D ⊙ u − lo, o] += x[n, j, g·C_g + c] · w[u, c, o]`` summed over ``j``,
    ``u`` and ``c``, plus ``b[o]``, where ``lo`` is the low padding of the convolution it
    transposes (the positions that fall outside ``[0, Y)`` are dropped). It is the
    transpose (the vector-Jacobian product) of :func:`conv` with the kernel's channel axes
    swapped; PyTorch's ``conv_transpose1d/2d/3d``, for a kernel ``w_t[c, o, *u]`` of
    ``groups = 1``, is it with ``w[*u, c, o] = w_t[c, o, *u]``. Each axis's output size is
    :func:`conv_transpose_output_size`.

    This is ``lax.conv_general_dilated`` over ``x`` dilated by the stride
    (``lhs_dilation``), with the spatially flipped kernel and the padding of
    :func:`conv_transpose_padding`: what ``lax.conv_transpose`` computes, with groups.

    Args:
      x: inputs ``(n, *spatial, C)``.
      w: kernels ``(*F, C / groups, O)``.
      b: bias ``(O,)`` or ``None``.
      stride: ``s`` or one per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, an int ``p`` or one pair ``(lo, hi)`` per axis.
      dilation: ``D`` or one per spatial axis.
      output_padding: an int or one per axis, each ``< max(s, D)``; explicit padding only.
      groups: split the channels into this many independent groups.

    >>> import jax.numpy as jnp
    >>> y = conv_transpose(jnp.ones((1, 2, 1)), jnp.ones((3, 1, 1)), stride=2)  # 1-D
    >>> y[0, :, 0].tolist()  # the two kernels [1, 1, 1] overlap at the middle
    [1.0, 1.0, 2.0, 1.0, 1.0]
    >>> conv_transpose(jnp.ones((1, 7, 7, 3)), jnp.ones((3, 3, 3, 8)), None, 2, 1, 1, 1).shape
    (1, 14, 14, 8)
    """
    rank = jnp.ndim(w) - 2
    if rank < 1 or jnp.ndim(x) != rank + 2:
        raise ValueError(
            f"conv_transpose: expected inputs of rank {rank + 2} for kernels of shape "
            f"{jnp.shape(w)}, got shape {jnp.shape(x)}"
        )
    strides = checks.int_tuple(stride, "conv_transpose: stride", rank)
    dilations = checks.int_tuple(dilation, "conv_transpose: dilation", rank)
    extra = checks.int_tuple(output_padding, "conv_transpose: output_padding", rank, minimum=0)
    pad = padding_pairs(padding, rank, "conv_transpose: padding")
    sides = (pad,) * rank if isinstance(pad, str) else pad
    for n, f, side, s, d, e in zip(x.shape[1:-1], w.shape[:-2], sides, strides, dilations, extra):
        conv_transpose_output_size(n, f, side, s, d, e)  # checks each axis
    pads = [
        conv_transpose_padding(f, side, s, d, e)
        for f, side, s, d, e in zip(w.shape[:-2], sides, strides, dilations, extra)
    ]
    y = lax.conv_general_dilated(
        x,
        jnp.flip(w, tuple(range(rank))),
        window_strides=(1,) * rank,
        padding=pads,
        lhs_dilation=strides,
        rhs_dilation=dilations,
        dimension_numbers=_dimension_numbers(rank),
        feature_group_count=checks.positive_int(groups, "conv_transpose: groups"),
    )
    return y if b is None else y + b
