"""Looking inside networks: per-layer gradient norms.

Nothing here changes a model; every function takes params (and a loss) and reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__: list[str] = []


# ----------------------------------------------------------------- gradient norms

__all__ += ["grad_norms", "layer_paths"]


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
    grad = jax.jit(jax.grad(loss)) if jit else jax.grad(loss)
    grads = grad(params, batch)
    norms = {}
    for path in layer_paths(params):
        leaves = jax.tree_util.tree_leaves(_lookup(grads, path))
        norms[path] = float(np.sqrt(sum(float(np.sum(np.square(g))) for g in leaves)))
    if plot is not None:
        from . import plot as plotting

        plotting.grad_norms(norms, plot)
    return norms
