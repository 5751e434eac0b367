"""Early stopping: the improvement test, patience, and the best params.

After epoch ``e`` with monitored value ``v`` (a loss, minimized, or a metric, maximized),
the epoch improves on the best value ``v*`` so far when ``v`` is finite and

``v < v* − min_delta`` (mode ``"min"``) or ``v > v* + min_delta`` (mode ``"max"``),

or when there is no ``v*`` yet. An improving epoch becomes the best (its params kept when
they are to be restored); otherwise the run has waited one more epoch, and it stops after
``patience`` epochs in a row without improvement.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .settings import Settings
from .state import RunState


def improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """``value`` improves on ``best`` by more than ``min_delta`` in ``mode``.

    >>> improved(0.5, None, "min", 0.0), improved(0.5, 0.6, "min", 0.2)
    (True, False)
    >>> improved(0.9, 0.8, "max", 0.05)
    True
    """
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def watch(settings: Settings, state: RunState, epoch: int, value: float) -> bool:
    """Update early stopping's state after ``epoch``, whose monitored value is ``value``;
    return whether it improved. ``state.stopped`` turns true after ``patience`` epochs
    without improvement."""
    better = math.isfinite(value) and improved(
        value, state.best_value, settings.mode, settings.min_delta
    )
    if better:
        state.best_value, state.best_epoch, state.wait = value, epoch, 0
        if settings.restore_best:
            state.best_params = jax.tree_util.tree_map(jnp.copy, state.params)
            state.best_model_state = jax.tree_util.tree_map(jnp.copy, state.model_state)
    else:
        state.wait += 1
        state.stopped = settings.patience is not None and state.wait >= settings.patience
    return better


def final_params(settings: Settings, state: RunState) -> tuple:
    """The params and model state ``fit`` hands back: the best epoch's when restoring
    them, else the last."""
    if settings.restore_best and state.best_params is not None:
        return state.best_params, state.best_model_state
    return state.params, state.model_state
