"""Looking inside a network: its layer table, parameter counts, intermediate outputs and
per-layer gradient norms.

``summary(model, input_shape)`` prints what torchinfo's ``summary`` or Flax's ``tabulate``
print: every layer's name, output shape and number of parameters, and the total. Shapes
come from each layer's ``init`` run under ``jax.eval_shape``, so no weight is allocated:
AlexNet's summary costs nothing, although its weights would take 238 MiB.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from .compiler import jit as _jit
from .core import Layer, Params, Shape

__all__ = [
    "param_count",
    "Row",
    "Summary",
    "summary",
    "intermediates",
    "feature_maps",
    "grad_norms",
    "layer_paths",
]


def param_count(params: Params) -> int:
    """The number of parameters: ``Σ_leaves Π shape(leaf)``.

    Works on arrays and on the ``jax.ShapeDtypeStruct`` leaves of ``jax.eval_shape``.

    Args:
      params: any pytree of arrays (e.g. the nested dict from ``init``).

    >>> import jax.numpy as jnp
    >>> param_count({"w": jnp.zeros((1024, 1024)), "b": jnp.zeros(1024)})
    1049600
    """
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params))


def _param_bytes(params: Params) -> int:
    return sum(
        math.prod(np.shape(leaf)) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree_util.tree_leaves(params)
    )


class Row(NamedTuple):
    """One line of a :class:`Summary`: a layer's path, description, output shape, params.

    Fields: ``path`` (e.g. ``"hidden_0"`` or ``"residual_0/dense_0"``), ``layer`` (its
    description, ``"Dense(16)"``), ``output_shape``, ``params`` (its parameter count,
    children included) and ``depth`` (how deeply it is nested, 0 at the top).
    """

    path: str
    layer: str
    output_shape: Shape
    params: int
    depth: int


def _fmt_shape(shape: Shape) -> str:
    if shape and all(isinstance(s, (tuple, list)) for s in shape):
        return "(" + ", ".join(_fmt_shape(s) for s in shape) + ")"
    return "(" + ", ".join("N" if d == -1 else str(d) for d in shape) + ")"


class Summary(NamedTuple):
    """What :func:`summary` returns; ``str(summary)`` is the printed table.

    ``rows`` lists every layer depth-first (a combinator's row counts all its children's
    parameters); ``total`` is the model's trainable parameter count and ``bytes`` their
    storage. ``title`` heads the table; ``input_shape`` and ``output_shape`` are the
    model's. ``state`` counts the values of the model's state apart (BatchNorm's running
    statistics: not trained, not in ``total``).

    >>> from funcnn.layers import Dense
    >>> s = summary(Dense(3), (-1, 2))
    >>> s.rows[0], s.total, s.bytes, s.state
    (Row(path='dense', layer='Dense(3)', output_shape=(-1, 3), params=9, depth=0), 9, 36, 0)
    """

    title: str
    input_shape: Shape
    output_shape: Shape
    rows: list[Row]
    total: int
    bytes: int
    state: int = 0

    def __str__(self) -> str:
        head = ("Layer", "Type", "Output shape", "Param #")
        body = [
            ("  " * r.depth + r.path, r.layer, _fmt_shape(r.output_shape), f"{r.params:,}")
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in [head, *body]) for i in range(3)]
        widths[1] = min(widths[1], 48)

        def line(cells):
            layer, kind, shape, count = cells
            kind = kind if len(kind) <= widths[1] else kind[: widths[1] - 1] + "…"
            return f"{layer:<{widths[0]}}  {kind:<{widths[1]}}  {shape:<{widths[2]}}  {count:>12}"

        rule = "=" * len(line(head))
        title = self.title if len(self.title) <= 100 else self.title[:99] + "…"
        return "\n".join(
            [
                title,
                rule,
                line(head),
                "-" * len(rule),
                f"{'input':<{widths[0]}}  {'':<{widths[1]}}  {_fmt_shape(self.input_shape)}",
                *(line(cells) for cells in body),
                rule,
                f"Total params: {self.total:,}",
                f"Params size: {self.bytes / 2**20:.2f} MiB",
                *([f"State (not trained): {self.state:,}"] if self.state else []),
            ]
        )


def _init_shapes(layer: Layer, input_shape: Shape) -> tuple[Shape, Any, Any]:
    """``init_with_state`` under ``jax.eval_shape``: the output shape and the shapes of
    the params and of the state."""
    box = {}

    def init(key):
        shape, params, state = layer.init_with_state(key, input_shape)
        box["shape"] = shape
        return params, state

    params, state = jax.eval_shape(init, jax.random.key(0))
    return box["shape"], params, state


def _walk(layer: Layer, input_shape: Shape, path: str, depth: int, rows: list[Row]) -> Shape:
    shape, params, _ = _init_shapes(layer, input_shape)
    rows.append(Row(path, layer.description, shape, param_count(params), depth))
    _walk_children(layer, input_shape, path, depth + 1, rows)
    return shape


def _walk_children(layer: Layer, input_shape: Shape, path: str, depth: int, rows) -> None:
    """Children of ``parallel`` take one input each; any other combinator chains them."""
    shape = input_shape
    for i, (name, child) in enumerate(layer.children):
        sub = f"{path}/{name}" if path else name
        if layer.kind == "parallel":
            _walk(child, input_shape[i], sub, depth, rows)
        else:
            shape = _walk(child, shape, sub, depth, rows)


def summary(model: Layer, input_shape: Shape) -> Summary:
    """A table of every layer's name, output shape and parameter count, and the total.

    The total is ``param_count`` of the model's params, ``Σ_layers Σ_leaves Π shape``; a
    model's state (BatchNorm's statistics) is counted apart, in ``Summary.state``.
    Combinators (``serial``, ``parallel``, ``residual`` and models built from them) are
    walked through their ``children``; each child's row comes from its own ``init`` at
    the shape its predecessor returns, all under ``jax.eval_shape`` (no weights drawn).

    Args:
      model: any :class:`~funcnn.core.Layer`.
      input_shape: e.g. ``(-1, 227, 227, 3)``; the batch may be ``-1``.

    Returns:
      a :class:`Summary`; ``print(summary(model, shape))`` prints the table.

    >>> from funcnn.layers import Conv, Dense, Flatten
    >>> from funcnn.core import serial
    >>> s = summary(serial(Conv(6, 5), Flatten(), Dense(10)), (-1, 32, 32, 1))
    >>> [r.output_shape for r in s.rows], s.total
    ([(-1, 28, 28, 6), (-1, 4704), (-1, 10)], 47206)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"summary: model must be a Layer, got {model!r}")
    shape, params, state = _init_shapes(model, input_shape)
    rows: list[Row] = []
    if model.children:
        _walk_children(model, input_shape, "", 0, rows)
    else:
        rows.append(Row(model.kind, model.description, shape, param_count(params), 0))
    title = f"{model.description} on input {_fmt_shape(input_shape)}"
    total, size = param_count(params), _param_bytes(params)
    return Summary(title, input_shape, shape, rows, total, size, param_count(state))


