"""``check_grads``: jax's derivatives against central finite differences, in float64.

The check in three steps, each in its own module: ``probe`` chooses the leaves ``θ``, the
cotangent ``u`` and the elements; ``finite_differences`` computes the estimates beside
``jax.grad``, ``jax.vjp`` and ``jax.jvp``; ``report`` compares them and writes the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import checks
from .finite_differences import Estimates, compute
from .probe import Probe, cotangent, pick_elements, to_float64
from .report import GradCheckReport, report_rows

__all__ = ["MODES", "check_grads"]

MODES = ("grad", "vjp", "jvp")


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
    checks.function(f, "check_grads: f")
    args, nums = _arguments(args, argnums)
    modes = _modes(modes)
    eps = checks.number(eps, "check_grads: eps")
    if not eps > 0:
        raise ValueError(f"check_grads: eps must be > 0, got {eps!r}")
    rtol = checks.number(rtol, "check_grads: rtol", low=0)
    atol = checks.number(atol, "check_grads: atol", low=0)
    max_elements = checks.positive_int(max_elements, "check_grads: max_elements", allow_none=True)
    with jax.enable_x64(True):
        report = _check(f, args, nums, modes, eps, rtol, atol, max_elements, key, jit)
    if raise_on_failure:
        report.assert_ok()
    return report


def _arguments(args: Any, argnums: Any) -> tuple[tuple, tuple[int, ...]]:
    """``args`` as a tuple and ``argnums`` as the sorted non-negative indices into it."""
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"check_grads: args must be a tuple of arguments, e.g. (params,), got "
            f"{type(args).__name__}"
        )
    args = tuple(args)
    nums = tuple(argnums) if isinstance(argnums, Iterable) else (argnums,)
    if not nums or any(not checks.is_int(i) or not -len(args) <= i < len(args) for i in nums):
        raise ValueError(
            f"check_grads: argnums must index into the {len(args)} args, got {argnums!r}"
        )
    return args, tuple(sorted({int(i) % len(args) for i in nums}))


def _modes(modes: Sequence[str]) -> tuple[str, ...]:
    """``modes`` as a tuple, each one of :data:`MODES`."""
    if isinstance(modes, str) or not modes:
        raise ValueError(f"check_grads: modes must be a non-empty subset of {MODES}, got {modes!r}")
    return tuple(checks.one_of(m, MODES, "check_grads: modes") for m in modes)


def _check(f, args, nums, modes, eps, rtol, atol, max_elements, key, jit) -> GradCheckReport:
    """The check itself, inside ``jax.enable_x64``: probe, estimate, compare."""
    probe = Probe.of(f, jax.tree_util.tree_map(to_float64, args), nums)
    rng = np.random.default_rng(key)
    cot, u = cotangent(probe, rng)
    theta = probe.theta
    flat, unravel = ravel_pytree(theta)
    sizes = [int(np.size(t)) for t in theta]
    picks = pick_elements(sizes, max_elements, rng)
    est = Estimates.build(probe, cot, u, unravel, sizes, picks, eps, key)
    numbers, skipped = compute(est, flat, modes, jit)
    shapes = [np.shape(t) for t in theta]
    rows = report_rows(numbers, picks, sizes, probe.paths, shapes, rtol, atol)
    return GradCheckReport(rows=rows, rtol=rtol, atol=atol, eps=eps, skipped=skipped)
