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

from .. import compiler
from ..data import shuffle as shuffle_indices
from .settings import Settings
from .step import make_step

PREGATHER_BYTES = 256 * 2**20  # larger training sets are gathered batch by batch


class Programs(NamedTuple):
    """The compiled pieces of an epoch, shared by every ``fit`` call with the same setup."""

    order: Callable  # (key, epoch) -> (epoch_key, perm)
    loop_step: Callable  # one step on perm[s·B : s·B + size]
    scan_steps: Callable  # steps first .. first + length − 1 as one lax.scan


def epoch_order(key, epoch, n: int, shuffle: bool):
    """``k_e = fold_in(key, e)`` and epoch ``e``'s order of the ``n`` examples."""
    epoch_key = jax.random.fold_in(key, epoch)
    if not shuffle:
        return epoch_key, jnp.arange(n, dtype=jnp.int32)
    return epoch_key, shuffle_indices(jax.random.fold_in(epoch_key, 0), n)


def loop_step_function(step: Callable, batch_size: int) -> Callable:
    """``loop_step(params, state, opt_state, live, xs, ys, perm, s, k_e, *, size)``: ``step``
    on the examples ``perm[s·B : s·B + size]`` with the key ``fold_in(k_e, s + 1)``."""

    def loop_step(params, state, opt_state, live, xs, ys, perm, s, epoch_key, *, size):
        idx = jax.lax.dynamic_slice_in_dim(perm, s * batch_size, size)
        key = jax.random.fold_in(epoch_key, s + 1)
        return step(params, state, opt_state, xs[idx], ys[idx], key, live)

    return loop_step


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

        def body(carry, inp):
            p, st, o, live = carry
            xi, yi, s = inp
            xi, yi = batch(xi, yi)
            key_s = jax.random.fold_in(epoch_key, s + 1)
            p, st, o, logs, finite, live = scan_step(p, st, o, xi, yi, key_s, live)
            return (p, st, o, live), (logs, finite)

        (params, state, opt_state, _), (logs, finite) = jax.lax.scan(
            body,
            (params, state, opt_state, jnp.asarray(True)),
            (xb, yb, first + jnp.arange(length)),
        )
        return params, state, opt_state, logs, finite

    return scan_steps


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
    """Compile (on first call) the three programs of an epoch for this setup.

    ``metrics`` is a tuple of ``(name, fn)`` pairs, so that the setup can key a cache. The
    loop step and, unless ``guard == "raise"``, the scan donate ``params``, the model's
    ``state`` and ``opt_state``.
    """
    step = make_step(apply, loss, optimizer, dict(metrics), guard, precision)
    # in "raise" mode a scan only flags non-finite steps; fit replays up to the first one
    scan_step = (
        make_step(apply, loss, optimizer, dict(metrics), "flag", precision)
        if guard == "raise"
        else step
    )
    if mesh is not None:
        from .. import distributed

        step = distributed.data_parallel(step, mesh, batch_argnums=(3, 4))
        scan_step = distributed.data_parallel(scan_step, mesh, batch_argnums=(3, 4))

    def order(key, epoch):
        return epoch_order(key, epoch, n, shuffle)

    return Programs(
        compiler.jit(order),
        compiler.jit(
            loop_step_function(step, batch_size),
            static_argnames="size",
            donate_argnums=(0, 1, 2),
        ),
        compiler.jit(
            scan_steps_function(scan_step, order, batch_size, pregather),
            static_argnames="length",
            donate_argnums=() if guard == "raise" else (0, 1, 2),
        ),
    )


cached_programs = functools.lru_cache(maxsize=32)(build_programs)


def epoch_programs(settings: Settings, x: np.ndarray, y: np.ndarray) -> Programs:
    """The programs for this run, cached by the model's apply, the loss, optimizer and
    shapes; built afresh when something in the setup is unhashable."""
    pregather = x.nbytes + y.nbytes <= PREGATHER_BYTES
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
    """The training set on the device, as the programs take it: ``(xs, ys)``.

    Over a mesh it is replicated on every device, and the batch size and the last batch,
    ``n mod B``, must divide by the size of its ``"data"`` axis.
    """
    if settings.mesh is None:
        return jnp.asarray(x), jnp.asarray(y)
    from .. import distributed

    b, rem = settings.batch_size, settings.n % settings.batch_size
    distributed.check_divisible(b, settings.mesh, who="fit")
    if rem:
        last = f"the last batch, {settings.n} mod batch_size {b},"
        distributed.check_divisible(rem, settings.mesh, argument=last, who="fit")
    return distributed.replicate((x, y), settings.mesh)
