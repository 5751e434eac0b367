"""matplotlib, imported on demand with the Agg backend, and saving a figure as a PNG."""

from __future__ import annotations

from pathlib import Path

__all__ = ["require_matplotlib", "save"]


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
