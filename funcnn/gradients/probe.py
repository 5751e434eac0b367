"""What a gradient check probes: the leaves ``θ``, the cotangent ``u`` and the elements.

``θ`` are the float leaves of the differentiated arguments, each named by its path;
``u`` makes any output a scalar ``s(θ) = ⟨u, f(θ)⟩`` (``u = 1`` for a scalar output, a
fixed standard-normal draw otherwise); and of a leaf of ``n`` elements at most
``max_elements``, drawn without replacement, are compared one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .report import path_str

__all__ = ["Probe"]


def is_float(x: Any) -> bool:
    """``x`` is an array of a floating dtype."""
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def to_float64(x: Any) -> Any:
    """A float (array or scalar) as a float64 array; ints, bools and the rest unchanged."""
    if isinstance(x, (bool, np.bool_)) or (hasattr(x, "dtype") and not is_float(x)):
        return x
    if isinstance(x, (int, np.integer)):
        return x
    if isinstance(x, (float, np.floating)) or is_float(x):
        return jnp.asarray(x, jnp.float64)
    return x


@dataclass(frozen=True, eq=False)
class Probe:
    """``f`` seen as a function of ``θ``, the float leaves of the differentiated arguments.

    Fields: ``f``; ``leaves`` (every leaf of the arguments) and their ``treedef``;
    ``theta_at`` (where the leaves of ``θ`` sit among them); ``rest_at`` (the other array
    leaves, passed as arguments so that jit traces them instead of baking them in);
    ``paths`` (a name per leaf of ``θ``: ``"hidden_0/w"`` for one differentiated argument,
    ``"arg1/hidden_0/w"`` for several).

    >>> import jax.numpy as jnp
    >>> probe = Probe.of(lambda p, x: x @ p["w"], ({"w": jnp.ones(2)}, jnp.ones(2)), (0,))
    >>> probe.paths, probe.call(probe.theta, probe.rest).tolist()
    (('w',), 2.0)
    """

    f: Callable[..., Any]
    leaves: tuple[Any, ...]
    treedef: Any
    theta_at: tuple[int, ...]
    rest_at: tuple[int, ...]
    paths: tuple[str, ...]

    @classmethod
    def of(cls, f: Callable[..., Any], args: tuple, nums: Sequence[int]) -> Probe:
        """Sort the leaves of ``args`` into ``θ`` (float leaves of ``args[i]``, ``i`` in
        ``nums``) and the rest."""
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(args)
        theta_at, rest_at, paths = [], [], []
        for k, (p, leaf) in enumerate(with_paths):
            if p[0].idx in nums and is_float(leaf):
                theta_at.append(k)
                inner = path_str(p[1:]) if len(p) > 1 else ""
                head = f"arg{p[0].idx}"
                paths.append(inner if len(nums) == 1 and inner else f"{head}/{inner}".rstrip("/"))
            elif isinstance(leaf, (jax.Array, np.ndarray)):
                rest_at.append(k)
        if not theta_at:
            raise ValueError("check_grads: the differentiated arguments have no float leaves")
        leaves = tuple(leaf for _, leaf in with_paths)
        return cls(f, leaves, treedef, tuple(theta_at), tuple(rest_at), tuple(paths))

    @property
    def theta(self) -> list[Any]:
        return [self.leaves[k] for k in self.theta_at]

    @property
    def rest(self) -> list[Any]:
        return [self.leaves[k] for k in self.rest_at]

    def call(self, theta: Sequence[Any], rest: Sequence[Any]) -> Any:
        """``f(*args)`` with the leaves of ``θ`` and the other arrays put back."""
        full = list(self.leaves)
        for k, leaf in zip(self.theta_at, theta):
            full[k] = leaf
        for k, leaf in zip(self.rest_at, rest):
            full[k] = leaf
        return self.f(*jax.tree_util.tree_unflatten(self.treedef, full))


def cotangent(probe: Probe, rng: np.random.Generator) -> tuple[list[jax.Array], Any]:
    """``u``, as its leaves and as a pytree like ``f``'s output: ``1`` for a scalar output,
    else a standard-normal draw from ``rng`` in the output's shapes and dtypes."""
    try:
        out = jax.eval_shape(probe.call, probe.theta, probe.rest)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        out = probe.call(probe.theta, probe.rest)  # f needs concrete values
    out_leaves, out_def = jax.tree_util.tree_flatten(out)
    if len(out_leaves) == 1 and np.ndim(out_leaves[0]) == 0:
        cot = [jnp.ones((), jnp.result_type(out_leaves[0]))]
    else:
        cot = [
            jnp.asarray(rng.standard_normal(np.shape(o)), jnp.result_type(o)) for o in out_leaves
        ]
    return cot, jax.tree_util.tree_unflatten(out_def, cot)


def pick_elements(
    sizes: Sequence[int], max_elements: int | None, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per leaf of ``n`` elements, the sorted flat indices to check: all ``n`` of them, or
    ``max_elements`` drawn without replacement from ``rng`` when ``n`` is larger."""
    picks = []
    for n in sizes:
        if max_elements is None or n <= max_elements:
            picks.append(np.arange(n))
        else:
            picks.append(np.sort(rng.choice(n, size=max_elements, replace=False)))
    return picks
