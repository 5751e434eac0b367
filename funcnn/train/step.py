"""The pure training step, its non-finite guard, and :func:`train_step`.

One step on a batch ``(x, y)`` computes ``L(θ) = loss(apply(θ, x, key=k, train=True), y)``,
its gradient ``g = ∇_θ L`` with ``jax.grad``, and the optimizer's update
``updates, s ← optimizer.update(g, s, θ)``, ``θ ← θ + updates`` (for ``optax.sgd(α)``:
``θ − α g``). The guard checks that ``L``, ``g`` and the new ``θ`` are all finite.

A model with state (BatchNorm's running statistics) computes its outputs and new state
together, ``(z, σ') = apply(θ, σ, x, train=True)``; ``σ'`` is carried out of the step
beside ``θ``, never differentiated and never seen by the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import checks, compiler
from ..core import Layer
from ..core.layer import stateful_path
from .model import Metrics, stateful_apply
from .precision import Precision, check_precision, loss_scaled, mixed_objective, scaled_opt_state

# on_nonfinite: stop with a NonFiniteError, drop the step, or apply every update unchecked
GUARDS = ("raise", "skip", "ignore")


class NonFiniteError(FloatingPointError):
    """:func:`fit` met a non-finite loss, gradient or updated params.

    ``epoch`` and ``step`` (both counted from 0) locate the first bad step; ``params`` and
    ``opt_state`` are the last finite ones, from just before that step. There always are
    some: ``fit`` refuses to start from params that are not finite (a ``ValueError`` naming
    the first non-finite leaf, see :func:`check_finite_start`).

    >>> err = NonFiniteError("fit: non-finite loss", epoch=0, step=3, params={}, opt_state=())
    >>> err.epoch, err.step, isinstance(err, FloatingPointError)
    (0, 3, True)
    """

    def __init__(
        self,
        message: str,
        *,
        epoch: int,
        step: int,
        params: Any,
        opt_state: Any,
        state: Any = None,
    ):
        super().__init__(message)
        self.epoch, self.step, self.params, self.opt_state = epoch, step, params, opt_state
        self.state = state  # the model's state (BatchNorm's statistics) just before the step


def raise_at_first_nonfinite(
    finite, epoch: int, first: int, params: Any, opt_state: Any, state: Any = None
):
    """Raise :class:`NonFiniteError` if a flag of steps ``first, first + 1, ...`` is False.

    The error names step ``first + i`` for the first ``i`` with ``finite[i]`` False;
    ``params``, ``opt_state`` and the model's ``state`` are those from just before it.
    """
    finite = np.asarray(finite, bool)
    if finite.all():
        return
    bad = first + int(np.argmin(finite))
    raise NonFiniteError(
        f"fit: non-finite loss, gradient or params at epoch {epoch}, step {bad} "
        f"(counted from 0); the update was not applied. Lower the learning "
        f"rate, check the data, or pass on_nonfinite='skip'",
        epoch=epoch,
        step=bad,
        params=params,
        opt_state=opt_state,
        state=state,
    )


def check_finite_start(params: Any, state: Any, guard: str) -> None:
    """Refuse to train from ``params`` (or a model ``state``) holding a ``nan`` or ``inf``.

    Under a guard (``"raise"``, ``"skip"``) no update from such params is ever applied: the
    run could not move, and a :class:`NonFiniteError` would have no finite params to carry.
    So ``fit`` raises a ``ValueError`` before the first step instead, naming the first
    non-finite leaf. ``"ignore"`` checks nothing. One compiled reduction, one host read.

    >>> import jax.numpy as jnp
    >>> check_finite_start({"w": jnp.ones(2)}, {}, "raise")
    >>> check_finite_start({"w": jnp.array([1.0, jnp.nan])}, {}, "raise")
    Traceback (most recent call last):
    ...
    ValueError: fit: the params to train from are not finite: params['w'] holds nan or inf. ...
    """
    if guard == "ignore":
        return
    for what, tree in (("params", params), ("state", state)):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        flags = np.asarray(jax.device_get(_finite_leaves([leaf for _, leaf in flat])), bool)
        if not flags.all():
            where = what + jax.tree_util.keystr(flat[int(np.argmin(flags))][0])
            raise ValueError(
                f"fit: the {what} to train from are not finite: {where} holds nan or inf. No "
                f"step could be applied from them, and there would be no finite {what} to fall "
                "back on: initialize them again (model.init), load a good checkpoint, or pass "
                "on_nonfinite='ignore' to train unchecked"
            )


@jax.jit
def _finite_leaves(leaves: list) -> jax.Array:
    """``[all(isfinite(leaf)) for leaf in leaves]`` (True for leaves that are not inexact)."""
    flags = [
        jnp.all(jnp.isfinite(leaf)) if jnp.issubdtype(leaf.dtype, jnp.inexact) else True
        for leaf in leaves
    ]
    return jnp.stack([jnp.asarray(f) for f in flags]) if flags else jnp.ones(0, bool)


def all_finite(*trees) -> jax.Array:
    """``True`` when every inexact leaf of every tree is finite."""
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree_util.tree_leaves(trees)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def make_step(
    apply: Callable,
    loss: Callable,
    optimizer,
    metrics: Metrics,
    guard: str = "ignore",
    precision: Precision | None = None,
) -> Callable:
    """``step(params, state, opt_state, x, y, key, live)
    -> (params, state, opt_state, logs, finite, live)``, for ``apply`` in its
    state-threading form (:func:`~funcnn.train.model.stateful_apply`).

    With a guard, the update is applied only when ``finite`` (loss, gradients, new params
    and new state all finite) and ``live``; ``"raise"`` makes ``live`` sticky, so after the first
    bad step the params stay the last finite ones. ``"flag"`` only reports ``finite`` and
    applies every update: the caller replays up to the first bad step instead (cheaper
    inside a scan than a select on every leaf at every step).

    Under a ``precision`` policy the model computes in its dtype (:mod:`.precision`). With
    float16's loss scaling ``optimizer`` must be :func:`~.precision.loss_scaled` (it skips
    a step with non-finite gradients on purpose), and ``finite`` covers the new params and
    state only: a step skipped by the loss scaling counts as handled, not as non-finite.
    """
    gradients = _plain_gradients if precision is None else _mixed_gradients(precision)

    def step(params, state, opt_state, x, y, key, live=True):
        value, out, new_state, grads = gradients(apply, loss, params, state, opt_state, x, y, key)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        logs = {"loss": value}
        for name, fn in metrics.items():
            logs[name] = fn(jax.lax.stop_gradient(out), y)
        new = (new_params, new_state, new_opt_state)
        if guard == "ignore":
            return (*new, logs, jnp.asarray(True), live)
        if precision is not None and precision.scaling:
            finite = all_finite(new_params, new_state)
        else:
            finite = all_finite(value, grads, new_params, new_state)
        if guard == "flag":
            return (*new, logs, finite, live)
        take = finite & live
        kept = jax.tree_util.tree_map(
            lambda a, b: jnp.where(take, a, b), new, (params, state, opt_state)
        )
        live = take if guard == "raise" else live
        return (*kept, logs, finite, live)

    return step


def _plain_gradients(apply, loss, params, state, opt_state, x, y, key):
    """``(L, outputs, new_state, ∇L)`` in the params' own dtype."""

    def objective(p):
        out, new_state = apply(p, state, x, key=key, train=True)
        return loss(out, y), (out, new_state)

    (value, (out, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return value, out, new_state, grads


def _mixed_gradients(policy: Precision) -> Callable:
    """:func:`_plain_gradients` under ``policy``: the model in the compute dtype, the loss
    in float32, the loss scaled by ``S`` (read from the optimizer state) under float16."""

    def gradients(apply, loss, params, state, opt_state, x, y, key):
        scale = opt_state.scale if policy.scaling else jnp.float32(1)
        objective = mixed_objective(apply, loss, policy, state, x, y, key)
        (_, (value, out, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            params, scale
        )
        if policy.scaling:
            grads = jax.tree_util.tree_map(lambda g: g / scale, grads)
        return value, out, new_state, grads

    return gradients


def train_step(
    apply: Callable,
    loss: Callable,
    optimizer: optax.GradientTransformation,
    *,
    metrics: Metrics | None = None,
    jit: bool = True,
    donate: bool = False,
    mesh: Any = None,
    precision: Precision | str | None = None,
) -> Callable:
    """Build the training step ``(params, opt_state, batch, key) -> (params, opt_state, metrics)``.

    For ``batch = (x, y)`` it computes ``L = loss(apply(params, x, key=key, train=True), y)``,
    the gradient ``g = ∇_θ L`` and ``updates, opt_state = optimizer.update(g, opt_state,
    params)``; then ``params ← params + updates`` (for ``optax.sgd(α)``: ``θ − α g``).
    ``metrics`` always holds ``"loss"`` and each named metric of the outputs.

    Args:
      apply: a model's apply function (or the model itself).
      loss: ``loss(outputs, targets) -> scalar``.
      optimizer: any optax transformation (SGD, Momentum, RMSProp, Adam, ...).
      metrics: extra ``name -> fn(outputs, targets)`` to report.
      jit: compile the step with ``jax.jit``.
      donate: let XLA reuse the buffers of ``params`` and ``opt_state`` (they must not be
        used after the call).
      mesh: a :class:`jax.sharding.Mesh`: split the batch over its ``"data"`` axis inside
        the step (see :mod:`funcnn.distributed`).
      precision: a mixed-precision policy, :class:`~funcnn.train.Precision` or a dtype
        name (``"bfloat16"``, ``"float16"``); ``None``: compute in the params' dtype. Under
        float16 the optimizer state carries the loss scale: pass ``opt.init(params)`` to the
        first call and the returned state after (it is wrapped on the first call).

    >>> import jax, optax
    >>> from funcnn import models, losses
    >>> model = models.logistic_regression()
    >>> _, params = model.init(jax.random.key(0), (-1, 2))
    >>> opt = optax.sgd(0.1)
    >>> step = train_step(model.apply, losses.binary_cross_entropy, opt)
    >>> x, y = jax.numpy.ones((4, 2)), jax.numpy.ones(4)
    >>> params, state, logs = step(params, opt.init(params), (x, y), None)
    >>> sorted(logs)
    ['loss']
    """
    check_optimizer(optimizer, "train_step")
    if isinstance(apply, Layer) and apply.stateful:
        raise ValueError(
            f"train_step: {stateful_path(apply)} keeps state; use train_step_with_state, "
            "whose step takes and returns the state beside the params"
        )
    inner, policy = _policy_step("train_step", apply, loss, optimizer, metrics, precision)

    def step(params, opt_state, batch, key=None):
        x, y = batch
        opt_state = scaled_opt_state(policy, opt_state)
        new_params, _, new_opt_state, logs = inner(params, {}, opt_state, x, y, key)[:4]
        return new_params, new_opt_state, logs

    return _compiled(step, mesh, jit, (0, 1) if donate else ())


def train_step_with_state(
    model: Layer,
    loss: Callable,
    optimizer: optax.GradientTransformation,
    *,
    metrics: Metrics | None = None,
    jit: bool = True,
    donate: bool = False,
    mesh: Any = None,
    precision: Precision | str | None = None,
) -> Callable:
    """:func:`train_step` for a model with state (BatchNorm):
    ``(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)``.

    The outputs and the new state come together from
    ``(z, σ') = model.apply_with_state(θ, σ, x, key=key, train=True)``; the gradient is that
    of ``L(θ) = loss(z, y)`` with ``σ`` held fixed, and ``σ'`` is returned beside the updated
    params. A stateless model's state is ``{}`` and passes through.

    Args:
      model: a :class:`~funcnn.core.Layer` (stateful or not) or a plain apply function.
      loss: ``loss(outputs, targets) -> scalar``.
      optimizer: any optax transformation; it sees the params only.
      metrics: extra ``name -> fn(outputs, targets)`` to report.
      jit: compile the step.
      donate: let XLA reuse the buffers of ``params``, ``state`` and ``opt_state``.
      mesh: a :class:`jax.sharding.Mesh`: split the batch over its ``"data"`` axis; the
        batch statistics are still those of the whole batch.
      precision: a mixed-precision policy, as for :func:`train_step`.

    >>> import jax, optax
    >>> from funcnn import core, layers, losses
    >>> model = core.serial(layers.Dense(3), layers.BatchNorm(), layers.Dense(2))
    >>> _, params, state = model.init_with_state(jax.random.key(0), (-1, 2))
    >>> opt = optax.sgd(0.1)
    >>> step = train_step_with_state(model, losses.softmax_cross_entropy, opt)
    >>> x, y = jax.numpy.ones((4, 2)), jax.numpy.array([0, 1, 0, 1])
    >>> params, state, opt_state, logs = step(params, state, opt.init(params), (x, y))
    >>> sorted(state["batch_norm_0"]), sorted(logs)
    (['mean', 'var'], ['loss'])
    """
    check_optimizer(optimizer, "train_step_with_state")
    inner, policy = _policy_step(
        "train_step_with_state", model, loss, optimizer, metrics, precision
    )

    def step(params, state, opt_state, batch, key=None):
        x, y = batch
        opt_state = scaled_opt_state(policy, opt_state)
        return inner(params, state, opt_state, x, y, key)[:4]

    return _compiled(step, mesh, jit, (0, 1, 2) if donate else (), batch_argnums=(3,))


def _policy_step(
    who: str, model, loss, optimizer, metrics, precision
) -> tuple[Callable, Precision | None]:
    """``who``'s metrics and precision checked, and :func:`make_step` without a guard for
    ``model``, the optimizer loss-scaled under float16: ``(step, policy)``."""
    metrics = checks.named_functions(metrics or {}, f"{who}: metrics")
    policy = check_precision(precision, who)
    if policy is not None and policy.scaling:
        optimizer = loss_scaled(optimizer, policy)
    return make_step(stateful_apply(model), loss, optimizer, metrics, precision=policy), policy


def check_optimizer(optimizer: Any, who: str) -> None:
    """``optimizer`` is an optax transformation (it has ``init`` and ``update``)."""
    if not hasattr(optimizer, "update") or not hasattr(optimizer, "init"):
        raise TypeError(f"{who}: optimizer must be an optax transformation, got {optimizer!r}")


def _compiled(step: Callable, mesh: Any, jit: bool, donate: tuple, batch_argnums=(2,)):
    if mesh is not None:
        from .. import distributed

        step = distributed.data_parallel(step, mesh, batch_argnums=batch_argnums)
    return compiler.jit(step, donate_argnums=donate) if jit else step
