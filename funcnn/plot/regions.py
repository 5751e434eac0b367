"""Decision regions: the plane shaded by a model's prediction, the points over it.

For two classes the boundary ``P(y = 1 | x) = 0.5`` is drawn as a line: a straight one for
the linear classifier ``σ(wᵀx + b)``, a curved one when there is a hidden layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .figures import require_matplotlib, save

__all__ = ["grid", "decision_regions", "side_by_side"]


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
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5))
    for ax, (title, predict) in zip(np.atleast_1d(axes), panels):
        decision_regions(ax, predict, x, y, title=title, resolution=resolution)
    return save(fig, path)
