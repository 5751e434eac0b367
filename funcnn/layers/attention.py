"""Multi-head attention: self attention over one sequence, cross attention from one sequence
to another, with a key padding mask, a causal mask and dropout on the weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import checks, initializers, ops
from ..core import Layer
from .params import check_params

__all__ = ["MultiHeadAttention"]

PROJECTIONS = ("q", "k", "v")


def _is_shape(s) -> bool:
    return isinstance(s, (tuple, list)) and all(d is None or checks.is_int(d) for d in s)


def _parts(inputs, who: str, shapes: bool) -> tuple:
    """``(query, key, value, key_padding_mask)`` from ``x``, ``(q, kv)``, ``(q, k, v)`` or
    ``(q, k, v, key_padding_mask)`` (shapes at ``init``, arrays at ``apply``)."""
    single = _is_shape(inputs) if shapes else not isinstance(inputs, (tuple, list))
    if single:
        return inputs, inputs, inputs, None
    if isinstance(inputs, (tuple, list)) and len(inputs) in (2, 3, 4):
        q, k, *rest = inputs
        v = rest[0] if rest else k
        return q, k, v, rest[1] if len(rest) == 2 else None
    what = "shapes" if shapes else "arrays"
    raise ValueError(
        f"{who}: expected x (self attention), (query, key_value), (query, key, value) or "
        f"(query, key, value, key_padding_mask) {what}, got {inputs!r:.120}"
    )


def _check_shapes(q, k, v, mask, who: str) -> None:
    """Sequences ``(n, T, d)``; keys and values of one length ``S``; the mask ``(n, S)``."""
    for name, s in (("query", q), ("key", k), ("value", v)):
        if len(s) != 3 or s[-1] == -1:
            raise ValueError(
                f"{who}: expected the {name} as batch-first sequences (batch, time, features) "
                f"with known features, got shape {tuple(s)}"
            )
    if not checks.shapes_match(k[:2], v[:2]) or not checks.shapes_match(q[:1], k[:1]):
        raise ValueError(
            f"{who}: query, key and value must share the batch, key and value the length; "
            f"got shapes {tuple(q)}, {tuple(k)}, {tuple(v)}"
        )
    if mask is not None and not checks.shapes_match(mask, k[:2]):
        raise ValueError(
            f"{who}: key_padding_mask must have shape (batch, key length) = {tuple(k[:2])}, "
            f"got shape {tuple(mask)}"
        )


def _expected(dims, width: int, out: int, use_bias: bool) -> dict:
    """The params' shapes: ``w_q, w_k, w_v: (d, h·d_h)``, ``w_o: (h·d_h, out)``, biases."""
    shapes: dict[str, tuple[int, ...]] = {f"w_{p}": (d, width) for p, d in zip(PROJECTIONS, dims)}
    shapes["w_o"] = (width, out)
    if use_bias:
        shapes.update({f"b_{p}": (width,) for p in PROJECTIONS}, b_o=(out,))
    return shapes


