"""Pictures with matplotlib (an optional extra: ``pip install funcnn[examples]``).

Nothing in the core imports this module. Every function that draws a whole figure saves
it as a PNG (``computational_graph`` also as SVG) and returns the saved path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "require_matplotlib",
    "grid",
    "decision_regions",
    "side_by_side",
    "curves",
    "save",
    "filters",
    "feature_maps",
    "curve_panels",
    "loss_vs_steps_and_time",
    "computational_graph",
    "graph_layout",
    "grad_norms",
]


def require_matplotlib():
    """Import matplotlib with the non-interactive Agg backend, or explain how to get it.

    Returns:
      ``matplotlib.pyplot``.

    Raises:
      ImportError: matplotlib is not installed, with the ``pip install`` to run.

    >>> plt = require_matplotlib()
    >>> plt.get_backend().lower()
    'agg'
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("funcnn.plot needs matplotlib: pip install 'funcnn[examples]'") from err
    return plt


def grid(x: np.ndarray, resolution: int = 200, margin: float = 0.1):
    """A ``resolution × resolution`` grid covering the 2-D points ``x`` plus a margin.

    Returns ``(xx, yy, points)`` with ``points`` of shape ``(resolution², 2)``.

    Each axis spans ``[lo − margin·(hi − lo), hi + margin·(hi − lo)]`` with ``lo`` / ``hi``
    the points' smallest / largest coordinate.

    Args:
      x: the points, ``(n, 2)``.
      resolution: the number ``r`` of grid lines per axis; ``xx`` and ``yy`` are ``(r, r)``.
      margin: the fraction of the data's range added on each side.

    >>> import numpy as np
    >>> xx, yy, points = grid(np.array([[0.0, 0.0], [1.0, 2.0]]), resolution=3, margin=0.0)
    >>> xx.shape, points.shape, points[0].tolist(), points[-1].tolist()
    ((3, 3), (9, 2), [0.0, 0.0], [1.0, 2.0])
    """
    x = np.asarray(x)
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = margin * (hi - lo)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(xs, ys)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


def decision_regions(
    ax,
    predict: Callable[[np.ndarray], np.ndarray],
    x,
    y,
    *,
    title: str = "",
    resolution: int = 200,
):
    """Shade the plane by the predicted class (or P(class 1)) and draw the points over it.

    ``predict(points)`` returns class probabilities ``(m, c)`` or ``P(y=1)`` as ``(m,)`` /
    ``(m, 1)``. For two classes the boundary ``P = 0.5`` is drawn as a line.

    Args:
      ax: the matplotlib axes to draw into.
      predict: ``points (m, 2) -> probabilities``, as above.
      x: the points, ``(n, 2)``.
      y: their labels, ``(n,)``.
      title: the axes' title.
      resolution: grid lines per axis (see :func:`grid`).

    Returns:
      ``ax``.

    >>> import numpy as np
    >>> plt = require_matplotlib()
    >>> fig, ax = plt.subplots()
    >>> x, y = np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([0, 1])
    >>> sigmoid = lambda p: 1 / (1 + np.exp(-4 * p[:, 0]))  # P(y=1) = σ(4 x₁)
    >>> decision_regions(ax, sigmoid, x, y, title="σ(4 x₁)", resolution=20) is ax
    True
    >>> plt.close(fig)
    """
    xx, yy, pts = grid(x, resolution)
    prob = np.asarray(predict(pts))
    if prob.ndim == 2 and prob.shape[1] > 1:
        value = prob[:, 1] if prob.shape[1] == 2 else np.argmax(prob, axis=1)
    else:
        value = prob.reshape(-1)
    value = value.reshape(xx.shape)
    ax.contourf(xx, yy, value, levels=20, cmap="RdBu", alpha=0.6, vmin=0, vmax=1)
    ax.contour(xx, yy, value, levels=[0.5], colors="k", linewidths=1)
    ax.scatter(x[:, 0], x[:, 1], c=np.asarray(y), cmap="RdBu", edgecolors="k", s=12, vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def side_by_side(panels: Sequence[tuple[str, Callable]], x, y, path, *, resolution: int = 200):
    """Decision regions of several models over the same data, in one row; saved to ``path``.

    Args:
      panels: ``[(title, predict), ...]``, one panel each (see :func:`decision_regions`).
      x: the points, ``(n, 2)``.
      y: their labels, ``(n,)``.
      path: where to save the PNG.
      resolution: grid lines per axis.

    Returns:
      the saved path.

    >>> import tempfile
    >>> import numpy as np
    >>> x, y = np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([0, 1])
    >>> def by_axis(i):  # P(y=1) = 1 where x_i > 0, else 0
    ...     return lambda p: 1.0 * (p[:, i] > 0)
    >>> panels = [("x₁ > 0", by_axis(0)), ("x₂ > 0", by_axis(1))]
    >>> path = side_by_side(panels, x, y, Path(tempfile.mkdtemp()) / "both.png", resolution=10)
    >>> path.name, path.exists()
    ('both.png', True)
    """
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5))
    for ax, (title, predict) in zip(np.atleast_1d(axes), panels):
        decision_regions(ax, predict, x, y, title=title, resolution=resolution)
    return save(fig, path)


