"""Gradients made visible: finite-difference checks, hand-derived formulas, per-example grads.

* :func:`check_grads` compares ``jax.grad``, ``jax.vjp`` and ``jax.jvp`` with central finite
  differences ``(f(θ + h eᵢ) − f(θ − h eᵢ)) / 2h`` in float64, leaf by leaf of a params pytree,
  and names the worst leaf and element.
* :mod:`funcnn.reference` (also reachable as ``gradients.reference``) holds the gradients
  derived by hand: linear, logistic and softmax regression, a one-hidden-layer perceptron,
  convolution and max pooling. :func:`compare` prints automatic against hand-derived,
  leaf by leaf.
* :func:`per_example` gives one gradient per example with ``jax.vmap``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import reference
from .compiler import jit as _jit

__all__ = [
    "check_grads",
    "GradCheckReport",
    "LeafCheck",
    "GradCheckError",
    "compare",
    "Comparison",
    "per_example",
    "path_str",
    "reference",
]

MODES = ("grad", "vjp", "jvp")


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


# ----------------------------------------------------------------------- check_grads


def _to_float64(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)) or (hasattr(x, "dtype") and not _is_float(x)):
        return x
    if isinstance(x, (int, np.integer)):
        return x
    if isinstance(x, (float, np.floating)) or _is_float(x):
        return jnp.asarray(x, jnp.float64)
    return x


def _is_float(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _row(mode, path, index, auto, numeric, rtol, atol, checked) -> LeafCheck:
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


def _elementwise_rows(mode, auto_leaves, numeric, picks, paths, shapes, rtol, atol):
    rows = []
    for k, (sel, num) in enumerate(zip(picks, numeric)):
        if len(sel) == 0:
            continue
        a = np.asarray(auto_leaves[k]).reshape(-1)[sel]
        score = np.abs(a - num) / (atol + rtol * np.abs(num))
        score = np.where(np.isfinite(score), score, np.inf)
        j = int(np.argmax(score))
        index = tuple(int(i) for i in np.unravel_index(sel[j], shapes[k]))
        rows.append(_row(mode, paths[k], index, a[j], num[j], rtol, atol, len(sel)))
    return rows


def check_grads(
    f: Callable[..., Any],
    args: Sequence[Any],
    *,
    argnums: int | Sequence[int] = 0,
    modes: Sequence[str] = MODES,
    eps: float = 1e-5,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    max_elements: int | None = 256,
    key: int = 0,
    jit: bool = True,
    raise_on_failure: bool = False,
) -> GradCheckReport:
    """Compare automatic derivatives of ``f`` with central finite differences, in float64.

    With ``s(θ) = ⟨u, f(θ)⟩`` (``u = 1`` when ``f`` returns a scalar, a fixed random
    cotangent otherwise), every checked element ``θᵢ`` of every float leaf of
    ``args[argnums]`` is compared as

    * ``grad``: ``jax.grad(s)(θ)ᵢ``,
    * ``vjp``: ``jax.vjp(f, θ)[1](u)ᵢ``,

    against ``(s(θ + h eᵢ) − s(θ − h eᵢ)) / 2h``; and

    * ``jvp``: for each leaf, ``jax.jvp(s, θ, v)`` along a random unit direction ``v`` of
      that leaf against ``(s(θ + h v) − s(θ − h v)) / 2h``.

    An element passes when ``|auto − numeric| ≤ atol + rtol·|numeric|``. Float arguments
    are cast to float64 for the check (inside ``jax.enable_x64``); arrays captured by ``f``
    keep their dtype, so pass data as arguments to check in full precision.

    Args:
      f: a function of ``*args``, returning an array or a pytree of arrays.
      args: the tuple of arguments, e.g. ``(params,)`` or ``(params, x)``.
      argnums: which arguments to differentiate (their float leaves); default the first.
      modes: any of ``"grad"``, ``"vjp"``, ``"jvp"``. ``jvp`` is skipped, with a note, for
        functions that forbid forward mode (``jax.custom_vjp``).
      eps: the finite-difference step ``h``.
      rtol: the relative tolerance above.
      atol: the absolute tolerance above.
      max_elements: check at most this many elements per leaf (a random subset), ``None``
        for all.
      key: seed for the cotangent, directions and subsets.
      jit: compile the finite differences (turn off for functions that cannot be jitted).
      raise_on_failure: raise :class:`GradCheckError` carrying the report when a check fails.

    Returns:
      a :class:`GradCheckReport`; ``report.worst_path`` names the worst leaf.

    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    >>> loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["w"] + p["b"]) ** 2)
    >>> check_grads(loss, (params, jnp.ones((3, 2)))).ok
    True
    """
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"check_grads: args must be a tuple of arguments, e.g. (params,), got "
            f"{type(args).__name__}"
        )
    args = tuple(args)
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or any(
        isinstance(i, bool) or not isinstance(i, int) or not -len(args) <= i < len(args)
        for i in nums
    ):
        raise ValueError(
            f"check_grads: argnums must index into the {len(args)} args, got {argnums!r}"
        )
    nums = tuple(sorted({i % len(args) for i in nums}))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"check_grads: modes must be a subset of {MODES}, got {modes!r}")
    if not eps > 0:
        raise ValueError(f"check_grads: eps must be > 0, got {eps!r}")
    with jax.enable_x64(True):
        report = _check(f, args, nums, tuple(modes), eps, rtol, atol, max_elements, key, jit)
    if raise_on_failure:
        report.assert_ok()
    return report


def _check(f, args, nums, modes, eps, rtol, atol, max_elements, key, jit) -> GradCheckReport:
    args = jax.tree_util.tree_map(_to_float64, args)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(args)
    leaves = [leaf for _, leaf in with_paths]
    float_idx, rest_idx, paths = [], [], []
    for k, (p, leaf) in enumerate(with_paths):
        if p[0].idx in nums and _is_float(leaf):
            float_idx.append(k)
            inner = path_str(p[1:]) if len(p) > 1 else ""
            head = f"arg{p[0].idx}"
            paths.append(inner if len(nums) == 1 and inner else f"{head}/{inner}".rstrip("/"))
        elif isinstance(leaf, (jax.Array, np.ndarray)):
            rest_idx.append(k)  # other arrays travel as arguments, traced under jit
    if not float_idx:
        raise ValueError("check_grads: the differentiated arguments have no float leaves")
    rest0 = [leaves[k] for k in rest_idx]

    def call(float_leaves, rest):
        full = list(leaves)
        for k, leaf in zip(float_idx, float_leaves):
            full[k] = leaf
        for k, leaf in zip(rest_idx, rest):
            full[k] = leaf
        return f(*jax.tree_util.tree_unflatten(treedef, full))

    theta = [leaves[k] for k in float_idx]
    try:
        out = jax.eval_shape(call, theta, rest0)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        out = call(theta, rest0)
    rng = np.random.default_rng(key)
    out_leaves, out_def = jax.tree_util.tree_flatten(out)
    if len(out_leaves) == 1 and np.ndim(out_leaves[0]) == 0:
        cot = [jnp.ones((), jnp.result_type(out_leaves[0]))]
    else:
        cot = [
            jnp.asarray(rng.standard_normal(np.shape(o)), jnp.result_type(o)) for o in out_leaves
        ]
    u = jax.tree_util.tree_unflatten(out_def, cot)

    def scalar(float_leaves, rest):
        o = jax.tree_util.tree_leaves(call(float_leaves, rest))
        return sum(jnp.sum(a * c) for a, c in zip(o, cot))

    flat0, unravel = ravel_pytree(theta)
    sizes = [int(np.size(t)) for t in theta]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    picks = []
    for n in sizes:
        if max_elements is None or n <= max_elements:
            picks.append(np.arange(n))
        else:
            picks.append(np.sort(rng.choice(n, size=max_elements, replace=False)))
    elements = np.concatenate([off + sel for off, sel in zip(offsets, picks)]).astype(np.int32)
    skipped: dict[str, str] = {}
    do = set(modes)
    direction_key = jax.random.key(key)
    position = jnp.arange(flat0.size)
    starts, stops = jnp.asarray(offsets[:-1]), jnp.asarray(offsets[1:])

    def fd_element(flat, rest, i):
        def s(th):
            return scalar(th, rest)

        up = s(unravel(flat.at[i].add(eps)))
        down = s(unravel(flat.at[i].add(-eps)))
        return (up - down) / (2 * eps)

    def direction(k):  # a random unit vector within leaf k
        inside = (position >= starts[k]) & (position < stops[k])
        v = jax.random.normal(jax.random.fold_in(direction_key, k), flat0.shape, flat0.dtype)
        v = jnp.where(inside, v, 0.0)
        return v / jnp.linalg.norm(v)

    def jvp_and_fd(flat, rest, k):
        def s(th):
            return scalar(th, rest)

        v = direction(k)
        auto = jax.jvp(s, (unravel(flat),), (unravel(v),))[1]
        numeric = (s(unravel(flat + eps * v)) - s(unravel(flat - eps * v))) / (2 * eps)
        return auto, numeric

    def numbers(flat, rest, mapper):
        th = unravel(flat)

        def s(th):
            return scalar(th, rest)

        out = {}
        if do & {"grad", "vjp"}:
            out["fd"] = mapper(lambda i: fd_element(flat, rest, i), jnp.asarray(elements))
        if "grad" in do:
            out["grad"] = ravel_pytree(jax.grad(s)(th))[0]
        if "vjp" in do:
            out["vjp"] = ravel_pytree(jax.vjp(lambda t: call(t, rest), th)[1](u)[0])[0]
        if "jvp" in do:
            out["jvp"] = mapper(lambda k: jvp_and_fd(flat, rest, k), jnp.arange(len(theta)))
        return out

    def python_map(fn, xs):
        results = [fn(x) for x in xs]
        return jax.tree_util.tree_map(lambda *r: jnp.stack(r), *results)

    def run(evaluate):
        try:
            return evaluate()
        except TypeError as err:
            if "jvp" not in do or "forward-mode" not in str(err):
                raise
            skipped["jvp"] = str(err).splitlines()[0]  # e.g. jax.custom_vjp forbids it
            do.discard("jvp")
            return evaluate()

    result = None
    if jit:  # one compiled program computes every number; lax.map keeps memory flat
        try:
            # a fresh jit per attempt, so that a retry without jvp is traced anew
            result = run(
                lambda: _jit(lambda flat, rest: numbers(flat, rest, jax.lax.map))(flat0, rest0)
            )
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            result = None  # a function that needs concrete values: run it eagerly
    if result is None:
        result = run(lambda: numbers(flat0, rest0, python_map))
    result = jax.tree_util.tree_map(np.asarray, result)

    fpaths = [paths[k] for k in float_idx]
    shapes = [np.shape(t) for t in theta]
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in picks])])
    rows: list[LeafCheck] = []
    if "fd" in result:
        numeric = [result["fd"][a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        for mode in ("grad", "vjp"):
            if mode in result:
                auto = [result[mode][a : a + n] for a, n in zip(offsets[:-1], sizes)]
                rows += _elementwise_rows(mode, auto, numeric, picks, fpaths, shapes, rtol, atol)
    if "jvp" in result:
        autos, nums = result["jvp"]
        for k, n in enumerate(sizes):
            rows.append(_row("jvp", fpaths[k], None, autos[k], nums[k], rtol, atol, n))
    return GradCheckReport(rows=rows, rtol=rtol, atol=atol, eps=eps, skipped=skipped)


# -------------------------------------------------------------------------- compare


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


# ---------------------------------------------------------------------- per_example


def per_example(loss: Callable[[Any, Any], jax.Array], params: Any, batch: Any) -> Any:
    """One gradient per example: ``gᵢ = ∇_θ loss(θ, batchᵢ)``, computed with ``jax.vmap``.

    Each example is given to ``loss`` as a batch of one (its leading axis kept, of size 1),
    so any loss written for batches works. The mean of the ``gᵢ`` is the gradient of the
    mean loss, ``∇_θ (1/n) Σᵢ lᵢ``; the individual ``gᵢ`` are what per-example clipping
    (DP-SGD), influence estimates and gradient-noise studies need.

    Args:
      loss: ``loss(params, batch) -> scalar``, e.g. ``lambda p, b: mse(apply(p, b[0]), b[1])``.
      params: a pytree.
      batch: a pytree of arrays sharing a leading axis of ``n`` examples, e.g. ``(x, y)``.

    Returns:
      a pytree like ``params`` with an extra leading axis ``n``.

    >>> import jax.numpy as jnp
    >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> per_example(loss, jnp.zeros(2), (jnp.ones((5, 2)), jnp.ones(5))).shape
    (5, 2)
    """
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves or any(np.ndim(x) == 0 for x in leaves):
        raise ValueError(
            "per_example: batch must be a pytree of arrays with a leading example axis"
        )
    n = {np.shape(x)[0] for x in leaves}
    if len(n) != 1:
        raise ValueError(
            f"per_example: every batch leaf needs the same leading size, got {sorted(n)}"
        )
    grad = jax.grad(loss)

    def one(example):
        return grad(params, jax.tree_util.tree_map(lambda a: a[None], example))

    return jax.vmap(one)(batch)
