"""PyTorch ``state_dict`` ↔ funcnn params, for networks of the same architecture.

Layers are matched by order: the ``Conv1d/2d/3d`` and ``Linear`` entries of the ``state_dict`` (a
``prefix.weight`` and its ``prefix.bias``, in the dict's order, which is the order of the
module's definition) against the Conv and Dense layers of the funcnn model, in the order its
``apply`` runs them (:func:`~funcnn.interop.layout.weight_layers`). Each weight changes layout
on the way (:func:`~funcnn.interop.layout.from_torch_layout`), dtypes are kept, and every count
and shape is checked, with both sides named in the error.

Reading and writing NumPy arrays needs no PyTorch: ``from_torch`` takes tensors or arrays and
``to_state_dict`` returns arrays; only ``to_torch`` imports ``torch`` to make tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ..core import Layer
from .layout import WeightLayer, from_torch_layout, to_torch_layout, weight_layers

__all__ = [
    "TorchLayer",
    "torch_layers",
    "from_torch",
    "to_state_dict",
    "to_torch",
    "require_torch",
]

_MODULES = {2: "Linear", 3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}  # weight rank -> module
_FUNCNN = {"Linear": "dense", "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv"}


class TorchLayer(NamedTuple):
    """A ``ConvNd`` or ``Linear`` layer of a ``state_dict``, as :func:`torch_layers` finds it.

    Fields: ``prefix`` (``"0"``, ``"features.3"``), ``module`` (``"Conv2d"``, ``"Linear"``, ...),
    ``weight`` and ``bias`` (their keys; ``bias`` is ``None`` without one) and ``w_shape``
    (the weight's shape in PyTorch's layout).
    """

    prefix: str
    module: str
    weight: str
    bias: str | None
    w_shape: tuple[int, ...]


def _shape(value: Any) -> tuple[int, ...]:
    """The shape of a tensor or an array (``torch.Size`` or tuple) as a tuple of ints."""
    return tuple(int(d) for d in (value.shape if hasattr(value, "shape") else np.shape(value)))


def torch_layers(state_dict: Mapping[str, Any], who: str = "torch_layers") -> list[TorchLayer]:
    """The convolution and ``Linear`` layers of a ``state_dict``, in its order.

    Entries are grouped by prefix: ``"3.weight"`` and ``"3.bias"`` are the layer ``"3"``. A
    weight of rank 2 is a ``Linear``, of rank 3, 4 or 5 a ``Conv1d``, ``Conv2d`` or ``Conv3d``;
    any other entry (a BatchNorm's
    ``running_mean``, a rank-1 ``weight``) is an error that names it.

    Args:
      state_dict: ``{name: tensor or array}``, e.g. ``module.state_dict()``.
      who: the name that starts the error messages.

    >>> sd = {"0.weight": np.zeros((6, 1, 5, 5)), "0.bias": np.zeros(6),
    ...       "3.weight": np.zeros((10, 24))}
    >>> [(t.prefix, t.module, t.bias, t.w_shape) for t in torch_layers(sd)]
    [('0', 'Conv2d', '0.bias', (6, 1, 5, 5)), ('3', 'Linear', None, (10, 24))]
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"{who}: state_dict must be a mapping of names to tensors, got "
            f"{type(state_dict).__name__}"
        )
    groups: dict[str, dict[str, str]] = {}
    for key in state_dict:
        prefix, _, leaf = str(key).rpartition(".")
        if leaf not in ("weight", "bias"):
            raise ValueError(
                f"{who}: state_dict entry {key!r} is neither a weight nor a bias; only "
                "convolution and Linear layers convert"
            )
        groups.setdefault(prefix, {})[leaf] = key
    layers = []
    for prefix, keys in groups.items():
        if "weight" not in keys:
            raise ValueError(f"{who}: state_dict entry {keys['bias']!r} has no weight beside it")
        shape = _shape(state_dict[keys["weight"]])
        if len(shape) not in _MODULES:
            raise ValueError(
                f"{who}: state_dict entry {keys['weight']!r} of shape {shape} is no Conv1d/2d/3d "
                "(rank 3 to 5) or Linear (rank 2) weight; only those layers convert"
            )
        layers.append(
            TorchLayer(prefix, _MODULES[len(shape)], keys["weight"], keys.get("bias"), shape)
        )
    return layers


