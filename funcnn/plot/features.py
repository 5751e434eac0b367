"""What a convolutional network has learned: its filters and the feature maps of an input."""

from __future__ import annotations

import numpy as np

from .figures import require_matplotlib, save

__all__ = ["filters", "feature_maps"]


def _grid_axes(plt, n: int, columns: int, size: float = 1.2):
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(size * columns, size * rows + 1.0)
    )  # + title, caption
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
    >>> from pathlib import Path
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
    scale = "black its smallest weight, white its largest" if w.shape[2] != 3 else "RGB"
    fig.supxlabel(f"each filter scaled to its own range ({scale})", fontsize=8)
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
    >>> from pathlib import Path
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
    fig, axes = plt.subplots(len(maps), columns, figsize=(1.3 * columns, 1.4 * len(maps) + 0.8))
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
    fig.supxlabel("each map scaled to its own range: dark its smallest value, yellow its largest",
                  fontsize=8)  # fmt: skip
    return save(fig, path)
