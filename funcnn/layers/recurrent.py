"""Recurrent layers over batch-first sequences ``(n, T, D)``: Elman's ``SimpleRNN``, the
``LSTM`` and the ``GRU``, each one ``lax.scan`` over time (see :mod:`funcnn.ops.recurrent`).

In a ``serial`` a recurrent layer passes on its sequence of outputs ``(n, T, H)``, so layers
stack; ``return_sequence=False`` passes on the last output ``h_T`` ``(n, H)`` instead, for a
dense head; ``return_carry=True`` makes the output the pair ``(output, carry)``, the carry
being ``h_T`` (``(h_T, c_T)`` for the LSTM), as ``torch.nn.LSTM`` returns it. The carry
starts at zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .. import checks, initializers, ops
from ..core import Layer
from .params import check_input, check_params

__all__ = ["SimpleRNN", "LSTM", "GRU"]

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def _orthogonal() -> initializers.Initializer:
    """The default of ``W_h``: a random orthogonal matrix (its rows orthonormal when it is
    wider than tall), ``jax.nn.initializers.orthogonal``: every singular value 1, so
    ``h W_h`` neither shrinks nor grows ``h`` at the start (Saxe et al., 2014)."""
    return jax.nn.initializers.orthogonal()


def _inits(who: str, w_x_init, w_h_init, b_init):
    return (
        initializers.get(w_x_init, argument=f"{who}: w_x_init"),
        _orthogonal()
        if w_h_init is None
        else initializers.get(w_h_init, argument=f"{who}: w_h_init"),
        initializers.get(b_init, argument=f"{who}: b_init"),
    )


def _sequence_shape(shape, who: str) -> tuple:
    if isinstance(shape, (tuple, list)) and len(shape) != 3:
        raise ValueError(
            f"{who}: expected batch-first sequences of rank 3 (batch, time, features), "
            f"got shape {tuple(shape)}"
        )
    shape = checks.input_shape(shape, who, rank=3)
    if shape[-1] == -1:
        raise ValueError(f"{who}: the number of input features must be known, got {shape}")
    return shape


def _check_sequence(x, who: str) -> tuple:
    shape = tuple(check_input(x, who))
    if len(shape) != 3:
        raise ValueError(
            f"{who}: expected batch-first sequences of rank 3 (batch, time, features), "
            f"got shape {shape}"
        )
    return shape


def _recurrent(kind, who, hidden, gates, cell, extra, inits, options) -> Layer:
    """A recurrent layer: params ``w_x (D, gates·H)``, ``w_h (H, gates·H)``, ``b`` and
    ``extra`` (``{name: (shape, init)}``); ``cell(params, w_h)`` gives the scan's cell;
    ``options`` are ``(return_sequence, return_carry, lstm, dtype)``."""
    return_sequence, return_carry, lstm, dtype = options
    w_x_fn, w_h_fn, b_fn = inits
    width = gates * hidden

    def output_shape(n, t):
        h = (n, hidden)
        out = (n, t, hidden) if return_sequence else h
        return (out, (h, h) if lstm else h) if return_carry else out

    def init(key, input_shape):
        n, t, d = _sequence_shape(input_shape, who)
        keys = jax.random.split(key, 3 + len(extra))
        params = {
            "w_x": w_x_fn(keys[0], (d, width), dtype),
            "w_h": w_h_fn(keys[1], (hidden, width), dtype),
            "b": b_fn(keys[2], (width,), dtype),
        }
        for k, (name, (shape, fn)) in zip(keys[3:], extra.items()):
            params[name] = fn(k, shape, dtype)
        return output_shape(n, t), params

    def apply(params, x, *, key=None, train=False):
        n, _, d = _check_sequence(x, who)
        w_x = params.get("w_x") if isinstance(params, dict) else None
        made_for = jnp.shape(w_x) if hasattr(w_x, "shape") else ()
        if len(made_for) == 2 and made_for[1] == width and made_for[0] != d:
            raise ValueError(
                f"{who}: expected sequences of {made_for[0]} features (the last axis), "
                f"got shape {jnp.shape(x)}"
            )
        expected = {"w_x": (d, width), "w_h": (hidden, width), "b": (width,)}
        check_params(params, {**expected, **{k: s for k, (s, _) in extra.items()}}, who)
        h0 = jnp.zeros((n, hidden), jnp.result_type(x, params["w_x"]))
        carry = (h0, h0) if lstm else h0
        hs, carry = ops.recur(cell(params), params["w_x"], params["b"], x, carry)
        out = hs if return_sequence else (carry[0] if lstm else carry)
        return (out, carry) if return_carry else out

    return Layer(init, apply, kind=kind, description=who)


def _describe(name: str, hidden: int, options: dict) -> str:
    shown = [f"{k}={v!r}" for k, v in options.items() if v is not None]
    return f"{name}({', '.join([str(hidden), *shown])})"


def _flags(who, return_sequence, return_carry):
    return (
        checks.boolean(return_sequence, f"{who}: return_sequence"),
        checks.boolean(return_carry, f"{who}: return_carry"),
    )


def SimpleRNN(
    hidden: int,
    activation: str = "tanh",
    *,
    return_sequence: bool = True,
    return_carry: bool = False,
    w_x_init: str | initializers.Initializer = "lecun_normal",
    w_h_init: str | initializers.Initializer | None = None,
    b_init: str | initializers.Initializer = "zeros",
    dtype=jnp.float32,
) -> Layer:
    """Elman's recurrent layer: ``h_t = f(x_t W_x + h_{t−1} W_h + b)``, ``h_0 = 0``, over
    sequences ``(n, T, D)``; ``torch.nn.RNN(D, hidden, batch_first=True)`` with
    ``weight_ih = W_xᵀ``, ``weight_hh = W_hᵀ``, ``bias_ih + bias_hh = b``.

    Backpropagation through time multiplies, step after step, by
    ``∂h_t/∂h_{t−1} = diag(f′) W_hᵀ``: the gradient that reaches an early step vanishes (or
    explodes) geometrically with the distance, which is what the :func:`LSTM` mends.

    Params: ``{"w_x": (D, H), "w_h": (H, H), "b": (H,)}``; ``W_x`` is drawn N(0, 1/D) and
    ``W_h`` orthogonal (``w_h_init=None``) by default. Output: ``(n, T, H)``, or ``h_T``
    ``(n, H)`` with ``return_sequence=False``; with ``return_carry=True`` the pair
    ``(output, h_T)``.

    Args:
      hidden: the state size ``H``.
      activation: ``f``, ``"tanh"`` or ``"relu"``.
      return_sequence: output every ``h_t`` (default) or only ``h_T``.
      return_carry: output ``(output, carry)``.

    >>> import jax, jax.numpy as jnp
    >>> layer = SimpleRNN(8)
    >>> shape, params = layer.init(jax.random.key(0), (-1, 20, 3))
    >>> shape, params["w_h"].shape
    ((-1, 20, 8), (8, 8))
    >>> layer.apply(params, jnp.ones((2, 20, 3))).shape
    (2, 20, 8)
    """
    checks.positive_int(hidden, "SimpleRNN: hidden")
    f = ACTIVATIONS[checks.one_of(activation, ACTIVATIONS, "SimpleRNN: activation")]
    options = {
        "activation": None if activation == "tanh" else activation,
        "return_sequence": None if return_sequence is True else return_sequence,
        "return_carry": return_carry or None,
    }
    who = _describe("SimpleRNN", hidden, options)
    flags = _flags(who, return_sequence, return_carry)

    def cell(params):
        return functools.partial(ops.simple_rnn_cell, params["w_h"], activation=f)

    inits = _inits(who, w_x_init, w_h_init, b_init)
    return _recurrent("rnn", who, hidden, 1, cell, {}, inits, (*flags, False, dtype))


def LSTM(
    hidden: int,
    *,
    return_sequence: bool = True,
    return_carry: bool = False,
    forget_bias: float = 1.0,
    w_x_init: str | initializers.Initializer = "lecun_normal",
    w_h_init: str | initializers.Initializer | None = None,
    b_init: str | initializers.Initializer = "zeros",
    dtype=jnp.float32,
) -> Layer:
    """Long short-term memory over sequences ``(n, T, D)`` (see
    :func:`funcnn.ops.lstm_cell`): with ``[ã_i, ã_f, ã_g, ã_o] = x_t W_x + h_{t−1} W_h + b``,

    ``c_t = σ(ã_f) ⊙ c_{t−1} + σ(ã_i) ⊙ tanh(ã_g)``, ``h_t = σ(ã_o) ⊙ tanh(c_t)``,
    ``h_0 = c_0 = 0``.

    The cell state is carried by addition, ``∂c_t/∂c_{t−1} = diag(σ(ã_f))``: while the
    forget gate stays open the gradient crosses many steps undiminished, where a
    :func:`SimpleRNN`'s vanishes. ``torch.nn.LSTM(D, hidden, batch_first=True)`` with
    ``weight_ih = W_xᵀ``, ``weight_hh = W_hᵀ``, ``bias_ih + bias_hh = b`` (gates in the
    order i, f, g, o).

    Params: ``{"w_x": (D, 4H), "w_h": (H, 4H), "b": (4H,)}``; ``b``'s forget block starts
    at ``forget_bias`` (1, as Jozefowicz et al., 2015 advise: remember by default). Output:
    ``(n, T, H)``, or ``h_T`` with ``return_sequence=False``; with ``return_carry=True``
    the pair ``(output, (h_T, c_T))``.

    Args:
      hidden: the state size ``H``.
      return_sequence: output every ``h_t`` (default) or only ``h_T``.
      return_carry: output ``(output, (h_T, c_T))``.
      forget_bias: the initial bias of the forget gate, added to ``b_init``'s.

    >>> import jax, jax.numpy as jnp
    >>> layer = LSTM(16, return_carry=True)
    >>> shape, params = layer.init(jax.random.key(0), (-1, 50, 2))
    >>> shape
    ((-1, 50, 16), ((-1, 16), (-1, 16)))
    >>> params["b"].reshape(4, 16)[:, 0].tolist()  # i, f, g, o
    [0.0, 1.0, 0.0, 0.0]
    >>> y, (h, c) = layer.apply(params, jnp.ones((3, 50, 2)))
    >>> bool((y[:, -1] == h).all())
    True
    """
    checks.positive_int(hidden, "LSTM: hidden")
    forget_bias = checks.number(forget_bias, "LSTM: forget_bias")
    options = {
        "return_sequence": None if return_sequence is True else return_sequence,
        "return_carry": return_carry or None,
        "forget_bias": None if forget_bias == 1.0 else forget_bias,
    }
    who = _describe("LSTM", hidden, options)
    flags = _flags(who, return_sequence, return_carry)
    w_x_fn, w_h_fn, b_fn = _inits(who, w_x_init, w_h_init, b_init)

    def b_with_forget(key, shape, dtype):
        forget = jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(forget_bias)
        return b_fn(key, shape, dtype) + forget

    def cell(params):
        return functools.partial(ops.lstm_cell, params["w_h"])

    inits = (w_x_fn, w_h_fn, b_with_forget)
    return _recurrent("lstm", who, hidden, 4, cell, {}, inits, (*flags, True, dtype))


def GRU(
    hidden: int,
    *,
    return_sequence: bool = True,
    return_carry: bool = False,
    w_x_init: str | initializers.Initializer = "lecun_normal",
    w_h_init: str | initializers.Initializer | None = None,
    b_init: str | initializers.Initializer = "zeros",
    dtype=jnp.float32,
) -> Layer:
    """Gated recurrent unit over sequences ``(n, T, D)`` (see :func:`funcnn.ops.gru_cell`):
    with ``[a_r, a_z, a_n] = x_t W_x + b`` and ``[g_r, g_z, g_n] = h_{t−1} W_h``,

    ``r = σ(a_r + g_r)``, ``z = σ(a_z + g_z)``, ``n = tanh(a_n + r ⊙ (g_n + b_hn))``,
    ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``, ``h_0 = 0``.

    ``torch.nn.GRU(D, hidden, batch_first=True)`` with ``weight_ih = W_xᵀ``,
    ``weight_hh = W_hᵀ``, ``b = bias_ih + [bias_hr, bias_hz, 0]`` and
    ``b_hn = bias_hn`` (gates in the order r, z, n).

    Params: ``{"w_x": (D, 3H), "w_h": (H, 3H), "b": (3H,), "b_hn": (H,)}``. Output as
    :func:`SimpleRNN`'s.

    Args:
      hidden: the state size ``H``.
      return_sequence: output every ``h_t`` (default) or only ``h_T``.
      return_carry: output ``(output, h_T)``.

    >>> import jax, jax.numpy as jnp
    >>> layer = GRU(4, return_sequence=False)
    >>> shape, params = layer.init(jax.random.key(0), (-1, 10, 3))
    >>> shape, sorted(params)
    ((-1, 4), ['b', 'b_hn', 'w_h', 'w_x'])
    """
    checks.positive_int(hidden, "GRU: hidden")
    options = {
        "return_sequence": None if return_sequence is True else return_sequence,
        "return_carry": return_carry or None,
    }
    who = _describe("GRU", hidden, options)
    flags = _flags(who, return_sequence, return_carry)
    inits = _inits(who, w_x_init, w_h_init, b_init)

    def cell(params):
        return functools.partial(ops.gru_cell, params["w_h"], params["b_hn"])

    extra = {"b_hn": ((hidden,), inits[2])}
    return _recurrent("gru", who, hidden, 3, cell, extra, inits, (*flags, False, dtype))