def _pairs(
    theirs: list[TorchLayer], ours: list[WeightLayer], who: str
) -> list[tuple[TorchLayer, WeightLayer]]:
    """Both sides' layers side by side, checked for count, kind and bias."""
    if len(ours) != len(theirs):
        raise ValueError(
            f"{who}: the state_dict has {len(theirs)} convolution/Linear layers "
            f"({', '.join(t.prefix for t in theirs) or 'none'}) but the funcnn model has "
            f"{len(ours)} Conv/Dense layers ({', '.join(o.name for o in ours) or 'none'})"
        )
    for i, (t, o) in enumerate(zip(theirs, ours)):
        if _FUNCNN[t.module] != o.kind:
            raise ValueError(
                f"{who}: layer {i}: torch {t.prefix!r} is a {t.module} {t.w_shape} but funcnn "
                f"{o.name!r} is {o.description}, a {o.kind} layer"
            )
        if (t.bias is not None) != o.bias:
            has = "has a bias" if t.bias is not None else "has no bias"
            raise ValueError(
                f"{who}: layer {i}: torch {t.prefix!r} {has} but funcnn {o.name!r} "
                f"({o.description}) {'has' if o.bias else 'has no'} 'b'"
            )
    return list(zip(theirs, ours))


def _to_numpy(value: Any) -> np.ndarray:
    """A tensor or array as a NumPy array of the same dtype (bfloat16 too)."""
    if hasattr(value, "detach"):  # a torch.Tensor, read without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: go through its bits
            import torch  # the tensor came from torch, so it is there

            return value.view(torch.int16).numpy().view(jnp.bfloat16)
        return value.numpy()
    return np.asarray(value)


def _put(tree: dict, path: tuple[str, ...], leaf: dict) -> dict:
    if not path:
        return leaf
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = leaf
    return tree


def from_torch(state_dict: Mapping[str, Any], model: Layer, input_shape: Any) -> dict:
    """funcnn params from a PyTorch ``state_dict`` of the same architecture.

    Conv2d kernels go from OIHW to HWIO, ``K[h, w, i, o] = K_torch[o, i, h, w]`` (Conv1d and
    Conv3d likewise, the window's axes first); Linear
    weights are transposed, ``W = W_torchᵀ``, and the first one after a ``Flatten`` of
    ``(H, W, C)`` maps has its rows reordered from PyTorch's ``(C, H, W)`` flatten to
    funcnn's ``(H, W, C)`` (:func:`~funcnn.interop.layout.flatten_order`). Biases are
    copied. Layers are matched by order; dtypes are kept (``bfloat16`` too).

    Args:
      state_dict: ``module.state_dict()`` (tensors) or the same names with NumPy arrays.
      model: the funcnn model, e.g. ``funcnn.models.lenet5()``.
      input_shape: its input shape, e.g. ``(-1, 32, 32, 1)``.

    Returns:
      the params, as ``model.init`` would return them.

    >>> from funcnn.models import mlp
    >>> sd = {"0.weight": np.ones((16, 2)), "0.bias": np.zeros(16),
    ...       "2.weight": np.ones((3, 16)), "2.bias": np.zeros(3)}
    >>> params = from_torch(sd, mlp([16, 3]), (-1, 2))
    >>> params["hidden_0"]["w"].shape, params["output"]["w"].shape
    ((2, 16), (16, 3))
    """
    params: dict = {}
    ours = weight_layers(model, input_shape)
    for t, o in _pairs(torch_layers(state_dict, "from_torch"), ours, "from_torch"):
        if t.w_shape != o.torch_w_shape:
            raise ValueError(
                f"from_torch: torch {t.weight!r} has shape {t.w_shape} but funcnn {o.name!r} "
                f"({o.description}) needs {o.torch_w_shape} (its w {o.w_shape} in PyTorch's layout)"
            )
        w = from_torch_layout(o, _to_numpy(state_dict[t.weight]))
        leaf = {"w": jnp.asarray(w)}
        if t.bias is not None:
            b = _to_numpy(state_dict[t.bias])
            if b.shape != (o.w_shape[-1],):
                raise ValueError(
                    f"from_torch: torch {t.bias!r} has shape {b.shape}, funcnn {o.name!r} "
                    f"({o.description}) has b {(o.w_shape[-1],)}"
                )
            leaf["b"] = jnp.asarray(b)
        params = _put(params, o.path, leaf)
    return params


