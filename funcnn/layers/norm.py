"""Normalization layers: BatchNorm, which keeps running statistics as state, and the
stateless LayerNorm and GroupNorm.

All three compute ``y = γ (x − μ) / √(σ² + ε) + β`` and differ in the values ``μ`` and
``σ²`` are taken over: the batch (and the spatial positions) per feature, the features of
each example, or groups of channels of each example. Each ``apply`` refuses params (and
BatchNorm a state) other than the ones ``init`` made, by name
(:func:`funcnn.layers.params.check_params`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .. import checks
from .. import functional as F
from ..checks import input_shape as check_input_shape
from ..core import Layer
from ..core.layer import stateful_layer
from .params import check_input, check_params

__all__ = ["BatchNorm", "LayerNorm", "GroupNorm"]


def _affine_params(shape: tuple[int, ...], use_scale: bool, use_offset: bool, dtype) -> dict:
    params = {}
    if use_scale:
        params["scale"] = jnp.ones(shape, dtype)
    if use_offset:
        params["offset"] = jnp.zeros(shape, dtype)
    return params


def BatchNorm(
    axis: int = -1,
    *,
    momentum: float = 0.1,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_offset: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """Batch normalization (Ioffe & Szegedy, 2015) over feature ``axis`` (NHWC: channels).

    Training (``train=True``), per feature ``c``, over the ``m`` values of the batch (and of
    every spatial position):
    ``μ_B = (1/m) Σ x``, ``σ²_B = (1/m) Σ (x − μ_B)²``,
    ``y = γ (x − μ_B) / √(σ²_B + ε) + β``, and the running statistics move toward the
    batch's, PyTorch's convention (``momentum`` is the new value's weight, unbiased
    variance for the estimate):
    ``μ ← (1 − momentum) μ + momentum μ_B``,
    ``σ² ← (1 − momentum) σ² + momentum · m/(m − 1) · σ²_B``.

    Evaluation (``train=False``): ``y = γ (x − μ) / √(σ² + ε) + β`` with the running
    statistics, which stay as they are.

    Params ``{"scale": γ (C,), "offset": β (C,)}`` (either optional); state
    ``{"mean": μ (C,), "var": σ² (C,)}``, starting at 0 and 1. A stateful layer: use
    ``init_with_state`` / ``apply_with_state``. Under ``fit(..., mesh=...)`` the batch
    statistics are those of the whole global batch.

    Args:
      axis: the feature axis (``-1``: channels of NHWC images, features of ``(n, d)``).
      momentum: the weight of the batch statistics in the running ones, in ``[0, 1]``.
      epsilon: ``ε``, added to the variance.
      use_scale: learn ``γ`` (else 1).
      use_offset: learn ``β`` (else 0).

    >>> import jax, jax.numpy as jnp
    >>> bn = BatchNorm()
    >>> shape, params, state = bn.init_with_state(jax.random.key(0), (-1, 2))
    >>> x = jnp.array([[1.0, 10.0], [3.0, 30.0]])
    >>> y, state = bn.apply_with_state(params, state, x, train=True)
    >>> y.round(3).tolist()  # (x − μ_B)/σ_B, μ_B = (2, 20), σ²_B = (1, 100)
    [[-1.0, -1.0], [1.0, 1.0]]
    >>> [[round(v, 4) for v in state[k].tolist()] for k in ("mean", "var")]  # m = 2
    [[0.2, 2.0], [1.1, 20.9]]
    """
    axis = int(axis) if checks.is_int(axis) else axis
    if not checks.is_int(axis):
        raise TypeError(f"BatchNorm: axis must be an int, got {axis!r}")
    checks.number(momentum, "BatchNorm: momentum", low=0, high=1)
    checks.number(epsilon, "BatchNorm: epsilon", low=0)
    who = f"BatchNorm(axis={axis})" if axis != -1 else "BatchNorm()"

    def init(key, input_shape):
        shape = check_input_shape(input_shape, who, min_rank=2)
        ax = _feature_axis(shape, axis, who)
        c = shape[ax]
        if c == -1:
            raise ValueError(f"{who}: the number of features (axis {axis}) must be known")
        state = {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}
        return shape, _affine_params((c,), use_scale, use_offset, dtype), state

    def apply(params, state, x, *, key=None, train=False):
        ax = _feature_axis(check_input(x, who), axis, who)
        c = jnp.shape(x)[ax]
        check_params(params, _affine_shapes(use_scale, use_offset, (c,)), who)
        check_params(state, {"mean": (c,), "var": (c,)}, who, what="state")
        if not train:
            y = F.batch_norm(x, state["mean"], state["var"], *_affine(params), ax, epsilon)
            return y, state
        m = math.prod(d for i, d in enumerate(jnp.shape(x)) if i != ax)
        if m < 2:
            raise ValueError(
                f"{who}: training mode estimates each feature's variance from the batch, "
                f"which needs at least 2 values per feature; got shape {jnp.shape(x)} "
                "(1 value per feature). Use a larger batch, or train=False"
            )
        mean, var = F.moments(x, ax)
        y = F.batch_norm(x, mean, var, *_affine(params), ax, epsilon)
        new = {
            "mean": (1 - momentum) * state["mean"] + momentum * mean,
            "var": (1 - momentum) * state["var"] + momentum * var * (m / (m - 1)),
        }
        new = jax.tree_util.tree_map(
            lambda v, old: jax.lax.stop_gradient(v).astype(old.dtype), new, state
        )
        return y, new

    return stateful_layer(init, apply, kind="batch_norm", description=who)


def _feature_axis(shape: tuple, axis: int, who: str) -> int:
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"{who}: axis {axis} is out of range for inputs of shape {shape}")
    ax = axis % len(shape)
    if ax == 0:
        raise ValueError(f"{who}: the feature axis cannot be the batch axis 0")
    return ax


def _trailing_axes(axes: Any) -> tuple[int, ...]:
    """``LayerNorm``'s ``axes``, checked (any value may come in), as sorted ints."""
    given = (axes,) if checks.is_int(axes) else tuple(axes)
    if not given or not all(checks.is_int(a) and a < 0 for a in given):
        raise ValueError(f"LayerNorm: axes must be negative ints (trailing axes), got {axes!r}")
    spec = tuple(sorted(int(a) for a in given))
    if spec != tuple(range(-len(spec), 0)):
        raise ValueError(f"LayerNorm: axes must be the last axes, e.g. (-2, -1), got {axes!r}")
    return spec


