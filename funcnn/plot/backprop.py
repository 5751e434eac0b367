"""The backward pass made visible: the computational graph with its forward values and
partials ``∂f/∂node``, and the per-layer gradient norms ``‖∂L/∂θ_layer‖``."""

from __future__ import annotations

import numpy as np

from .figures import require_matplotlib, save

__all__ = ["graph_layout", "computational_graph", "grad_norms"]


def graph_layout(graph) -> dict[int, tuple[float, float]]:
    """Positions ``{node id: (x, y)}`` for a :class:`funcnn.graph.Graph`, left to right.

    A node's column is one more than its deepest input's (inputs in column 0); a constant
    sits in the column just before its first consumer. Within a column, nodes are ordered by
    the mean height of their inputs, which keeps most edges short and uncrossed; a column of
    ``m`` nodes takes the heights ``(m − 1)/2, (m − 1)/2 − 1, ..., −(m − 1)/2``.

    Args:
      graph: a :class:`funcnn.graph.Graph`.

    Returns:
      ``{node id: (column, height)}``. Needs no matplotlib.

    >>> from funcnn.graph import trace
    >>> g = trace(lambda w, x: w * x, 2.0, 3.0)  # inputs 0, 1; the product 2
    >>> graph_layout(g)
    {0: (0.0, 0.5), 1: (0.0, -0.5), 2: (1.0, 0.0)}
    """
    nodes = graph.nodes
    col: dict[int, int] = {}
    for n in nodes:
        if n.kind == "input":
            col[n.id] = 0
        elif n.kind == "op":
            col[n.id] = 1 + max((col.get(i, 0) for i in n.inputs), default=0)
    consumers: dict[int, list[int]] = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n.id)
    for n in nodes:
        if n.kind == "const":
            col[n.id] = max(0, min((col[c] for c in consumers.get(n.id, [])), default=1) - 1)
    pos: dict[int, tuple[float, float]] = {}
    for c in range(max(col.values()) + 1):
        members = [n for n in nodes if col[n.id] == c]

        def height(n, c=c):
            ys = [pos[i][1] for i in n.inputs if i in pos]
            if not ys and n.kind == "const":
                ys = [
                    pos[i][1] for u in consumers.get(n.id, []) for i in nodes[u].inputs if i in pos
                ]
            return float(np.mean(ys)) if ys else 0.0

        if c > 0:
            members.sort(key=lambda n: -height(n))
        for rank, n in enumerate(members):
            pos[n.id] = (float(c), (len(members) - 1) / 2 - rank)
    return pos


def computational_graph(graph, path=None, *, title: str = "", ax=None):
    """Draw a computational graph as the lecture does: forward values in green above each
    node, the backward partials ``∂f/∂node`` in red below.

    Args:
      graph: a :class:`funcnn.graph.Graph` from :func:`funcnn.graph.trace`.
      path: where to save; ``.svg`` gives an SVG, anything else a PNG. ``None`` with ``ax``.
      ax: draw into these axes instead of a new figure (then nothing is saved).

      title: the title; default a legend of the colours.

    Returns:
      the saved path, or ``ax``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from funcnn.graph import trace
    >>> g = trace(lambda w, x: w * x, 2.0, 3.0)
    >>> path = computational_graph(g, Path(tempfile.mkdtemp()) / "graph.svg")
    >>> path.suffix, path.read_text().count("<svg") > 0
    ('.svg', True)
    """
    plt = require_matplotlib()
    pos = graph_layout(graph)
    ncols = int(max(x for x, _ in pos.values())) + 1
    nrows = max(sum(1 for x, _ in pos.values() if x == c) for c in range(ncols))
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * ncols), max(3.0, 1.6 * nrows + 1)))
    styles = {
        "input": dict(boxstyle="round,pad=0.35", fc="#dde8f7", ec="#35608f"),
        "const": dict(boxstyle="round,pad=0.25", fc="#f2f2f2", ec="#999999"),
        "op": dict(boxstyle="circle,pad=0.3", fc="white", ec="black"),
    }
    for n in graph.nodes:
        for i in n.inputs:
            ax.annotate(
                "",
                xy=pos[n.id],
                xytext=pos[i],
                arrowprops=dict(arrowstyle="->", color="#555555", shrinkA=16, shrinkB=16),
            )
    for n in graph.nodes:
        x, y = pos[n.id]
        size = 8 if n.kind == "const" else 10
        ax.text(x, y, n.symbol, ha="center", va="center", fontsize=size, bbox=styles[n.kind])
        ax.text(x, y + 0.3, n.value_label, ha="center", va="bottom", color="green", fontsize=9)
        if n.grad is not None:
            ax.text(x, y - 0.3, n.grad_label, ha="center", va="top", color="red", fontsize=9)
    ys = [y for _, y in pos.values()]
    ax.set_xlim(-0.6, ncols - 0.4)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.set_axis_off()
    ax.set_title(title or "forward values (green), backward ∂f/∂node (red)")
    if fig is None:
        return ax
    return save(fig, path)


def grad_norms(norms, path, *, title: str = "", logy: bool = True):
    """Bar chart of per-layer gradient norms ``‖∂L/∂θ_layer‖``, first layer on the left.

    ``norms`` is ``{layer: norm}`` (from :func:`funcnn.inspect.grad_norms`), or
    ``{panel title: {layer: norm}}`` for several networks side by side.

    Args:
      norms: as above.
      path: where to save the PNG.
      title: the panel's title (one network) or the figure's (several).
      logy: a logarithmic y axis (norms are clipped below at 1e-30).

    Returns:
      the saved path.

    >>> import tempfile
    >>> from pathlib import Path
    >>> plain, skip = {"dense_0": 1e-4, "dense_1": 0.1}, {"dense_0": 0.2, "dense_1": 0.3}
    >>> norms = {"plain": plain, "residual": skip}
    >>> path = grad_norms(norms, Path(tempfile.mkdtemp()) / "norms.png", title="‖∂L/∂θ‖")
    >>> path.suffix, path.exists()
    ('.png', True)
    """
    plt = require_matplotlib()
    panels = norms if norms and isinstance(next(iter(norms.values())), dict) else {title: norms}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels.items()):
        heights = np.maximum(np.asarray(list(values.values()), dtype=float), 1e-30)
        ax.bar(np.arange(len(heights)), heights, color="#c0392b")
        ax.set_xticks(np.arange(len(heights)))
        ax.set_xticklabels(list(values), rotation=90, fontsize=7)
        if logy:
            ax.set_yscale("log")
        ax.set_ylabel("‖∂L/∂θ‖ of the layer")
        ax.set_title(name)
    if len(panels) > 1 and title:
        fig.suptitle(title)
    return save(fig, path)