def _weights(params: Any, layer: WeightLayer) -> Mapping[str, Any]:
    """The ``{"w": ..., "b": ...}`` of one layer in ``params``, its shapes checked."""
    node = params
    for key in layer.path:
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"to_state_dict: the params have no {layer.name!r}")
        node = node[key]
    is_dict = isinstance(node, Mapping)
    w_shape = np.shape(node["w"]) if is_dict and "w" in node else None
    b_ok = is_dict and (not layer.bias or np.shape(node.get("b")) == layer.w_shape[-1:])
    if w_shape != layer.w_shape or not b_ok:
        got = {k: np.shape(v) for k, v in node.items()} if is_dict else node
        want = {"w": layer.w_shape, **({"b": layer.w_shape[-1:]} if layer.bias else {})}
        raise ValueError(
            f"to_state_dict: {layer.name!r} ({layer.description}) needs {want}, got {got}"
        )
    return node


def to_state_dict(
    params: Any, model: Layer, input_shape: Any, *, like: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` of NumPy arrays from funcnn params: the inverse of
    :func:`from_torch` (HWIO → OIHW, ``W_torch = Wᵀ`` in PyTorch's flatten order).

    Args:
      params: the model's params.
      model: the funcnn model.
      input_shape: its input shape.
      like: the PyTorch module's ``state_dict()``, whose names (and shapes, checked) the
        result takes; without it the names are funcnn's paths: ``"c1.weight"``, ``"c1.bias"``.

    Returns:
      ``{name: array}``; ``torch.from_numpy`` makes tensors of them (or use :func:`to_torch`).

    >>> import jax
    >>> from funcnn.models import lenet5
    >>> model = lenet5()
    >>> _, params = model.init(jax.random.key(0), (-1, 32, 32, 1))
    >>> sd = to_state_dict(params, model, (-1, 32, 32, 1))
    >>> list(sd)[:3], sd["c1.weight"].shape, sd["c5.weight"].shape
    (['c1.weight', 'c1.bias', 'c3.weight'], (6, 1, 5, 5), (120, 400))
    """
    ours = weight_layers(model, input_shape)
    if like is None:
        prefixes = [".".join(o.path) for o in ours]
        theirs = [
            TorchLayer(p, "", f"{p}.weight".lstrip("."), f"{p}.bias".lstrip("."), ())
            for p in prefixes
        ]
    else:
        theirs = [t for t, _ in _pairs(torch_layers(like, "to_state_dict"), ours, "to_state_dict")]
    out: dict[str, np.ndarray] = {}
    for o, t in zip(ours, theirs):
        leaf = _weights(params, o)
        w = to_torch_layout(o, np.asarray(leaf["w"]))
        if like is not None and w.shape != t.w_shape:
            raise ValueError(
                f"to_state_dict: funcnn {o.name!r} ({o.description}) gives {w.shape} for torch "
                f"{t.weight!r}, which has {t.w_shape}"
            )
        out[t.weight] = w
        if o.bias:
            assert t.bias is not None  # _pairs matched the biases; the default names have one
            out[t.bias] = np.ascontiguousarray(leaf["b"])
    return out


def to_torch(
    params: Any, model: Layer, input_shape: Any, *, like: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """:func:`to_state_dict` as ``torch.Tensor`` s, ready for ``module.load_state_dict``.

    Needs PyTorch (``pip install 'funcnn[torch]'``); dtypes are kept (``bfloat16`` too).

    >>> import jax
    >>> from funcnn.layers import Dense
    >>> _, params = Dense(3).init(jax.random.key(0), (-1, 2))
    >>> sd = to_torch(params, Dense(3), (-1, 2))  # doctest: +SKIP
    >>> sorted(sd), tuple(sd["weight"].shape)  # doctest: +SKIP
    (['bias', 'weight'], (3, 2))
    """
    torch = require_torch()
    return {
        name: _tensor(torch, a)
        for name, a in to_state_dict(params, model, input_shape, like=like).items()
    }


def _tensor(torch: Any, a: np.ndarray) -> Any:
    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(a))  # a writable copy: torch shares the memory


def require_torch() -> Any:
    """Import PyTorch, or say how to get it.

    Raises:
      ImportError: PyTorch is not installed, with the ``pip install`` to run.

    >>> torch = require_torch()  # doctest: +SKIP
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "funcnn.interop.to_torch needs PyTorch: pip install 'funcnn[torch]'"
        ) from err
    return torch