def _affine_shapes(use_scale: bool, use_offset: bool, shape: tuple[int, ...]) -> dict:
    """The params' expected shapes: ``scale`` and ``offset`` where learned."""
    return {n: shape for n, on in (("scale", use_scale), ("offset", use_offset)) if on}


def _affine(params: dict) -> tuple:
    return params.get("scale"), params.get("offset")


def LayerNorm(
    axes: int | tuple[int, ...] = -1,
    *,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_offset: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """Layer normalization (Ba et al., 2016) of each example over its last ``axes``.

    ``μ = mean(x)``, ``σ² = mean((x − μ)²)`` over ``axes``, then
    ``y = γ ⊙ (x − μ) / √(σ² + ε) + β`` with ``γ``, ``β`` of the shape of those axes
    (PyTorch's ``LayerNorm(normalized_shape)``). Stateless; the same in training and
    evaluation.

    Args:
      axes: the trailing axes normalized over: ``-1`` (the features), or e.g. ``(-3, -2, -1)``
        for a whole image.
      epsilon: ``ε``, added to the variance.
      use_scale: learn ``γ`` (else 1).
      use_offset: learn ``β`` (else 0).

    >>> import jax, jax.numpy as jnp
    >>> shape, params = LayerNorm().init(jax.random.key(0), (-1, 3))
    >>> y = LayerNorm().apply(params, jnp.array([[1.0, 2.0, 3.0]]))  # σ² = 2/3
    >>> [round(v, 4) for v in y[0].tolist()]
    [-1.2247, 0.0, 1.2247]
    """
    spec = _trailing_axes(axes)
    checks.number(epsilon, "LayerNorm: epsilon", low=0)
    who = "LayerNorm()" if spec == (-1,) else f"LayerNorm({spec})"

    def init(key, input_shape):
        shape = check_input_shape(input_shape, who, min_rank=len(spec) + 1)
        normalized = shape[len(shape) - len(spec) :]
        if -1 in normalized:
            raise ValueError(f"{who}: the normalized axes must be known, got {shape}")
        return shape, _affine_params(normalized, use_scale, use_offset, dtype)

    def apply(params, x, *, key=None, train=False):
        if len(check_input(x, who)) <= len(spec):
            raise ValueError(f"{who}: expected a batch of rank > {len(spec)}, got {jnp.shape(x)}")
        normalized = jnp.shape(x)[jnp.ndim(x) - len(spec) :]
        check_params(params, _affine_shapes(use_scale, use_offset, normalized), who)
        return F.layer_norm(x, *_affine(params), len(spec), epsilon)

    return Layer(init, apply, kind="layer_norm", description=who)


def GroupNorm(
    groups: int,
    *,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_offset: bool = True,
    dtype=jnp.float32,
) -> Layer:
    """Group normalization (Wu & He, 2018) over channels-last inputs (NHWC, or ``(n, C)``).

    The ``C`` channels split into ``groups`` groups of ``C/groups``; for each example and
    group, ``μ`` and ``σ²`` are taken over the group's channels at every spatial position,
    then ``y = γ_c (x − μ) / √(σ² + ε) + β_c`` with ``γ``, ``β`` per channel ``(C,)``. Stateless.
    ``groups = 1`` normalizes each example over all its values; ``groups = C`` is instance
    normalization.

    Args:
      groups: the number of groups; ``C`` must divide by it.
      epsilon: ``ε``, added to the variance.
      use_scale: learn ``γ`` (else 1).
      use_offset: learn ``β`` (else 0).

    >>> import jax, jax.numpy as jnp
    >>> gn = GroupNorm(2)
    >>> _, params = gn.init(jax.random.key(0), (-1, 4))
    >>> gn.apply(params, jnp.array([[1.0, 3.0, 10.0, 30.0]])).round(3).tolist()
    [[-1.0, 1.0, -1.0, 1.0]]
    """
    groups = checks.positive_int(groups, "GroupNorm: groups")
    checks.number(epsilon, "GroupNorm: epsilon", low=0)
    who = f"GroupNorm({groups})"

    def init(key, input_shape):
        shape = check_input_shape(input_shape, who, min_rank=2)
        c = shape[-1]
        if c == -1 or c % groups:
            raise ValueError(
                f"{who}: the channels (last axis) must be known and divide by {groups}, "
                f"got shape {shape}"
            )
        return shape, _affine_params((c,), use_scale, use_offset, dtype)

    def apply(params, x, *, key=None, train=False):
        if len(check_input(x, who)) < 2 or jnp.shape(x)[-1] % groups:
            raise ValueError(
                f"{who}: expected channels-last inputs whose channels divide by {groups}, "
                f"got shape {jnp.shape(x)}"
            )
        c = jnp.shape(x)[-1]
        check_params(params, _affine_shapes(use_scale, use_offset, (c,)), who)
        return F.group_norm(x, groups, *_affine(params), epsilon)

    return Layer(init, apply, kind="group_norm", description=who)