def _sizes(d_q: int, num_heads: int, head_size, out, who: str) -> tuple[int, int]:
    """``(h·d_h, out)``: ``d_h`` defaults to ``d_q / h``, ``out`` to ``d_q``."""
    if head_size is None and d_q % num_heads:
        raise ValueError(
            f"{who}: the query's features ({d_q}) must divide by num_heads ({num_heads}), "
            "or give head_size"
        )
    return num_heads * (head_size or d_q // num_heads), out or d_q


def _mask(t: int, s: int, causal: bool, padding) -> jax.Array | None:
    """``True`` where query ``i`` may attend key ``j``: ``j ≤ i`` if causal, and ``j`` not
    padding; broadcasting to ``(n, h, T, S)``."""
    mask = ops.causal_mask(t, s)[None, None] if causal else None
    if padding is not None:
        keep = ~padding[:, None, None, :]
        mask = keep if mask is None else mask & keep
    return mask


def _attend(params, q, k, v, padding, num_heads, causal, rate, key):
    def heads(x, p):
        y = x @ params[f"w_{p}"] + params.get(f"b_{p}", 0.0)
        return y.reshape(*y.shape[:2], num_heads, -1)

    mask = _mask(q.shape[1], k.shape[1], causal, padding)
    y = ops.dot_product_attention(
        heads(q, "q"), heads(k, "k"), heads(v, "v"), mask, dropout_rate=rate, key=key
    )
    return y.reshape(*y.shape[:2], -1) @ params["w_o"] + params.get("b_o", 0.0)


def MultiHeadAttention(
    num_heads: int,
    head_size: int | None = None,
    out: int | None = None,
    *,
    causal: bool = False,
    dropout: float = 0.0,
    use_bias: bool = True,
    w_init: str | initializers.Initializer = "xavier_uniform",
    b_init: str | initializers.Initializer = "zeros",
    dtype=jnp.float32,
) -> Layer:
    """Multi-head attention (Vaswani et al., 2017): for each head ``i``,
    ``head_i = softmax(Q_i K_iᵀ / √d_h) V_i`` with ``Q_i = query W_q^i + b_q^i`` (and so
    ``K_i``, ``V_i``), then ``y = [head_1, …, head_h] W_o + b_o``.

    The input is ``x`` ``(n, T, d)`` for self attention (query = key = value = ``x``),
    ``(query, key_value)`` for cross attention, ``(query, key, value)``, or
    ``(query, key, value, key_padding_mask)`` with the mask ``(n, S)`` of booleans ``True``
    where a key is padding and must be ignored (PyTorch's ``key_padding_mask``). With
    ``causal=True`` query ``t`` attends keys ``0 … t`` only. A query whose keys are all
    masked weighs them equally (PyTorch gives NaN). In training (``train=True``) the
    attention weights are dropped out with probability ``dropout``, which needs a ``key``.
    Output ``(n, T, out)``.

    ``torch.nn.MultiheadAttention(d, h, batch_first=True)`` is this layer with
    ``W_q, W_k, W_v`` the transposed blocks of its ``in_proj_weight``, ``W_o`` that of its
    ``out_proj.weight`` (biases alike), ``d_h = d / h``.

    Params: ``w_q (d_q, h·d_h)``, ``w_k (d_k, h·d_h)``, ``w_v (d_v, h·d_h)``,
    ``w_o (h·d_h, out)`` and, with ``use_bias``, ``b_q``, ``b_k``, ``b_v`` ``(h·d_h,)`` and
    ``b_o (out,)``; weights drawn Xavier uniform, biases 0, as PyTorch's projections.

    Args:
      num_heads: ``h``.
      head_size: ``d_h``; default ``d_q / h``.
      out: the output features; default ``d_q``.
      causal: mask each query's later keys.
      dropout: the probability of dropping an attention weight in training, in ``[0, 1)``.
      use_bias: learn ``b_q, b_k, b_v, b_o``.

    >>> import jax, jax.numpy as jnp
    >>> mha = MultiHeadAttention(4, causal=True)
    >>> shape, params = mha.init(jax.random.key(0), (-1, 10, 32))
    >>> shape, params["w_q"].shape, params["w_o"].shape
    ((-1, 10, 32), (32, 32), (32, 32))
    >>> cross = MultiHeadAttention(2)  # 5 queries attend 7 keys of another sequence
    >>> cross.init(jax.random.key(0), ((-1, 5, 8), (-1, 7, 3)))[0]
    (-1, 5, 8)
    """
    options: dict[str, object] = {"head_size": head_size, "out": out, "causal": causal or None}
    options["dropout"] = dropout or None
    shown = [f"{k}={v!r}" for k, v in options.items() if v is not None]
    who = f"MultiHeadAttention({', '.join([repr(num_heads), *shown])})"
    checks.positive_int(num_heads, f"{who}: num_heads")
    checks.positive_int(head_size, f"{who}: head_size", allow_none=True)
    checks.positive_int(out, f"{who}: out", allow_none=True)
    checks.boolean(causal, f"{who}: causal")
    rate = checks.number(dropout, f"{who}: dropout", low=0, high=1, high_open=True)
    w_fn = initializers.get(w_init, argument=f"{who}: w_init")
    b_fn = initializers.get(b_init, argument=f"{who}: b_init")

    def init(key, input_shape):
        parts = _parts(input_shape, who, shapes=True)
        parts = [None if s is None else checks.input_shape(s, who) for s in parts]
        _check_shapes(*parts, who)
        q, k, v, _ = parts
        width, n_out = _sizes(q[-1], num_heads, head_size, out, who)
        shapes = _expected((q[-1], k[-1], v[-1]), width, n_out, use_bias)
        keys = dict(zip(shapes, jax.random.split(key, len(shapes))))
        draw = {name: w_fn if name.startswith("w") else b_fn for name in shapes}
        params = {name: draw[name](keys[name], s, dtype) for name, s in shapes.items()}
        return (q[0], q[1], n_out), params

    def apply(params, x, *, key=None, train=False):
        q, k, v, padding = _parts(x, who, shapes=False)
        _check_shapes(*(None if a is None else jnp.shape(a) for a in (q, k, v, padding)), who)
        if padding is not None and jnp.result_type(padding) != jnp.bool_:
            got = np.dtype(jnp.result_type(padding))
            raise TypeError(f"{who}: key_padding_mask must be booleans, got dtype {got}")
        width, n_out = _sizes(jnp.shape(q)[-1], num_heads, head_size, out, who)
        dims = (jnp.shape(q)[-1], jnp.shape(k)[-1], jnp.shape(v)[-1])
        check_params(params, _expected(dims, width, n_out, use_bias), who)
        active = train and rate > 0.0
        if active and key is None:
            raise ValueError(
                f"{who}: train=True with dropout needs a PRNG key, call "
                "apply(params, x, key=key, train=True)"
            )
        return _attend(params, q, k, v, padding, num_heads, causal, rate if active else 0.0, key)

    return Layer(init, apply, kind="attention", description=who)
