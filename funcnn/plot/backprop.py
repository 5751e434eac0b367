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


VALUE_COLOUR, GRAD_COLOUR = "#1b7837", "#c62828"  # forward values green, partials red
_ROW = 1.6  # the vertical distance between two nodes of a column, in card heights
_CARD = "#fbfbfb"
_LABEL = dict(boxstyle="square,pad=0.1", fc=_CARD, ec="none")  # hides an edge behind a number
_STYLES = {
    "input": dict(boxstyle="round,pad=0.35", fc="#dde8f7", ec="#35608f"),
    "const": dict(boxstyle="round,pad=0.25", fc="#f2f2f2", ec="#999999"),
    "op": dict(boxstyle="circle,pad=0.3", fc="white", ec="black"),
}


def _card(ax, node, x: float, y: float):
    """One node as a card: its value (green) above its symbol, its partial (red) below, on
    a pale rounded box that holds the three together; returns the box, where arrows end."""
    from matplotlib.patches import FancyBboxPatch

    card = FancyBboxPatch(
        (x - 0.36, y - 0.5),
        0.72,
        1.0,
        boxstyle="round,pad=0,rounding_size=0.1",
        fc=_CARD,
        ec="#c8c8c8",
        lw=0.8,
        alpha=0.85,  # an edge that passes behind shows through, faintly
        zorder=2,
    )
    ax.add_patch(card)
    size = 8 if node.kind == "const" else 10
    ax.text(x, y, node.symbol, ha="center", va="center", fontsize=size, bbox=_STYLES[node.kind],
            zorder=3)  # fmt: skip
    label = dict(ha="center", fontsize=10, fontweight="bold", zorder=3, bbox=_LABEL)
    if not (node.kind == "const" and node.value_label == node.symbol):
        ax.text(x, y + 0.25, node.value_label, va="bottom", color=VALUE_COLOUR, **label)
    if node.grad is not None:
        ax.text(x, y - 0.25, node.grad_label, va="top", color=GRAD_COLOUR, **label)
    return card


def _graph_key(ax, graph) -> None:
    """The legend under the graph: which colour is the value and which the partial."""
    from matplotlib.patches import Patch

    handles = [
        Patch(color=VALUE_COLOUR, label="above: the node's value (forward pass)"),
        Patch(color=GRAD_COLOUR, label="below: ∂f/∂node (backward pass)"),
    ]
    if any("‖" in n.value_label for n in graph.nodes):
        handles.append(Patch(color="none", label="arrays: shape ‖norm‖"))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=len(handles),
        frameon=False,
        fontsize=9,
        handlelength=1.2,
    )


def computational_graph(graph, path=None, *, title: str = "", ax=None):
    """Draw a computational graph as the lecture does: each node on a card with its forward
    value in green above it and its backward partial ``∂f/∂node`` in red below, arrows from
    inputs to operations, and a key for the colours under the graph.

    Args:
      graph: a :class:`funcnn.graph.Graph` from :func:`funcnn.graph.trace`.
      path: where to save; ``.svg`` gives an SVG, anything else a PNG. ``None`` with ``ax``.
      ax: draw into these axes instead of a new figure (then nothing is saved).

      title: the title above the graph.

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
    pos = {i: (x, _ROW * y) for i, (x, y) in graph_layout(graph).items()}
    ncols = int(max(x for x, _ in pos.values())) + 1
    nrows = max(sum(1 for x, _ in pos.values() if x == c) for c in range(ncols))
    fig = None
    if ax is None:
        size = (max(6.0, 1.9 * ncols), max(3.2, 1.15 * _ROW * nrows + 1.0))
        fig, ax = plt.subplots(figsize=size)
    cards = {n.id: _card(ax, n, *pos[n.id]) for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            arrow = dict(
                arrowstyle="-|>",
                color="#555555",
                lw=1.0,
                shrinkA=0,
                shrinkB=1,
                patchA=cards[i],
                patchB=cards[n.id],
                mutation_scale=12,
                # an edge that skips columns bends a little, away from the cards it passes
                connectionstyle=f"arc3,rad={0.12 if pos[n.id][0] - pos[i][0] > 1 else 0}",
            )
            ax.annotate("", xy=pos[n.id], xytext=pos[i], arrowprops=arrow, zorder=1)
    ys = [y for _, y in pos.values()]
    ax.set_xlim(-0.5, ncols - 0.5)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    _graph_key(ax, graph)
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
        ax.set_xlabel("layer, from the input to the output")
        ax.set_title(name)
    if len(panels) > 1 and title:
        fig.suptitle(title)
    return save(fig, path)
