"""Recurrent cells and the scan that runs one over a sequence.

A cell maps the carry and one step's projected input ``a_t = x_t W_x + b`` to the next
carry and the step's output: ``cell(w_h, carry, a_t) -> (carry, h_t)``. :func:`recur`
projects the whole sequence at once (one matmul) and runs the cell over time as one
``lax.scan``. The gates are laid out as PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``
lay out theirs, with weights transposed: ``W_x = weight_ih.T``, ``W_h = weight_hh.T``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax

__all__ = ["simple_rnn_cell", "lstm_cell", "gru_cell", "recur"]

Carry = Any  # h, or (h, c) for the LSTM


def simple_rnn_cell(
    w_h: Array, h: Array, a: Array, activation: Callable = jnp.tanh
) -> tuple[Array, Array]:
    """Elman's recurrence: ``h_t = f(a_t + h_{t−1} W_h)``, ``a_t = x_t W_x + b``,
    ``f = tanh`` by default. Returns ``(h_t, h_t)``: the carry and the output.

    Args:
      w_h: ``(H, H)``.
      h: ``h_{t−1}``, ``(n, H)``.
      a: ``a_t``, ``(n, H)``.
      activation: ``f``.

    >>> import jax.numpy as jnp
    >>> h, y = simple_rnn_cell(jnp.eye(2), jnp.array([[1.0, 0.0]]), jnp.zeros((1, 2)))
    >>> [round(v, 4) for v in h[0].tolist()]  # tanh(0 + h W_h)
    [0.7616, 0.0]
    """
    h = activation(a + h @ w_h)
    return h, h


def lstm_cell(w_h: Array, carry: tuple[Array, Array], a: Array) -> tuple[tuple, Array]:
    """Long short-term memory (Hochreiter & Schmidhuber, 1997; the forget gate of Gers et
    al., 2000). With ``[ã_i, ã_f, ã_g, ã_o] = a_t + h_{t−1} W_h`` (four blocks of ``H``):

    ``i = σ(ã_i)``, ``f = σ(ã_f)``, ``g = tanh(ã_g)``, ``o = σ(ã_o)``,
    ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``h_t = o ⊙ tanh(c_t)``.

    The cell ``c`` is updated by addition: ``∂c_t/∂c_{t−1} = diag(f)``, close to the identity
    while the forget gate is open, so gradients travel back many steps.

    Args:
      w_h: ``(H, 4H)``.
      carry: ``(h_{t−1}, c_{t−1})``, each ``(n, H)``.
      a: ``a_t``, ``(n, 4H)``.

    Returns:
      ``((h_t, c_t), h_t)``.

    >>> import jax.numpy as jnp
    >>> (h, c), y = lstm_cell(jnp.zeros((1, 4)), (jnp.zeros((1, 1)), jnp.ones((1, 1))),
    ...                       jnp.array([[0.0, 50.0, 0.0, 50.0]]))  # f = o = 1, g = 0
    >>> round(float(c[0, 0]), 4), round(float(h[0, 0]), 4)  # c kept, h = tanh(1)
    (1.0, 0.7616)
    """
    h, c = carry
    i, f, g, o = jnp.split(a + h @ w_h, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def gru_cell(w_h: Array, b_hn: Array, h: Array, a: Array) -> tuple[Array, Array]:
    """Gated recurrent unit (Cho et al., 2014), as PyTorch and cuDNN compute it. With
    ``[a_r, a_z, a_n] = a_t`` and ``[g_r, g_z, g_n] = h_{t−1} W_h``:

    ``r = σ(a_r + g_r)``, ``z = σ(a_z + g_z)``, ``n = tanh(a_n + r ⊙ (g_n + b_hn))``,
    ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``.

    Args:
      w_h: ``(H, 3H)``.
      b_hn: ``(H,)``, the bias inside the reset gate's product.
      h: ``h_{t−1}``, ``(n, H)``.
      a: ``a_t``, ``(n, 3H)``.

    Returns:
      ``(h_t, h_t)``.

    >>> import jax.numpy as jnp
    >>> h, y = gru_cell(jnp.zeros((1, 3)), jnp.zeros(1), jnp.ones((1, 1)), jnp.zeros((1, 3)))
    >>> float(h[0, 0])  # z = 1/2, n = 0: half of h_{t−1}
    0.5
    """
    a_r, a_z, a_n = jnp.split(a, 3, axis=-1)
    g_r, g_z, g_n = jnp.split(h @ w_h, 3, axis=-1)
    r, z = jax.nn.sigmoid(a_r + g_r), jax.nn.sigmoid(a_z + g_z)
    n = jnp.tanh(a_n + r * (g_n + b_hn))
    h = (1 - z) * n + z * h
    return h, h


def recur(
    cell: Callable[[Carry, Array], tuple[Carry, Array]],
    w_x: Array,
    b: Array,
    xs: Array,
    carry: Carry,
) -> tuple[Array, Carry]:
    """Run ``cell`` over the time axis of batch-first ``xs`` as one ``lax.scan``:
    ``a_t = x_t W_x + b`` for every ``t`` at once, then
    ``(carry_t, h_t) = cell(carry_{t−1}, a_t)`` for ``t = 1 … T``.

    Args:
      cell: ``(carry, a_t) -> (carry, h_t)``, e.g. ``functools.partial(lstm_cell, w_h)``.
      w_x: ``(D, k)``, ``k`` the width of ``a_t``.
      b: ``(k,)``.
      xs: ``(n, T, D)``.
      carry: the initial carry, e.g. zeros ``(n, H)``.

    Returns:
      ``(hs, carry_T)``: the outputs ``(n, T, H)`` and the last carry.

    >>> import functools, jax.numpy as jnp
    >>> cell = functools.partial(simple_rnn_cell, jnp.eye(1), activation=lambda v: v)
    >>> hs, h = recur(cell, jnp.ones((1, 1)), jnp.zeros(1), jnp.ones((2, 4, 1)), jnp.zeros((2, 1)))
    >>> hs[0, :, 0].tolist(), h.shape  # h_t = h_{t−1} + x_t: a running sum
    ([1.0, 2.0, 3.0, 4.0], (2, 1))
    """
    a = jnp.swapaxes(xs @ w_x + b, 0, 1)  # time-major (T, n, k): scan's leading axis
    carry, hs = lax.scan(cell, carry, a)
    return jnp.swapaxes(hs, 0, 1), carry
