"""Training curves: a loss or metric per epoch, per optimizer step or per second."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .figures import require_matplotlib, save

__all__ = ["curves", "curve_panels", "loss_vs_steps_and_time"]


def _quantity(names: Sequence[str], fallback: str) -> str:
    """What the curves measure, read from their names: ``"loss"`` for ``loss`` and
    ``val_loss``, ``"accuracy"``, both, or ``fallback`` when the names do not say."""
    kinds = {"loss" if "loss" in n else "accuracy" if "acc" in n else None for n in names}
    meanings: dict[frozenset[str | None], str] = {
        frozenset({"loss"}): "loss",
        frozenset({"accuracy"}): "accuracy",
        frozenset({"loss", "accuracy"}): "loss and accuracy",
    }
    return meanings.get(frozenset(kinds), fallback)


def _epochs(ax, xlabel: str) -> None:
    """Whole numbers on an epoch (or step) axis: no epoch 1.25."""
    plt = require_matplotlib()
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(
        plt.matplotlib.ticker.MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10])
    )


def curves(
    history: dict[str, list[float]],
    path,
    *,
    keys: Sequence[str] | None = None,
    title: str = "",
    logy: bool = False,
    ylabel: str | None = None,
):
    """Training curves: one line per history key against the epoch (1, 2, ...).

    Args:
      history: ``{name: [value per epoch]}``, e.g. ``FitResult.history``.
      path: where to save the PNG.
      keys: which names to draw; default all.
      title: the figure's title.
      logy: a logarithmic y axis.
      ylabel: the y axis' label; by default read from the keys (``"loss"`` for ``loss`` and
        ``val_loss``, ``"accuracy"``), else the title.

    Returns:
      the saved path.

    >>> import tempfile
    >>> from pathlib import Path
    >>> history = {"loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.6, 0.5]}
    >>> path = curves(history, Path(tempfile.mkdtemp()) / "curves.png", logy=True)
    >>> path.suffix, path.exists()
    ('.png', True)
    """
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = list(keys or history)
    for k in keys:
        ax.plot(np.arange(1, len(history[k]) + 1), history[k], label=k)
    _epochs(ax, "epoch")
    ax.set_ylabel(ylabel or _quantity(keys, title or "value"))
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return save(fig, path)


def curve_panels(
    panels: Sequence[tuple[str, dict[str, Sequence[float]]]],
    path,
    *,
    marks: Sequence[int | tuple[int, str] | None] | None = None,
    mark_label: str = "early stopping",
    xlabel: str = "epoch",
    logy: bool = False,
    ylabel: str = "loss",
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
      ylabel: the y axes' label.

    Returns:
      the saved path.

    >>> import tempfile
    >>> from pathlib import Path
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
        _epochs(ax, xlabel)
        ax.set_ylabel(ylabel)
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
    >>> from pathlib import Path
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
