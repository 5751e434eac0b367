"""The numbers a gradient check compares: central differences beside jax's derivatives.

With ``θ`` flattened to one vector and ``s(θ) = ⟨u, f(θ)⟩``:

* ``fd``: ``(s(θ + h eᵢ) − s(θ − h eᵢ)) / 2h`` for every checked element ``i``;
* ``grad``: ``jax.grad(s)(θ)``; ``vjp``: ``jax.vjp(f, θ)[1](u)``;
* ``jvp``: for each leaf ``k``, ``jax.jvp(s, θ, v)`` and ``(s(θ + h v) − s(θ − h v)) / 2h``
  along a random unit direction ``v`` inside that leaf.

One compiled program computes them all (``lax.map`` over the elements keeps memory flat);
a function that needs concrete values runs eagerly instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..compiler import jit as compile_jit
from .probe import Probe

__all__ = ["Estimates"]


@dataclass(frozen=True, eq=False)
class Estimates:
    """What one check evaluates, for ``θ`` flattened to the vector ``flat``.

    Fields: ``probe`` (the function and its leaves); ``cot`` and ``u`` (the cotangent, as
    leaves and as a pytree); ``unravel`` (``flat`` back to the leaves of ``θ``); ``eps``
    (the step ``h``); ``elements`` (the checked flat indices); ``starts`` / ``stops``
    (where each leaf sits in ``flat``); ``key`` (of the random directions).

    >>> import jax, jax.numpy as jnp
    >>> from jax.flatten_util import ravel_pytree
    >>> probe = Probe.of(lambda w: jnp.sum(w**2), (jnp.array([1.0, 3.0]),), (0,))
    >>> flat, unravel = ravel_pytree(probe.theta)
    >>> est = Estimates.build(probe, [jnp.ones(())], 1.0, unravel, [2], [[0, 1]], 0.5, 0)
    >>> out = est.numbers(flat, [], {"grad"}, jax.lax.map)  # exact for a quadratic, any h
    >>> out["fd"].tolist(), out["grad"].tolist()
    ([2.0, 6.0], [2.0, 6.0])
    """

    probe: Probe
    cot: list[jax.Array]
    u: Any
    unravel: Callable[[jax.Array], Any]
    eps: float
    elements: jax.Array
    starts: jax.Array
    stops: jax.Array
    key: jax.Array

    @classmethod
    def build(cls, probe, cot, u, unravel, sizes, picks, eps, key) -> Estimates:
        """From the leaves' ``sizes`` and the ``picks`` (flat indices within each leaf)."""
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        elements = np.concatenate([off + sel for off, sel in zip(offsets, picks)])
        return cls(
            probe,
            cot,
            u,
            unravel,
            eps,
            jnp.asarray(elements.astype(np.int32)),
            jnp.asarray(offsets[:-1]),
            jnp.asarray(offsets[1:]),
            jax.random.key(key),
        )

    def s(self, theta: Any, rest: Sequence[Any]) -> jax.Array | int:
        """``s(θ) = Σ ⟨u, f(θ)⟩`` over the output's leaves (``0`` if it has none)."""
        out = jax.tree_util.tree_leaves(self.probe.call(theta, rest))
        return sum(jnp.sum(a * c) for a, c in zip(out, self.cot))

    def central(self, flat: jax.Array, rest: Sequence[Any], i: jax.Array) -> jax.Array | float:
        """``(s(θ + h eᵢ) − s(θ − h eᵢ)) / 2h``."""
        up = self.s(self.unravel(flat.at[i].add(self.eps)), rest)
        down = self.s(self.unravel(flat.at[i].add(-self.eps)), rest)
        return (up - down) / (2 * self.eps)

    def direction(self, k: jax.Array, like: jax.Array) -> jax.Array:
        """A random unit vector ``v`` of ``like``'s shape, zero outside leaf ``k``."""
        position = jnp.arange(like.size)
        inside = (position >= self.starts[k]) & (position < self.stops[k])
        v = jax.random.normal(jax.random.fold_in(self.key, k), like.shape, like.dtype)
        v = jnp.where(inside, v, 0.0)
        return v / jnp.linalg.norm(v)

    def along(self, flat: jax.Array, rest: Sequence[Any], k: jax.Array):
        """``(jax.jvp(s, θ, v), (s(θ + h v) − s(θ − h v)) / 2h)`` for ``v`` in leaf ``k``."""

        def s(theta):
            return self.s(theta, rest)

        v = self.direction(k, flat)
        auto = jax.jvp(s, (self.unravel(flat),), (self.unravel(v),))[1]
        numeric = s(self.unravel(flat + self.eps * v)) - s(self.unravel(flat - self.eps * v))
        return auto, numeric / (2 * self.eps)

    def numbers(self, flat, rest, modes: set[str], mapper: Callable) -> dict[str, Any]:
        """The arrays of the ``modes`` asked, ``fd`` with ``grad`` or ``vjp``; ``mapper``
        maps a function over an index array (``jax.lax.map`` or a Python loop)."""
        theta = self.unravel(flat)
        out = {}
        if modes & {"grad", "vjp"}:
            out["fd"] = mapper(lambda i: self.central(flat, rest, i), self.elements)
        if "grad" in modes:
            out["grad"] = ravel(jax.grad(self.s)(theta, rest))
        if "vjp" in modes:
            vjp = jax.vjp(lambda t: self.probe.call(t, rest), theta)[1]
            out["vjp"] = ravel(vjp(self.u)[0])
        if "jvp" in modes:
            out["jvp"] = mapper(lambda k: self.along(flat, rest, k), jnp.arange(len(theta)))
        return out


def ravel(tree: Any) -> jax.Array:
    """A pytree's leaves as one flat vector."""
    return ravel_pytree(tree)[0]


def python_map(fn: Callable, xs: jax.Array) -> Any:
    """``jax.lax.map`` as a Python loop, for functions that cannot be traced."""
    results = [fn(x) for x in xs]
    return jax.tree_util.tree_map(lambda *r: jnp.stack(r), *results)


def dropping_jvp(evaluate: Callable, modes: set[str], skipped: dict[str, str]) -> Any:
    """``evaluate(modes)``; when forward mode is refused (``jax.custom_vjp`` forbids it),
    ``jvp`` leaves ``modes``, the reason goes into ``skipped``, and it runs again."""
    try:
        return evaluate(modes)
    except TypeError as err:
        if "jvp" not in modes or "forward-mode" not in str(err):
            raise
        skipped["jvp"] = str(err).splitlines()[0]
        modes.discard("jvp")
        return evaluate(modes)


def compute(
    est: Estimates, flat: jax.Array, modes: Sequence[str], jit: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The numbers of :meth:`Estimates.numbers` at ``flat`` as NumPy arrays, and the modes
    skipped with their reasons: compiled when ``jit`` and ``f`` allows, else eagerly."""
    rest = est.probe.rest
    wanted = set(modes)
    skipped: dict[str, str] = {}
    result = None
    if jit:
        # a fresh jit per attempt, so that a retry without jvp is traced anew
        def compiled(m):
            return compile_jit(lambda fl, r: est.numbers(fl, r, m, jax.lax.map))(flat, rest)

        try:
            result = dropping_jvp(compiled, wanted, skipped)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            result = None  # a function that needs concrete values: run it eagerly
    if result is None:
        result = dropping_jvp(lambda m: est.numbers(flat, rest, m, python_map), wanted, skipped)
    return jax.tree_util.tree_map(np.asarray, result), skipped