def _chains(layer: Layer) -> bool:
    return bool(layer.children) and layer.kind not in ("parallel", "residual")


def intermediates(
    model: Layer, params: Params, x: jax.Array, state: Any = None
) -> list[tuple[str, Layer, Any]]:
    """Every layer's output for input ``x``, in evaluation mode (``train=False``).

    Walks a chain of layers (a ``serial`` and the models built from it, nested ones
    included) and returns ``[(path, layer, y), ...]`` where ``y`` is that layer's output;
    the last ``y`` equals ``model.apply(params, x)`` (``model.apply_with_state(params,
    state, x)[0]`` for a model with ``state``). Other combinators count as one layer.

    >>> import jax, jax.numpy as jnp
    >>> from funcnn.layers import Conv, Relu
    >>> from funcnn.core import serial
    >>> model = serial(Conv(2, 3), Relu())
    >>> _, params = model.init(jax.random.key(0), (-1, 5, 5, 1))
    >>> [(p, y.shape) for p, _, y in intermediates(model, params, jnp.ones((1, 5, 5, 1)))]
    [('conv_0', (1, 3, 3, 2)), ('relu_0', (1, 3, 3, 2))]
    """
    if not _chains(model):
        raise ValueError(
            f"intermediates: expected a serial chain of layers, got {model.description}"
        )
    out: list[tuple[str, Layer, Any]] = []

    def run(layer, p, st, x, path):
        for name, child in layer.children:
            sub = f"{path}/{name}" if path else name
            child_params, child_state = p.get(name, {}), st.get(name, {})
            if _chains(child):
                x = run(child, child_params, child_state, x, sub)
            else:
                x = child.apply_with_state(child_params, child_state, x)[0]
            out.append((sub, child, x))
        return x

    run(model, params, state or {}, x, "")
    return out