def curves(
    history: dict[str, list[float]],
    path,
    *,
    keys: Sequence[str] | None = None,
    title: str = "",
    logy: bool = False,
):
    """Training curves: one line per history key against the epoch (1, 2, ...).

    Args:
      history: ``{name: [value per epoch]}``, e.g. ``FitResult.history``.
      path: where to save the PNG.
      keys: which names to draw; default all.
      title: the figure's title.
      logy: a logarithmic y axis.

    Returns:
      the saved path.

    >>> import tempfile
    >>> history = {"loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.6, 0.5]}
    >>> path = curves(history, Path(tempfile.mkdtemp()) / "curves.png", logy=True)
    >>> path.suffix, path.exists()
    ('.png', True)
    """
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in keys or list(history):
        ax.plot(np.arange(1, len(history[k]) + 1), history[k], label=k)
    ax.set_xlabel("epoch")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return save(fig, path)


def save(fig, path) -> Path:
    """Save a figure as PNG (creating the folder), close it, and return the path.

    Args:
      fig: a matplotlib figure.
      path: the file to write; missing folders are created.

    >>> import tempfile
    >>> plt = require_matplotlib()
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [1, 0])
    >>> path = save(fig, Path(tempfile.mkdtemp()) / "new" / "line.png")
    >>> path.exists(), path.read_bytes()[:4] == bytes([0x89]) + b"PNG"
    (True, True)
    """
    plt = require_matplotlib()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------ pictures of the examples


def curve_panels(
    panels: Sequence[tuple[str, dict[str, Sequence[float]]]],
    path,
    *,
    marks: Sequence[int | tuple[int, str] | None] | None = None,
    mark_label: str = "early stopping",
    xlabel: str = "epoch",
    logy: bool = False,
):
    """Training curves in one row of panels, one panel per ``(title, {label: values})``.

    ``marks[i]``, if given, is a 1-based epoch (or ``(epoch, label)``) drawn as a dashed
    vertical line in panel ``i``, for example the epoch whose params early stopping keeps.

    Args:
      panels: ``[(title, {label: values}), ...]``; value ``k`` is drawn at x = ``k + 1``.
      path: where to save the PNG.
      marks: one mark (or ``None``) per panel.
      mark_label: the legend of a mark given as a bare epoch.
      xlabel: the x axis' label.
      logy: logarithmic y axes.

    Returns:
      the saved path.

    >>> import tempfile
    >>> small = {"train": [1.0, 0.5], "val": [1.1, 0.7]}
    >>> panels = [("small", small), ("big", {"train": [1.0, 0.2]})]
    >>> path = curve_panels(panels, Path(tempfile.mkdtemp()) / "panels.png", marks=[2, None])
    >>> path.suffix, path.exists()
    ('.png', True)
    """
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    marks = list(marks) if marks is not None else [None] * len(panels)
    if len(marks) != len(panels):
        raise ValueError(f"curve_panels: marks has {len(marks)} entries for {len(panels)} panels")
    for ax, (title, lines), mark in zip(axes[0], panels, marks):
        for label, values in lines.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=label)
        if mark is not None:
            epoch, label = mark if isinstance(mark, tuple) else (mark, mark_label)
            ax.axvline(epoch, color="k", linestyle="--", linewidth=1, label=label)
        ax.set_xlabel(xlabel)
        if logy:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    return save(fig, path)


