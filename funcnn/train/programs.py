"""The compiled programs of an epoch, cached by their setup, and the data they run on.

Epoch ``e`` with key ``k`` and batch size ``B`` uses the key ``k_e = fold_in(k, e)``, visits
the ``n`` examples in the order ``perm_e = data.shuffle(fold_in(k_e, 0), n)`` (``0 .. n - 1``
without shuffling), and its step ``s`` trains on ``perm_e[s·B : (s + 1)·B]`` with the
dropout key ``fold_in(k_e, s + 1)``. Three programs compute this:

* ``order(k, e) -> (k_e, perm_e)``;
* ``loop_step``: one step, one dispatch (the loop mode, and a short last batch);
* ``scan_steps``: steps ``first .. first + length − 1`` as one ``lax.scan`` with the
  epoch's order fused in, the examples gathered in one go (or batch by batch, for
  training sets over :data:`PREGATHER_BYTES`).

They are built once per apply function, loss, optimizer, metrics, guard, shapes and
mixed-precision policy: a second ``fit`` with the same setup (a notebook re-run, a resumed
run) compiles nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import compiler
from .evaluation import EVAL_CHUNK, eval_logs
from .settings import Settings
from .sources import epoch_order
from .step import make_step

PREGATHER_BYTES = 256 * 2**20  # larger training sets are gathered batch by batch


class Programs(NamedTuple):
    """The compiled pieces of an epoch, shared by every ``fit`` call with the same setup."""

    order: Callable  # (key, epoch) -> (epoch_key, perm)
    loop_step: Callable  # one step on perm[s·B : s·B + size]
    scan_steps: Callable  # steps first .. first + length − 1 as one lax.scan
    epochs: Callable  # whole epochs with their validation, one dispatch, one packed result
    validate: Callable  # the validation chunks' means, packed
    batch_step: Callable  # one step on a batch from a source
    batch_scan: Callable  # a chunk of a source's batches, stacked, as one lax.scan


def loop_step_function(step: Callable, batch_size: int) -> Callable:
    """``loop_step(params, state, opt_state, live, xs, ys, perm, s, k_e, *, size)``: ``step``
    on the examples ``perm[s·B : s·B + size]`` with the key ``fold_in(k_e, s + 1)``."""

    def loop_step(params, state, opt_state, live, xs, ys, perm, s, epoch_key, *, size):
        idx = jax.lax.dynamic_slice_in_dim(perm, s * batch_size, size)
        key = jax.random.fold_in(epoch_key, s + 1)
        return step(params, state, opt_state, xs[idx], ys[idx], key, live)

    return loop_step


def scan_batches(scan_step, epoch_key, params, state, opt_state, xb, yb, first, batch=None):
    """Steps ``first, first + 1, ...`` on the batches ``(xb[i], yb[i])`` (or on
    ``batch(xb[i], yb[i])``) as one ``lax.scan``, step ``s`` with the key
    ``fold_in(k_e, s + 1)``: ``(params, state, opt_state, logs, finite)``, a row per step."""

    def body(carry, inp):
        p, st, o, live = carry
        xi, yi, s = inp
        if batch is not None:
            xi, yi = batch(xi, yi)
        key_s = jax.random.fold_in(epoch_key, s + 1)
        p, st, o, logs, finite, live = scan_step(p, st, o, xi, yi, key_s, live)
        return (p, st, o, live), (logs, finite)

    steps = first + jnp.arange(jax.tree_util.tree_leaves(xb)[0].shape[0])
    (params, state, opt_state, _), (logs, finite) = jax.lax.scan(
        body, (params, state, opt_state, jnp.asarray(True)), (xb, yb, steps)
    )
    return params, state, opt_state, logs, finite


def scan_steps_function(
    scan_step: Callable, order: Callable, batch_size: int, pregather: bool
) -> Callable:
    """``scan_steps(params, state, opt_state, xs, ys, key, e, first, *, length)``: steps
    ``first .. first + length − 1`` of epoch ``e`` as one ``lax.scan`` of ``scan_step``,
    returning ``(params, state, opt_state, logs, finite)`` with one row of logs per step."""

    def scan_steps(params, state, opt_state, xs, ys, key, epoch, first, *, length):
        # the epoch's shuffle fused into the same program; the segment's examples gathered
        # in one go (or batch by batch, for data too large to copy)
        epoch_key, perm = order(key, epoch)
        idx = jax.lax.dynamic_slice_in_dim(perm, first * batch_size, length * batch_size)
        idx = idx.reshape(length, batch_size)
        xb, yb = (xs[idx], ys[idx]) if pregather else (idx, idx)

        def batch(xi, yi):
            return (xi, yi) if pregather else (xs[xi], ys[yi])

        return scan_batches(scan_step, epoch_key, params, state, opt_state, xb, yb, first, batch)

    return scan_steps


def validation_chunks(evaluate: Callable, params, state, xv, yv, chunk: int) -> dict:
    """``{name: [m_c per chunk c]}``: ``evaluate`` on the chunks of ``chunk`` examples of
    ``(xv, yv)``, the full ones as one ``lax.map``, the short last one after it."""
    nv = xv.shape[0]
    full, rest = divmod(nv, chunk)
    parts = []
    if full:
        head = (xv[: full * chunk], yv[: full * chunk])
        head = jax.tree_util.tree_map(lambda a: a.reshape(full, chunk, *a.shape[1:]), head)
        parts.append(jax.lax.map(lambda b: evaluate(params, state, *b), head))
    if rest:
        tail = evaluate(params, state, xv[full * chunk :], yv[full * chunk :])
        parts.append(jax.tree_util.tree_map(lambda v: v[None], tail))
    return {k: jnp.concatenate([part[k] for part in parts]) for k in parts[0]}


def pack(*groups: dict) -> jax.Array:
    """One flat array of every value of every group, groups in order, names sorted in each
    (the epoch's one host read); :func:`unpack` splits it again."""
    values = [jnp.ravel(group[k]) for group in groups for k in sorted(group)]
    dtype = jnp.result_type(*values) if values else jnp.float32
    return jnp.concatenate([v.astype(dtype) for v in values]) if values else jnp.zeros(0)


def unpack(row: np.ndarray, *layout: tuple[list[str], int]) -> list[dict[str, np.ndarray]]:
    """The groups of :func:`pack` from ``layout``, one ``(names, length)`` per group.

    >>> unpack(np.arange(5.0), (["finite"], 1), (["loss", "accuracy"], 2))
    [{'finite': array([0.])}, {'accuracy': array([1., 2.]), 'loss': array([3., 4.])}]
    """
    groups, at = [], 0
    for names, length in layout:
        group = {}
        for name in sorted(names):
            group[name], at = row[at : at + length], at + length
        groups.append(group)
    return groups


def epochs_function(scan_steps: Callable, last_step: Callable, validate: Callable, n_full, short):
    """``epochs(params, state, opt_state, xs, ys, key, e, xv, yv, *, count)``: epochs
    ``e .. e + count − 1``, each its ``n_full`` full batches as one ``lax.scan``, a ``short``
    last batch, and the validation chunks (none when ``xv`` is ``None``); returns the triple
    after and one :func:`pack`-ed row per epoch: the finite flags, the steps' logs, the
    validation chunks' logs."""

    def one_epoch(params, state, opt_state, xs, ys, key, epoch, xv, yv):
        p, st, o, logs, finite = scan_steps(
            params, state, opt_state, xs, ys, key, epoch, 0, length=n_full
        )
        if short:
            p, st, o, last, ok, _ = last_step(p, st, o, xs, ys, key, epoch)
            logs = {k: jnp.concatenate([v, last[k][None]]) for k, v in logs.items()}
            finite = jnp.concatenate([finite, ok[None]])
        val = {} if xv is None else validate(p, st, xv, yv)
        return p, st, o, pack({"finite": finite}, logs, val)

    def epochs(params, state, opt_state, xs, ys, key, first, xv, yv, *, count):
        if count == 1:
            *trained, row = one_epoch(params, state, opt_state, xs, ys, key, first, xv, yv)
            return (*trained, row[None])

        def body(carry, epoch):
            *trained, row = one_epoch(*carry, xs, ys, key, epoch, xv, yv)
            return tuple(trained), row

        trained, rows = jax.lax.scan(body, (params, state, opt_state), first + jnp.arange(count))
        return (*trained, rows)

    return epochs


def build_programs(
    apply,
    loss,
    optimizer,
    metrics,
    guard,
    batch_size,
    n,
    shuffle,
    mesh,
    pregather=True,
    precision=None,
) -> Programs:
    """Compile (on first call) the programs of an epoch for this setup.

    ``metrics`` is a tuple of ``(name, fn)`` pairs, so that the setup can key a cache. The
    loop step and, unless ``guard == "raise"``, the scan and the whole epochs donate
    ``params``, the model's ``state`` and ``opt_state``.
    """
    step, scan_step = guarded_steps(apply, loss, optimizer, dict(metrics), guard, precision, mesh)

    def order(key, epoch):
        return epoch_order(key, epoch, n, shuffle)

    scan_steps = scan_steps_function(scan_step, order, batch_size, pregather)
    n_full, short = divmod(n, batch_size)
    flagged_step = loop_step_function(scan_step, batch_size)

    def last_step(params, state, opt_state, xs, ys, key, epoch):
        epoch_key, perm = order(key, epoch)
        live = jnp.asarray(True)
        return flagged_step(
            params, state, opt_state, live, xs, ys, perm, n_full, epoch_key, size=short
        )

    evaluate = eval_logs(apply, loss, dict(metrics))

    def validate(params, state, xv, yv):
        return pack(validation_chunks(evaluate, params, state, xv, yv, EVAL_CHUNK))

    whole = epochs_function(
        scan_steps,
        last_step,
        functools.partial(validation_chunks, evaluate, chunk=EVAL_CHUNK),
        n_full,
        short,
    )
    donate = () if guard == "raise" else (0, 1, 2)
    return Programs(
        compiler.jit(order),
        compiler.jit(
            loop_step_function(step, batch_size),
            static_argnames="size",
            donate_argnums=(0, 1, 2),
        ),
        compiler.jit(scan_steps, static_argnames="length", donate_argnums=donate),
        compiler.jit(whole, static_argnames="count", donate_argnums=donate),
        compiler.jit(validate),
        compiler.jit(batch_step_function(step), donate_argnums=(0, 1, 2)),
        compiler.jit(
            functools.partial(scan_batches, scan_step),
            donate_argnums=() if guard == "raise" else (1, 2, 3),
        ),
    )


def batch_step_function(step: Callable) -> Callable:
    """``batch_step(params, state, opt_state, live, x, y, s, k_e)``: ``step`` on the batch
    ``(x, y)`` with the key ``fold_in(k_e, s + 1)``."""

    def batch_step(params, state, opt_state, live, x, y, s, epoch_key):
        return step(params, state, opt_state, x, y, jax.random.fold_in(epoch_key, s + 1), live)

    return batch_step


def guarded_steps(apply, loss, optimizer, metrics: dict, guard: str, precision, mesh):
    """``(step, scan_step)``: the step with ``guard``, and the one a scan runs (in ``"raise"``
    mode it only flags non-finite steps; ``fit`` replays up to the first one), each split
    over ``mesh``'s ``"data"`` axis when there is one."""
    step = make_step(apply, loss, optimizer, metrics, guard, precision)
    scan_step = (
        make_step(apply, loss, optimizer, metrics, "flag", precision) if guard == "raise" else step
    )
    if mesh is not None:
        from .. import distributed

        step = distributed.data_parallel(step, mesh, batch_argnums=(3, 4))
        scan_step = distributed.data_parallel(scan_step, mesh, batch_argnums=(3, 4))
    return step, scan_step


@functools.lru_cache(maxsize=32)
def fresh_copies(optimizer: optax.GradientTransformation, init: bool):
    """``(params, state, opt_state) -> copies`` in one compiled call, ``opt_state`` from
    ``optimizer.init(params)`` when ``init``."""

    def fresh(params, state, opt_state):
        opt_state = optimizer.init(params) if init else opt_state
        return jax.tree_util.tree_map(jnp.copy, (params, state, opt_state))

    return compiler.jit(fresh)


cached_programs = functools.lru_cache(maxsize=32)(build_programs)


def epoch_programs(settings: Settings, x: np.ndarray, y: np.ndarray) -> Programs:
    """The programs for this run, cached by the model's apply, the loss, optimizer and
    shapes; built afresh when something in the setup is unhashable."""
    pregather = x is None or x.nbytes + y.nbytes <= PREGATHER_BYTES  # None: a source
    setup = (
        settings.apply,
        settings.loss,
        settings.optimizer,
        tuple(settings.metrics.items()),
        settings.on_nonfinite,
        settings.batch_size,
        settings.n,
        settings.shuffle,
        settings.mesh,
        pregather,
        settings.precision,
    )
    try:
        return cached_programs(*setup)
    except TypeError:  # something unhashable in the setup: build afresh
        return build_programs(*setup)


def device_data(settings: Settings, x: np.ndarray, y: np.ndarray):
    """The training set and the validation set on the device, as the programs take them:
    ``(xs, ys, val)``, ``val`` the pair ``(xv, yv)`` or ``(None, None)`` (``xs`` and ``ys``
    ``None`` for a source, read batch by batch).

    Over a mesh they are replicated on every device, and the batch size and the last
    batch, ``n mod B``, must divide by the size of its ``"data"`` axis.
    """
    val = settings.validation if settings.validation is not None else (None, None)
    if settings.mesh is None:
        on_device = jax.tree_util.tree_map(jnp.asarray, (x, y))
        return *on_device, jax.tree_util.tree_map(jnp.asarray, val)
    from .. import distributed

    if settings.n:  # arrays or a dataset (an iterable's batches are checked as they come)
        b, rem = settings.batch_size, settings.n % settings.batch_size
        distributed.check_divisible(b, settings.mesh, who="fit")
        if rem:
            last = f"the last batch, {settings.n} mod batch_size {b},"
            distributed.check_divisible(rem, settings.mesh, argument=last, who="fit")
    return *distributed.replicate((x, y), settings.mesh), distributed.replicate(val, settings.mesh)
