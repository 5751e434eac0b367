"""Automatic gradients beside hand-derived ones, leaf by leaf.

For each leaf, ``max |auto − ref|`` and ``max |auto − ref| / max(|auto|, |ref|)``; a leaf
agrees when ``|auto − ref| ≤ atol + rtol·|ref|`` everywhere. The hand-derived side comes
from :mod:`funcnn.reference`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import jax
import numpy as np

from .report import path_str

__all__ = ["Comparison", "compare"]


@dataclass
class Comparison:
    """Leaf-by-leaf agreement of two pytrees: rows of ``(path, shape, max_abs, max_rel, ok)``.

    ``max_abs = max |auto − ref|`` and ``max_rel = max |auto − ref| / max(|auto|, |ref|)``
    over the leaf; ``ok`` is true for the whole comparison when every leaf agrees;
    ``str(comparison)`` is the table :func:`compare` prints.

    >>> import jax.numpy as jnp
    >>> c = compare({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, 2.5])}, file=None)
    >>> c.ok, c.max_abs, c.rows[0][:2]
    (False, 0.5, ('w', (2,)))
    """

    rows: list[tuple[str, tuple[int, ...], float, float, bool]]

    @property
    def ok(self) -> bool:
        return all(r[4] for r in self.rows)

    @property
    def max_abs(self) -> float:
        return max((r[2] for r in self.rows), default=0.0)

    def __str__(self) -> str:
        lines = [f"{'leaf':<28} {'shape':<14} {'max |auto − ref|':>17} {'max rel':>10}  agree"]
        for path, shape, a, r, ok in self.rows:
            lines.append(
                f"{path:<28} {str(shape):<14} {a:>17.3e} {r:>10.3e}  {'yes' if ok else 'NO'}"
            )
        return "\n".join(lines)


def compare(
    auto: Any,
    ref: Any,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-10,
    file: TextIO | None = sys.stdout,
) -> Comparison:
    """Print, leaf by leaf, how far automatic gradients are from hand-derived ones.

    For each leaf path of ``auto`` (e.g. ``hidden_0/w``) it reports the shape,
    ``max |auto − ref|`` and ``max |auto − ref| / max(|auto|, |ref|)``; a leaf agrees when
    ``|auto − ref| ≤ atol + rtol·|ref|`` everywhere.

    Args:
      auto: gradients from ``jax.grad``, a pytree.
      ref: hand-derived gradients with the same structure (e.g. from :mod:`funcnn.reference`).
      file: where to print the table (``None``: do not print).

    >>> import jax, jax.numpy as jnp
    >>> g = {"w": jnp.array([1.0, 2.0])}
    >>> compare(g, {"w": jnp.array([1.0, 2.0])}, file=None).ok
    True
    """
    a_paths, _ = jax.tree_util.tree_flatten_with_path(auto)
    r_paths, _ = jax.tree_util.tree_flatten_with_path(ref)
    a_map = {path_str(p): v for p, v in a_paths}
    r_map = {path_str(p): v for p, v in r_paths}
    if set(a_map) != set(r_map):
        raise ValueError(
            f"compare: auto and ref have different leaves: only in auto "
            f"{sorted(set(a_map) - set(r_map))}, only in ref {sorted(set(r_map) - set(a_map))}"
        )
    rows = []
    for path, a in a_map.items():
        a, r = np.asarray(a, np.float64), np.asarray(r_map[path], np.float64)
        if a.shape != r.shape:
            raise ValueError(f"compare: leaf {path} has shape {a.shape} in auto, {r.shape} in ref")
        diff = np.abs(a - r)
        scale = np.maximum(np.abs(a), np.abs(r))
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0.0)
        ok = bool(np.all(diff <= atol + rtol * np.abs(r)))
        rows.append((path, a.shape, float(diff.max(initial=0)), float(rel.max(initial=0)), ok))
    result = Comparison(rows)
    if file is not None:
        print(result, file=file)
    return result