def loss_vs_steps_and_time(
    runs: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path,
    *,
    title: str = "",
    logy: bool = True,
):
    """Two panels: loss against optimizer steps and against wall-clock seconds.

    ``runs`` maps a name to ``(steps, seconds, losses)``, three sequences of equal length.

    Args:
      runs: ``{name: (steps, seconds, losses)}``.
      path: where to save the PNG.
      title: the figure's title.
      logy: logarithmic y axes.

    Returns:
      the saved path.

    >>> import tempfile
    >>> runs = {"sgd": ([1, 2, 3], [0.1, 0.2, 0.3], [1.0, 0.6, 0.4])}
    >>> path = loss_vs_steps_and_time(runs, Path(tempfile.mkdtemp()) / "loss.png")
    >>> path.suffix, path.exists()
    ('.png', True)
    """
    plt = require_matplotlib()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, (steps, seconds, losses) in runs.items():
        if not len(steps) == len(seconds) == len(losses):
            raise ValueError(f"loss_vs_steps_and_time: {name!r} has sequences of unequal length")
        left.plot(steps, losses, label=name)
        right.plot(seconds, losses, label=name)
    left.set_xlabel("steps")
    right.set_xlabel("wall time (s)")
    for ax in (left, right):
        ax.set_ylabel("training loss")
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def _grid_axes(plt, n: int, columns: int, size: float = 1.2):
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.4))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    return fig, axes


def filters(w, path, *, title: str = "first-layer filters", columns: int = 8):
    """A grid of convolution filters, one picture per output channel.

    ``w`` is an HWIO kernel ``(F_h, F_w, C, O)``. With ``C = 3`` each filter is shown in
    colour, min–max scaled to [0, 1]; otherwise the mean over the input channels is shown
    in grey, each filter scaled on its own: ``(f − min f) / (max f − min f)``.

    Args:
      w: the kernel, ``(F_h, F_w, C, O)``.
      path: where to save the PNG.
      title: the figure's title.
      columns: filters per row.

    Returns:
      the saved path.

    >>> import tempfile
    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=(5, 5, 3, 6))  # six colour filters
    >>> path = filters(w, Path(tempfile.mkdtemp()) / "filters.png", columns=3)
    >>> path.suffix, path.exists()
    ('.png', True)
    """
    plt = require_matplotlib()
    w = np.asarray(w, np.float64)
    if w.ndim != 4:
        raise ValueError(f"plot.filters: w must be an HWIO kernel of rank 4, got shape {w.shape}")
    fig, axes = _grid_axes(plt, w.shape[3], columns)
    for o, ax in enumerate(axes[: w.shape[3]]):
        f = w[..., o]
        if w.shape[2] != 3:
            f = f.mean(axis=2)
        f = (f - f.min()) / (np.ptp(f) or 1.0)
        ax.imshow(f, cmap=None if f.ndim == 3 else "gray", interpolation="nearest")
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return save(fig, path)


def feature_maps(maps, path, *, image=None, max_channels: int = 8, title: str = ""):
    """Feature maps of one input, one row per layer.

    Args:
      maps: ``[(name, y), ...]`` with ``y`` of shape ``(H, W, C)`` or ``(1, H, W, C)``, as
        :func:`funcnn.inspect.feature_maps` returns for one image.
      path: where to save the PNG.
      image: the input, ``(H, W, C)`` or ``(1, H, W, C)``, drawn at the start of each row.
      max_channels: how many channels to draw per layer.
      title: the figure's title.

    Returns:
      the saved path.

    >>> import tempfile
    >>> import numpy as np
    >>> maps = [("conv_0", np.ones((1, 6, 6, 4))), ("conv_1", np.zeros((1, 2, 2, 8)))]
    >>> image = np.zeros((1, 8, 8, 1))
    >>> path = Path(tempfile.mkdtemp()) / "maps.png"
    >>> path = feature_maps(maps, path, image=image, max_channels=3)
    >>> path.suffix, path.exists()
    ('.png', True)
    """
    plt = require_matplotlib()
    maps = [(name, np.asarray(y)[0] if np.ndim(y) == 4 else np.asarray(y)) for name, y in maps]
    if not maps or any(y.ndim != 3 for _, y in maps):
        raise ValueError("plot.feature_maps: maps must be a non-empty list of (name, (H, W, C))")
    lead = image is not None
    columns = lead + min(max_channels, max(y.shape[2] for _, y in maps))
    fig, axes = plt.subplots(len(maps), columns, figsize=(1.3 * columns, 1.4 * len(maps) + 0.4))
    axes = np.asarray(axes).reshape(len(maps), columns)
    for ax in axes.ravel():
        ax.axis("off")
    for row, (name, y) in enumerate(maps):
        if lead:
            img = np.asarray(image)
            img = img[0] if img.ndim == 4 else img
            axes[row, 0].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
            axes[row, 0].set_title("input", fontsize=8)
        for c in range(min(max_channels, y.shape[2])):
            ax = axes[row, lead + c]
            ax.imshow(y[..., c], cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name}[{c}]", fontsize=8)
    if title:
        fig.suptitle(title)
    return save(fig, path)


# ------------------------------------------------ gradients: graphs and gradient norms


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
