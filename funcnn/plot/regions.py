"""Decision regions: the plane shaded by a model's prediction, the points over it.

For two classes the plane is shaded by ``P(y = 1 | x)``, from red (class 0) to blue (class 1),
with a colour bar as its key, and the boundary ``P = 0.5`` is drawn as a line: a straight one
for the linear classifier ``σ(wᵀx + b)``, a curved one when there is a hidden layer. The
points are drawn in the full colour of their class with a white edge, each class with its own
marker (class 0 circles, class 1 triangles), so they stand out from any shading; a legend
names them. With more classes the plane is shaded by the predicted class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .figures import require_matplotlib, save

__all__ = ["grid", "decision_regions", "side_by_side"]

MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")  # class 0, 1, 2, ...
_TWO = ("#b2182b", "#2166ac")  # the two ends of RdBu, the shading's colour map


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


def _classes(prob: np.ndarray, y: np.ndarray) -> int:
    """How many classes: the predictions' columns (two for ``P(y=1)`` alone), or the labels'."""
    columns = prob.shape[1] if prob.ndim == 2 and prob.shape[1] > 1 else 2
    return max(columns, int(np.max(y)) + 1 if y.size else 0)


def _colours(plt, classes: int) -> list:
    return list(_TWO) if classes == 2 else [plt.cm.tab10(k % 10) for k in range(classes)]


def _shade(ax, predict, x, y, title: str, resolution: int):
    """Shade ``ax`` by the prediction, draw the boundary and the points; return what the
    colour bar shows (the filled contours), the number of classes and the legend's entries."""
    plt = require_matplotlib()
    xx, yy, pts = grid(x, resolution)
    prob = np.asarray(predict(pts))
    classes = _classes(prob, y)
    if classes == 2:
        value = prob[:, 1] if prob.ndim == 2 and prob.shape[1] == 2 else prob.reshape(-1)
        levels: np.ndarray = np.linspace(0, 1, 21)
        cmap = plt.matplotlib.colors.ListedColormap(plt.cm.RdBu(np.linspace(0.15, 0.85, 256)))
    else:
        value = np.argmax(prob, axis=1)
        levels = np.arange(classes + 1) - 0.5
        cmap = plt.matplotlib.colors.ListedColormap(_colours(plt, classes))
    value = value.reshape(xx.shape)
    filled = ax.contourf(xx, yy, value, levels=levels, cmap=cmap, alpha=0.8, antialiased=True)
    if classes == 2:
        ax.contour(xx, yy, value, levels=[0.5], colors="k", linewidths=1.2)
    handles = []
    for k, colour in enumerate(_colours(plt, classes)):
        mine = y == k
        points = ax.scatter(
            x[mine, 0],
            x[mine, 1],
            s=26,
            c=[colour],
            marker=MARKERS[k % len(MARKERS)],
            edgecolors="white",
            linewidths=0.8,
            label=f"class {k}",
            zorder=3,
        )
        handles.append(points)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    if classes == 2:
        handles.append(plt.Line2D([], [], color="k", linewidth=1.2, label="boundary P = 0.5"))
    return filled, classes, handles


def _legend(ax, handles: list) -> None:
    """The classes' markers (and the boundary line) in one row under the axes."""
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.06),
        ncol=len(handles),
        fontsize=8,
        frameon=False,
        handletextpad=0.3,
        markerscale=1.4,
    )


def _colour_bar(fig, filled, classes: int, **where) -> None:
    if classes == 2:
        bar = fig.colorbar(filled, ticks=[0, 0.25, 0.5, 0.75, 1], **where)
        bar.set_ticklabels(["0: class 0", "0.25", "0.5", "0.75", "1: class 1"])
        bar.set_label("P(class 1 | x)")
    else:
        bar = fig.colorbar(filled, ticks=np.arange(classes), **where)
        bar.set_label("predicted class")


def decision_regions(
    ax,
    predict: Callable[[np.ndarray], np.ndarray],
    x,
    y,
    *,
    title: str = "",
    resolution: int = 200,
):
    """Shade the plane by P(class 1) (or the predicted class) and draw the points over it,
    with a colour bar for the shading and a legend for the points.

    ``predict(points)`` returns class probabilities ``(m, c)`` or ``P(y=1)`` as ``(m,)`` /
    ``(m, 1)``. For two classes the boundary ``P = 0.5`` is drawn as a line. Each class has
    its marker (:data:`MARKERS`: class 0 circles, class 1 triangles, ...), drawn with a white
    edge.

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
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['class 0', 'class 1', 'boundary P = 0.5']
    >>> plt.close(fig)
    """
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    filled, classes, handles = _shade(ax, predict, x, y, title, resolution)
    _legend(ax, handles)
    _colour_bar(ax.figure, filled, classes, ax=ax, fraction=0.046, pad=0.03)
    return ax


def side_by_side(panels: Sequence[tuple[str, Callable]], x, y, path, *, resolution: int = 200):
    """Decision regions of several models over the same data, in one row, with one colour
    bar for them all; saved to ``path``.

    Args:
      panels: ``[(title, predict), ...]``, one panel each (see :func:`decision_regions`).
      x: the points, ``(n, 2)``.
      y: their labels, ``(n,)``.
      path: where to save the PNG.
      resolution: grid lines per axis.

    Returns:
      the saved path.

    >>> import tempfile
    >>> from pathlib import Path
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
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    n = len(panels)
    fig, axes = plt.subplots(
        1, n + 1, figsize=(4.6 * n + 0.9, 5.1), gridspec_kw={"width_ratios": [1] * n + [0.05]}
    )
    for ax, (title, predict) in zip(axes[:n], panels):
        filled, classes, handles = _shade(ax, predict, x, y, title, resolution)
        _legend(ax, handles)
    _colour_bar(fig, filled, classes, cax=axes[n])
    return save(fig, path)
