"""The report of a gradient check: a row per (mode, leaf), the worst of them, a table.

A row compares, at one element ``θᵢ`` of one leaf, an automatic derivative ``a`` with its
finite-difference estimate ``n``: it passes when ``|a − n| ≤ atol + rtol·|n|``, and its
``score = |a − n| / (atol + rtol·|n|)`` says how far outside the tolerance it lies (≤ 1
passes). Of all the checked elements of a leaf, the row keeps the one of largest score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["path_str", "LeafCheck", "GradCheckError", "GradCheckReport"]


def path_str(path: Sequence[Any]) -> str:
    """A pytree key path as a readable string: ``("hidden_0", "w")`` -> ``"hidden_0/w"``.

    >>> import jax
    >>> [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path({"a": {"w": 1}})[0]]
    ['a/w']
    """
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts) or "<root>"


# ------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class LeafCheck:
    """One leaf checked in one mode.

    ``index`` is the element with the largest error (a tuple into the leaf), or ``None``
    for ``jvp`` where the check is along one random direction of the whole leaf.
    ``auto`` and ``numeric`` are the two values compared at that element; ``score`` is how
    far outside the tolerance it lies, ``abs_error / (atol + rtol·|numeric|)`` (≤ 1 passes).

    Fields: ``mode`` (``"grad"``, ``"vjp"`` or ``"jvp"``); ``path`` (the leaf, e.g.
    ``"hidden_0/w"``); ``index``; ``auto``; ``numeric``; ``abs_error = |auto − numeric|``;
    ``rel_error = abs_error / max(|auto|, |numeric|)``; ``ok``; ``checked`` (how many
    elements of the leaf were compared); ``score``; ``note`` (why a row was not checked).
    """

    mode: str
    path: str
    index: tuple[int, ...] | None
    auto: float
    numeric: float
    abs_error: float
    rel_error: float
    ok: bool
    checked: int = 0
    score: float = 0.0
    note: str = ""


class GradCheckError(AssertionError):
    """Raised by :func:`check_grads` with ``raise_on_failure=True`` when a check fails.

    Its message is ``"gradient check failed"`` followed by the report's table; an
    ``AssertionError``, so test runners show it as a failed assertion.
    """


@dataclass
class GradCheckReport:
    """What :func:`check_grads` found: a row per (mode, leaf) and the worst of them.

    ``ok`` is true when every row is within ``atol + rtol·|numeric|``. ``worst_path``,
    ``worst_index``, ``abs_error`` and ``rel_error`` describe the worst row. ``str(report)``
    is a table.

    Fields: ``rows`` (the :class:`LeafCheck` rows), ``rtol``, ``atol``, ``eps`` (the
    finite-difference step ``h``) and ``skipped`` (``{mode: why}`` for modes not run).

    >>> import jax.numpy as jnp
    >>> from funcnn.gradients import check_grads
    >>> report = check_grads(lambda p: jnp.sum(p["w"] ** 3), ({"w": jnp.array([1.0, 2.0])},))
    >>> report.ok, report.worst_path, sorted({r.mode for r in report.rows})
    (True, 'w', ['grad', 'jvp', 'vjp'])
    """

    rows: list[LeafCheck]
    rtol: float
    atol: float
    eps: float
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def worst(self) -> LeafCheck | None:
        checked = [r for r in self.rows if not r.note]
        return max(checked, key=lambda r: r.score) if checked else None

    @property
    def worst_path(self) -> str | None:
        return None if self.worst is None else self.worst.path

    @property
    def worst_index(self) -> tuple[int, ...] | None:
        return None if self.worst is None else self.worst.index

    @property
    def abs_error(self) -> float:
        return 0.0 if self.worst is None else self.worst.abs_error

    @property
    def rel_error(self) -> float:
        return 0.0 if self.worst is None else self.worst.rel_error

    def assert_ok(self) -> GradCheckReport:
        """Raise :class:`GradCheckError` with this report when a check failed."""
        if not self.ok:
            raise GradCheckError(f"gradient check failed\n{self}")
        return self

    def __str__(self) -> str:
        head = f"{'mode':<5} {'leaf':<28} {'element':<12} {'auto':>13} {'numeric':>13} "
        head += f"{'abs err':>9} {'rel err':>9}  ok"
        lines = [head]
        for r in self.rows:
            idx = "direction" if r.index is None else str(r.index)
            lines.append(
                f"{r.mode:<5} {r.path:<28} {idx:<12} {r.auto:>13.6g} {r.numeric:>13.6g} "
                f"{r.abs_error:>9.2e} {r.rel_error:>9.2e}  {'yes' if r.ok else 'NO'}"
            )
        for mode, why in self.skipped.items():
            lines.append(f"{mode:<5} skipped: {why}")
        w = self.worst
        verdict = "all within" if self.ok else "FAILED"
        lines.append(
            f"{verdict} atol={self.atol:g} + rtol={self.rtol:g}·|numeric| (h={self.eps:g}); "
            + (
                "nothing checked"
                if w is None
                else f"worst: {w.mode} {w.path} {w.index} abs {w.abs_error:.3e} "
                f"rel {w.rel_error:.3e}"
            )
        )
        return "\n".join(lines)

    __repr__ = __str__


# ------------------------------------------------------------------------ the rows


def leaf_row(mode, path, index, auto, numeric, rtol, atol, checked) -> LeafCheck:
    """The row of one leaf, at the element ``index`` where ``auto`` and ``numeric`` met."""
    err = abs(auto - numeric)
    scale = max(abs(auto), abs(numeric))
    rel = err / scale if scale > 0 else 0.0
    score = err / (atol + rtol * abs(numeric))
    return LeafCheck(
        mode=mode,
        path=path,
        index=index,
        auto=float(auto),
        numeric=float(numeric),
        abs_error=float(err),
        rel_error=float(rel),
        ok=bool(err <= atol + rtol * abs(numeric)) and math.isfinite(auto),
        checked=checked,
        score=float(score) if math.isfinite(score) else math.inf,
    )


def elementwise_rows(mode, auto_leaves, numeric, picks, paths, shapes, rtol, atol):
    """A row per leaf: of the picked elements, the one of largest score."""
    rows = []
    for k, (sel, num) in enumerate(zip(picks, numeric)):
        if len(sel) == 0:
            continue
        a = np.asarray(auto_leaves[k]).reshape(-1)[sel]
        score = np.abs(a - num) / (atol + rtol * np.abs(num))
        score = np.where(np.isfinite(score), score, np.inf)
        j = int(np.argmax(score))
        index = tuple(int(i) for i in np.unravel_index(sel[j], shapes[k]))
        rows.append(leaf_row(mode, paths[k], index, a[j], num[j], rtol, atol, len(sel)))
    return rows


def report_rows(numbers, picks, sizes, paths, shapes, rtol, atol) -> list[LeafCheck]:
    """The rows of every mode in ``numbers``: ``grad`` and ``vjp`` element by element
    against ``fd``, then ``jvp`` (automatic, numeric) per leaf along its direction."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in picks])])
    rows: list[LeafCheck] = []
    if "fd" in numbers:
        numeric = [numbers["fd"][a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        for mode in ("grad", "vjp"):
            if mode in numbers:
                auto = [numbers[mode][a : a + n] for a, n in zip(offsets[:-1], sizes)]
                rows += elementwise_rows(mode, auto, numeric, picks, paths, shapes, rtol, atol)
    if "jvp" in numbers:
        autos, nums = numbers["jvp"]
        for k, n in enumerate(sizes):
            rows.append(leaf_row("jvp", paths[k], None, autos[k], nums[k], rtol, atol, n))
    return rows
