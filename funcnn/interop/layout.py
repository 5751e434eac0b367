"""Where a network's weights are, and how their layouts differ between funcnn and PyTorch.

funcnn stores images NHWC and kernels HWIO, ``(F_h, F_w, C_in, C_out)``, and a dense layer
computes ``y = x W + b`` with ``W`` of shape ``(in, out)``. PyTorch stores images NCHW,
kernels OIHW, ``(C_out, C_in, F_h, F_w)``, and ``Linear`` computes ``y = x Wᵀ + b`` with
``W`` of shape ``(out, in)``. So a kernel is a transpose away, a dense weight too, except for
the first dense layer after a ``Flatten`` of feature maps: PyTorch flattens a map in
``(C, H, W)`` order, funcnn in ``(H, W, C)`` order, and that layer's input rows come in a
different order (:func:`flatten_order`).

:func:`weight_layers` walks a model with shapes and lists its Conv and Dense layers in order,
each with the shape of the map flattened before it, if any.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np

from .. import checks
from ..core import Layer

__all__ = ["WeightLayer", "weight_layers", "flatten_order", "to_torch_layout", "from_torch_layout"]

_KINDS = ("conv", "dense")  # Conv, Conv1D, Conv3D and Dense
_BRANCHING = ("parallel", "residual")


class WeightLayer(NamedTuple):
    """A Conv or Dense layer of a model, as :func:`weight_layers` finds it.

    Fields: ``path`` (its params keys from the top, ``("c1",)``; ``()`` for a model that is
    one layer), ``kind`` (``"conv"`` or ``"dense"``), ``description`` (``"Conv(6, 5)"``),
    ``w_shape`` (its weight in funcnn's layout), ``bias`` (whether it has ``b``) and
    ``feature_shape``: for the first dense layer after a ``Flatten`` of feature maps, the
    map's shape without the batch, ``(H, W, C)``; ``None`` otherwise.
    """

    path: tuple[str, ...]
    kind: str
    description: str
    w_shape: tuple[int, ...]
    bias: bool
    feature_shape: tuple[int, ...] | None

    @property
    def name(self) -> str:
        """The params path as text, ``"c1"`` or ``"block/conv"`` (``"."`` for the top)."""
        return "/".join(self.path) or "."

    @property
    def torch_w_shape(self) -> tuple[int, ...]:
        """The weight's shape in PyTorch's layout: OIHW for a conv (``(O, I, *window)`` for any
        rank), ``(out, in)`` for a dense."""
        if self.kind == "conv":
            *window, i, o = self.w_shape
            return (o, i, *window)
        return tuple(reversed(self.w_shape))


def _init_shapes(layer: Layer, shape: Any) -> tuple[Any, Any, Any]:
    """``init_with_state`` under ``jax.eval_shape``: the output shape, params and state
    shapes, no weight drawn."""
    box = {}

    def init(key):
        box["shape"], params, state = layer.init_with_state(key, shape)
        return params, state

    params, state = jax.eval_shape(init, jax.random.key(0))
    return box["shape"], params, state


def _walk(layer: Layer, shape: Any, path: tuple, found: list, flat: list) -> Any:
    """Add ``layer``'s Conv and Dense layers to ``found``; return its output shape.

    ``flat[0]`` carries the map shape of the last ``Flatten`` until a dense layer takes it."""
    where = "/".join(path) or "the model"
    if layer.kind in _BRANCHING:
        raise ValueError(
            f"interop: {where} is a {layer.kind} ({layer.description}); weights convert for "
            "chains of layers (serial, named, the models built from them)"
        )
    if layer.children:
        for name, child in layer.children:
            shape = _walk(child, shape, (*path, name), found, flat)
        return shape
    out, params, state = _init_shapes(layer, shape)
    if layer.kind == "flatten":
        flat[0] = tuple(shape[1:]) if len(shape) > 2 else None
    elif layer.kind in _KINDS:
        feature = flat[0] if layer.kind == "dense" else None
        w = tuple(params["w"].shape)
        found.append(WeightLayer(path, layer.kind, layer.description, w, "b" in params, feature))
        flat[0] = None
    elif jax.tree_util.tree_leaves((params, state)):
        raise ValueError(
            f"interop: {where} ({layer.description}) has parameters or state, and only Conv "
            "and Dense layers convert"
        )
    return out


def _check_placed(model: Layer, shape: Any, found: list[WeightLayer]) -> None:
    """Every params leaf of the model belongs to one of the layers found."""
    _, params, _ = _init_shapes(model, shape)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    have = {tuple(str(getattr(k, "key", k)) for k in p) for p, _ in leaves}
    want = {(*f.path, "w") for f in found} | {(*f.path, "b") for f in found if f.bias}
    if have != want:
        names = sorted("/".join(p) for p in have ^ want)
        raise ValueError(f"interop: could not place the params {names} on Conv or Dense layers")


def weight_layers(model: Layer, input_shape: Any) -> list[WeightLayer]:
    """The model's Conv and Dense layers in the order its ``apply`` runs them.

    The model is walked through its ``children`` with shapes (under ``jax.eval_shape``, no
    weight drawn), so the first dense layer after a ``Flatten`` of ``(n, H, W, C)`` maps
    knows ``(H, W, C)``. Chains only: a ``parallel`` or ``residual`` is an error, and so is
    any other layer with params or state (BatchNorm, LayerNorm, ...).

    Args:
      model: a :class:`~funcnn.core.Layer` (a model from :mod:`funcnn.models`, a
        ``serial``, ...).
      input_shape: the shape of its input, e.g. ``(-1, 32, 32, 1)``; the batch may be ``-1``.

    Returns:
      a list of :class:`WeightLayer`.

    >>> from funcnn.models import lenet5
    >>> for layer in weight_layers(lenet5(), (-1, 32, 32, 1)):
    ...     print(layer.name, layer.kind, layer.w_shape, layer.feature_shape)
    c1 conv (5, 5, 1, 6) None
    c3 conv (5, 5, 6, 16) None
    c5 dense (400, 120) (5, 5, 16)
    f6 dense (120, 84) None
    output dense (84, 10) None
    """
    if not isinstance(model, Layer):
        raise TypeError(f"interop: model must be a funcnn Layer, got {model!r}")
    shape = checks.input_shape(input_shape, "interop: input_shape")
    found: list[WeightLayer] = []
    _walk(model, shape, (), found, [None])
    _check_placed(model, shape, found)
    return found


def flatten_order(feature_shape: tuple[int, ...]) -> np.ndarray:
    """The permutation between PyTorch's and funcnn's flattening of one feature map.

    A map of shape ``(H, W, C)`` (channels last) is flattened by funcnn in ``(h, w, c)``
    order, row ``i = (h W + w) C + c``, and by PyTorch (whose map is ``(C, H, W)``) in
    ``(c, h, w)`` order, column ``j = (c H + h) W + w``. ``order[i] = j`` for the same
    ``(h, w, c)``, so ``x_funcnn = x_torch[order]`` and a dense weight's rows follow:
    ``W_funcnn = W_torchᵀ[order]``. Any rank: ``(D_1, ..., D_k, C)`` against
    ``(C, D_1, ..., D_k)``.

    Args:
      feature_shape: the map's shape without the batch, channels last.

    >>> flatten_order((2, 2, 3)).tolist()  # h, w = 0, 0 takes columns 0, 4, 8
    [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    """
    shape = tuple(checks.positive_int(d, "flatten_order: every size") for d in feature_shape)
    if not shape:
        raise ValueError("flatten_order: feature_shape needs at least one axis")
    channels_first = (shape[-1], *shape[:-1])
    order = np.arange(math.prod(shape)).reshape(channels_first)
    return np.moveaxis(order, 0, -1).reshape(-1)


def to_torch_layout(layer: WeightLayer, w: np.ndarray) -> np.ndarray:
    """A weight in funcnn's layout made PyTorch's: HWIO → OIHW (any rank: the window's axes
    after O and I), ``(in, out)`` → ``(out, in)`` (rows in PyTorch's flatten order after a
    ``Flatten``). The inverse of :func:`from_torch_layout`.

    >>> conv = WeightLayer(("c1",), "conv", "Conv(6, 5)", (5, 5, 1, 6), True, None)
    >>> to_torch_layout(conv, np.zeros((5, 5, 1, 6))).shape
    (6, 1, 5, 5)
    """
    w = np.asarray(w)
    if layer.kind == "conv":  # (*window, I, O) -> (O, I, *window)
        return np.ascontiguousarray(w.transpose(w.ndim - 1, w.ndim - 2, *range(w.ndim - 2)))
    if layer.feature_shape is not None:
        w = w[np.argsort(flatten_order(layer.feature_shape))]
    return np.ascontiguousarray(w.T)


def from_torch_layout(layer: WeightLayer, w: np.ndarray) -> np.ndarray:
    """A PyTorch weight in funcnn's layout: OIHW → HWIO (``Conv1d``'s OIL → LIO, ``Conv3d``'s
    OIDHW → DHWIO), ``(out, in)`` → ``(in, out)``, and after a ``Flatten`` of ``(H, W, C)``
    maps the rows reordered by :func:`flatten_order`.

    >>> dense = WeightLayer(("c5",), "dense", "Dense(2)", (4, 2), True, (1, 2, 2))
    >>> w_torch = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])  # columns (c, h, w)
    >>> from_torch_layout(dense, w_torch).tolist()  # rows (h, w, c)
    [[0, 4], [2, 6], [1, 5], [3, 7]]
    """
    w = np.asarray(w)
    if layer.kind == "conv":  # (O, I, *window) -> (*window, I, O)
        return np.ascontiguousarray(w.transpose(*range(2, w.ndim), 1, 0))
    w = w.T
    if layer.feature_shape is not None:
        w = w[flatten_order(layer.feature_shape)]
    return np.ascontiguousarray(w)
