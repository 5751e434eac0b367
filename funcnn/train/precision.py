"""Mixed precision: a policy record, :class:`Precision`, and dynamic loss scaling.

Under a policy with compute dtype ``c`` (``bfloat16`` or ``float16``) a training step keeps
the params and the optimizer state in float32, and inside the differentiated function casts
the params and the floating inputs to ``c``; the model runs in ``c``, its outputs are cast
back to float32 before the loss, so the loss and its reduction are float32, and the
gradients (of float32 params) come back in float32.

float16 has a narrow range (largest finite value 65504, smallest normal 6·10⁻⁵), so its
policy scales the loss: the step differentiates ``S · L`` and divides the gradients by
``S``. If a gradient is not finite the update is skipped (params and optimizer state
unchanged) and ``S`` halves; after ``growth_interval`` finite steps in a row ``S`` doubles.
``(S, good_steps)`` lives in the optimizer state (:class:`LossScaleState`, made by
:func:`loss_scaled`), so ``fit`` checkpoints and resumes it with the rest.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .. import checks

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Precision:
    """A mixed-precision policy: the dtype the forward and backward pass compute in.

    Params, optimizer state, the loss and its reduction stay float32. ``compute="float16"``
    turns on dynamic loss scaling: ``loss_scale`` is the first scale ``S``, doubled after
    ``growth_interval`` finite steps in a row and halved (down to 1) at each skipped step.

    >>> Precision("bfloat16").scaling, Precision("float16").scaling
    (False, True)
    >>> Precision("float8")
    Traceback (most recent call last):
    ...
    ValueError: Precision: compute must be one of ('float32', 'bfloat16', 'float16'), got 'float8'
    """

    compute: str = "bfloat16"
    loss_scale: float = 2.0**15
    growth_interval: int = 2000

    def __post_init__(self):
        checks.one_of(self.compute, COMPUTE_DTYPES, "Precision: compute")
        scale = checks.number(self.loss_scale, "Precision: loss_scale", low=1)
        interval = checks.positive_int(self.growth_interval, "Precision: growth_interval")
        object.__setattr__(self, "loss_scale", scale)
        object.__setattr__(self, "growth_interval", interval)

    @property
    def scaling(self) -> bool:
        """Whether the policy scales the loss (float16 does)."""
        return self.compute == "float16"

    @property
    def dtype(self) -> Any:
        """The compute dtype, as a NumPy dtype."""
        return jnp.dtype(self.compute)

    def cast(self, tree: Any) -> Any:
        """The floating leaves of ``tree`` in the compute dtype; other leaves as they are."""
        return cast_floating(tree, self.dtype)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating leaves cast to ``dtype`` (integers, keys untouched).

    >>> out = cast_floating({"w": jnp.ones(2), "n": jnp.arange(2)}, jnp.bfloat16)
    >>> out["w"].dtype, out["n"].dtype
    (dtype(bfloat16), dtype('int32'))
    """

    def cast(leaf):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return jnp.asarray(leaf).astype(dtype)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


def check_precision(value: Any, who: str) -> Precision | None:
    """``precision`` as a :class:`Precision` (a dtype name stands for ``Precision(name)``),
    or ``None``.

    >>> check_precision("float16", "fit").scaling
    True
    >>> check_precision("half", "fit")
    Traceback (most recent call last):
    ...
    ValueError: fit: precision must be one of ('float32', 'bfloat16', 'float16'), got 'half'
    """
    if value is None or isinstance(value, Precision):
        return value
    if isinstance(value, str):
        return Precision(checks.one_of(value, COMPUTE_DTYPES, f"{who}: precision"))
    raise TypeError(f"{who}: precision must be a Precision or a dtype name, got {value!r}")


class LossScaleState(NamedTuple):
    """The optimizer state under float16 loss scaling: the scale ``S``, the number of finite
    steps in a row, and the wrapped optimizer's state.

    >>> LossScaleState(jnp.float32(4.0), jnp.int32(0), ())._fields
    ('scale', 'good_steps', 'inner')
    """

    scale: jax.Array
    good_steps: jax.Array
    inner: Any


def _finite(tree: Any) -> jax.Array:
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


@functools.lru_cache(maxsize=32)
def loss_scaled(
    optimizer: optax.GradientTransformation, policy: Precision
) -> optax.GradientTransformation:
    """``optimizer`` with dynamic loss scaling: its state is a :class:`LossScaleState`.

    ``update`` takes the gradients already divided by ``S``. When one is not finite the
    updates are zeros and the inner state is kept; ``S`` halves (down to 1) and the count
    restarts; after ``policy.growth_interval`` finite steps in a row ``S`` doubles.

    >>> opt = loss_scaled(optax.sgd(0.1), Precision("float16", loss_scale=8.0))
    >>> s = opt.init({"w": jnp.ones(2)})
    >>> u, s = opt.update({"w": jnp.array([1.0, jnp.inf])}, s)
    >>> u["w"].tolist(), float(s.scale)
    ([0.0, 0.0], 4.0)
    """

    def init(params):
        scale = jnp.asarray(policy.loss_scale, jnp.float32)
        return LossScaleState(scale, jnp.asarray(0, jnp.int32), optimizer.init(params))

    def update(grads, state, params=None):
        ok = _finite(grads)
        updates, inner = optimizer.update(grads, state.inner, params)
        updates = jax.tree_util.tree_map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), updates)
        inner = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), inner, state.inner)
        count = jnp.where(ok, state.good_steps + 1, 0)
        grow = count >= policy.growth_interval
        scale = jnp.where(grow, state.scale * 2, state.scale)
        scale = jnp.where(ok, scale, jnp.maximum(state.scale / 2, 1.0))
        return updates, LossScaleState(scale, jnp.where(grow, 0, count), inner)

    return optax.GradientTransformation(init, update)


def scaled_opt_state(policy: Precision | None, opt_state: Any) -> Any:
    """A plain optimizer state wrapped in a :class:`LossScaleState` with the first scale,
    when ``policy`` scales the loss; anything else as it is.

    >>> s = scaled_opt_state(Precision("float16", loss_scale=2.0), ())
    >>> float(s.scale), int(s.good_steps)
    (2.0, 0)
    """
    if policy is None or not policy.scaling or opt_state is None:
        return opt_state
    if isinstance(opt_state, LossScaleState):
        return opt_state
    scale = jnp.asarray(policy.loss_scale, jnp.float32)
    return LossScaleState(scale, jnp.asarray(0, jnp.int32), opt_state)


def mixed_objective(apply, loss, policy: Precision, state, x, y, key):
    """``objective(params, scale) -> (scale · L, (L, outputs, new_state))`` with the model
    run in the compute dtype and the loss in float32 (``new_state`` in ``state``'s dtypes).
    """
    x_c = policy.cast(x)

    def objective(params, scale):
        out, new_state = apply(policy.cast(params), state, x_c, key=key, train=True)
        out = cast_floating(out, jnp.float32)
        new_state = jax.tree_util.tree_map(
            lambda n, o: n.astype(jnp.result_type(o)), new_state, state
        )
        value = loss(out, y)
        return value * scale, (value, out, new_state)

    return objective