def feature_maps(
    model: Layer, params: Params, x: jax.Array, kinds: tuple[str, ...] = ("conv",)
) -> list[tuple[str, Any]]:
    """The feature maps of ``x`` after each layer of the given kinds (convolutions).

    Returns ``[(path, maps), ...]`` with ``maps`` the layer's NHWC output for ``x``.

    Args:
      model: a serial chain of layers (see :func:`intermediates`).
      params: its params.
      x: input images ``(n, H, W, C)``.
      kinds: which layer kinds to keep.

    >>> import jax, jax.numpy as jnp
    >>> from funcnn.core import serial
    >>> from funcnn.layers import Conv, Relu
    >>> model = serial(Conv(2, 3), Relu(), Conv(4, 3))
    >>> _, params = model.init(jax.random.key(0), (-1, 5, 5, 1))
    >>> [(path, y.shape) for path, y in feature_maps(model, params, jnp.ones((1, 5, 5, 1)))]
    [('conv_0', (1, 3, 3, 2)), ('conv_1', (1, 1, 1, 4))]
    """
    return [(path, y) for path, layer, y in intermediates(model, params, x) if layer.kind in kinds]


# ----------------------------------------------------------------- gradient norms


def layer_paths(params: Any, prefix: str = "") -> list[str]:
    """The paths of the layers in ``params``, in the order the layers were created.

    A layer is a dict whose values are arrays (``{"w", "b"}``); combinators nest them by
    name, giving paths such as ``"hidden_0"`` or ``"residual_3/dense_0"``. The order is
    that of ``init`` (dict insertion), not alphabetical: ``dense_2`` before ``dense_10``.

    >>> import jax.numpy as jnp
    >>> layer_paths({"dense_0": {"w": jnp.ones(2)}, "block": {"dense_0": {"w": jnp.ones(1)}}})
    ['dense_0', 'block/dense_0']
    """
    if not isinstance(params, dict):
        return [prefix or "<root>"]
    paths, own = [], False
    for key, value in params.items():
        if isinstance(value, dict):
            paths += layer_paths(value, f"{prefix}/{key}" if prefix else str(key))
        else:
            own = True
    return ([prefix or "<root>"] if own else []) + paths


def _lookup(tree: Any, path: str) -> Any:
    if path == "<root>":
        return {k: v for k, v in tree.items() if not isinstance(v, dict)}
    for key in path.split("/"):
        tree = tree[key]
    return {k: v for k, v in tree.items() if not isinstance(v, dict)}


def grad_norms(
    loss: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    *,
    plot: str | None = None,
    jit: bool = True,
) -> dict[str, float]:
    """The gradient norm of each layer: ``‖∂L/∂θ_l‖ = √(Σ over the layer's weights and biases
    of (∂L/∂θ)²)``.

    In a deep network of sigmoids these shrink layer by layer towards the input (vanishing
    gradients); residual connections keep them level.

    Args:
      loss: ``loss(params, batch) -> scalar``, e.g.
        ``lambda p, b: model.loss(model.apply(p, b[0]), b[1])``.
      params: a model's params.
      batch: what ``loss`` takes besides params, e.g. ``(x, y)``.
      plot: a path to save a bar chart of the norms to (needs matplotlib).
      jit: compile the gradient (turn off for a loss that cannot be jitted).

    Returns:
      ``{layer path: norm}`` in the layers' order, first layer first.

    >>> import jax.numpy as jnp
    >>> p = {"dense_0": {"w": jnp.ones((2, 1)), "b": jnp.zeros(1)}}
    >>> loss = lambda p, b: jnp.sum(b @ p["dense_0"]["w"] + p["dense_0"]["b"])
    >>> {k: round(v, 3) for k, v in grad_norms(loss, p, jnp.ones((1, 2))).items()}
    {'dense_0': 1.732}
    """
    grad = _jit(jax.grad(loss)) if jit else jax.grad(loss)
    grads = grad(params, batch)
    norms = {}
    for path in layer_paths(params):
        leaves = jax.tree_util.tree_leaves(_lookup(grads, path))
        norms[path] = float(np.sqrt(sum(float(np.sum(np.square(g))) for g in leaves)))
    if plot is not None:
        from . import plot as plotting

        plotting.grad_norms(norms, plot)
    return norms
