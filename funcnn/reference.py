"""Hand-derived gradients: the formulas of the lecture, written as plain array algebra.

Nothing here calls ``jax.grad``: every gradient is the formula derived in its docstring,
so that comparing it with automatic differentiation (:func:`funcnn.gradients.compare`,
the tests) checks one against the other. The models' params follow funcnn's layout, so the
formulas apply directly to ``Dense``, ``models.logistic_regression`` and ``models.mlp``:

| function | what it differentiates |
| --- | --- |
| ``linear_regression`` | ``ŷ = xW + b``, MSE |
| ``logistic_regression`` | ``y = σ(xw + b)``, binary cross-entropy |
| ``softmax_regression`` | ``P = softmax(xW + b)``, cross-entropy |
| ``mlp`` | one hidden layer (tanh or ReLU), softmax head |
| ``conv2d`` | ∂L/∂x, ∂L/∂W, ∂L/∂b of ``y = x ⋆ W + b`` (NHWC, HWIO) |
| ``max_pool`` | ∂L/∂x of max pooling |

Notation: a batch of ``n`` row vectors ``x`` of shape ``(n, d)``; ``ỹ`` the targets;
``δ = ∂L/∂z`` the gradient at a pre-activation ``z``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax.numpy as jnp
from jax import Array

from . import checks

__all__ = [
    "linear_regression",
    "logistic_regression",
    "softmax_regression",
    "mlp",
    "conv2d",
    "conv2d_forward",
    "conv_padding",
    "max_pool",
    "max_pool_forward",
]

Params = dict[str, Any]


def _sigmoid(z: Array) -> Array:
    return 0.5 * (jnp.tanh(0.5 * z) + 1.0)


def _softmax(z: Array) -> Array:
    e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _one_hot(labels: Array, c: int, dtype) -> Array:
    return (jnp.asarray(labels)[..., None] == jnp.arange(c)).astype(dtype)


def _binary_labels(y: Array, n: int) -> Array:
    y = jnp.asarray(y)
    if y.shape not in ((n,), (n, 1)):
        raise ValueError(f"labels y must have shape ({n},) or ({n}, 1), got {y.shape}")
    return y.reshape(n, 1)


# --------------------------------------------------------------------- linear models


def linear_regression(params: Params, x: Array, y: Array) -> tuple[Array, Params]:
    """Linear regression with the mean squared error, and its gradient.

    Forward: ``ŷ = xW + b`` (``x`` ``(n, d)``, ``W`` ``(d, k)``, ``b`` ``(k,)``) and
    ``L = (1/nk) Σᵢⱼ (ŷᵢⱼ − ỹᵢⱼ)²``, the mean over every element as in ``losses.mse``.

    Derivation: ``∂L/∂ŷ = (2/nk)(ŷ − ỹ) =: δ``; since ``ŷᵢⱼ = Σₗ xᵢₗ Wₗⱼ + bⱼ``,
    ``∂L/∂Wₗⱼ = Σᵢ xᵢₗ δᵢⱼ``, i.e. ``∂L/∂W = xᵀδ``, and ``∂L/∂b = Σᵢ δᵢ``.

    Args:
      params: ``{"w": (d, k), "b": (k,)}``, as a ``Dense(k)`` layer's.
      x: ``(n, d)``.
      y: targets ``(n, k)`` (or ``(n,)`` when ``k = 1``).

    Returns:
      ``(L, {"w": ∂L/∂W, "b": ∂L/∂b})``.

    >>> import jax.numpy as jnp
    >>> loss, g = linear_regression({"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)},
    ...                             jnp.ones((4, 2)), jnp.ones(4))
    >>> float(loss), g["b"].tolist()
    (1.0, [-2.0])
    """
    w, b = params["w"], params["b"]
    pred = x @ w + b
    y = jnp.asarray(y).reshape(pred.shape)
    delta = 2.0 * (pred - y) / pred.size
    return jnp.mean((pred - y) ** 2), {"w": x.T @ delta, "b": jnp.sum(delta, axis=0)}


def logistic_regression(params: Params, x: Array, y: Array) -> tuple[Array, Params]:
    """Logistic regression with the binary cross-entropy, and its gradient.

    Forward: ``z = xw + b`` (``w`` ``(d, 1)``), ``p = σ(z)``,
    ``L = −(1/n) Σᵢ [ỹᵢ log pᵢ + (1 − ỹᵢ) log(1 − pᵢ)]``.

    Derivation: ``σ'(z) = σ(z)(1 − σ(z))``, so
    ``∂lᵢ/∂zᵢ = −ỹᵢ(1 − pᵢ) + (1 − ỹᵢ)pᵢ = pᵢ − ỹᵢ``, and with ``δ = (p − ỹ)/n``:
    ``∂L/∂w = xᵀδ``, ``∂L/∂b = Σᵢ δᵢ``. The loss is computed stably as
    ``(1/n) Σ [log(1 + eᶻ) − ỹ z]``.

    Args:
      params: ``{"w": (d, 1), "b": (1,)}``, as ``models.logistic_regression``'s.
      x: ``(n, d)``.
      y: labels in ``{0, 1}`` (or probabilities), ``(n,)`` or ``(n, 1)``.

    Returns:
      ``(L, {"w": ∂L/∂w, "b": ∂L/∂b})``.

    >>> import jax.numpy as jnp
    >>> loss, g = logistic_regression({"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)},
    ...                               jnp.ones((2, 2)), jnp.array([1, 1]))
    >>> round(float(loss), 4), g["b"].tolist()
    (0.6931, [-0.5])
    """
    w, b = params["w"], params["b"]
    n = x.shape[0]
    z = x @ w + b
    y = _binary_labels(y, n).astype(z.dtype)
    softplus = jnp.maximum(z, 0) + jnp.log1p(jnp.exp(-jnp.abs(z)))
    delta = (_sigmoid(z) - y) / n
    return jnp.mean(softplus - y * z), {"w": x.T @ delta, "b": jnp.sum(delta, axis=0)}


def softmax_regression(params: Params, x: Array, y: Array) -> tuple[Array, Params]:
    """Softmax (multinomial logistic) regression with the cross-entropy, and its gradient.

    Forward: ``Z = xW + b`` (``W`` ``(d, c)``), ``P = softmax(Z)`` row by row,
    ``L = −(1/n) Σᵢ log P_{i,ỹᵢ}``.

    Derivation: ``log P_{i,k} = Z_{ik} − log Σⱼ e^{Z_{ij}}``, so
    ``∂lᵢ/∂Z_{ik} = P_{ik} − [k = ỹᵢ]``: with ``Y`` the one-hot labels and
    ``δ = (P − Y)/n``, ``∂L/∂W = xᵀδ`` and ``∂L/∂b = Σᵢ δᵢ``.

    Args:
      params: ``{"w": (d, c), "b": (c,)}``, as a ``Dense(c)`` layer's.
      x: ``(n, d)``.
      y: integer labels ``(n,)`` in ``[0, c)``.

    Returns:
      ``(L, {"w": ∂L/∂W, "b": ∂L/∂b})``.

    >>> import jax.numpy as jnp
    >>> loss, g = softmax_regression({"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)},
    ...                              jnp.ones((1, 2)), jnp.array([0]))
    >>> round(float(loss), 4), g["b"].tolist()
    (0.6931, [-0.5, 0.5])
    """
    w, b = params["w"], params["b"]
    n = x.shape[0]
    z = x @ w + b
    p = _softmax(z)
    onehot = _one_hot(y, z.shape[-1], z.dtype)
    log_p = z - jnp.max(z, axis=-1, keepdims=True)
    log_p = log_p - jnp.log(jnp.sum(jnp.exp(log_p), axis=-1, keepdims=True))
    delta = (p - onehot) / n
    return -jnp.sum(onehot * log_p) / n, {"w": x.T @ delta, "b": jnp.sum(delta, axis=0)}


def mlp(params: Params, x: Array, y: Array, activation: str = "tanh") -> tuple[Array, Params]:
    """A perceptron with one hidden layer and a softmax head, by explicit backpropagation.

    Forward, layer by layer (params as ``models.mlp([h, c], activation)``'s):

    ```text
      a = x W₁ + b₁          (n, h)   hidden_0
      h = f(a)               (n, h)   tanh or ReLU
      Z = h W₂ + b₂          (n, c)   output
      L = −(1/n) Σᵢ log softmax(Zᵢ)_{ỹᵢ}
    ```

    Backward, from the loss to the input, each line one application of the chain rule:

    ```text
      δ₂ = ∂L/∂Z = (softmax(Z) − Y)/n
      ∂L/∂W₂ = hᵀ δ₂,   ∂L/∂b₂ = Σᵢ δ₂ᵢ
      ∂L/∂h  = δ₂ W₂ᵀ
      δ₁ = ∂L/∂a = ∂L/∂h ⊙ f'(a),  f'(a) = 1 − h² (tanh) or [a > 0] (ReLU)
      ∂L/∂W₁ = xᵀ δ₁,   ∂L/∂b₁ = Σᵢ δ₁ᵢ
    ```

    Args:
      params: ``{"hidden_0": {"w": (d, h), "b": (h,)}, "output": {"w": (h, c), "b": (c,)}}``.
      x: ``(n, d)``.
      y: integer labels ``(n,)`` in ``[0, c)``.
      activation: ``"tanh"`` or ``"relu"``.

    Returns:
      ``(L, grads)`` with grads shaped like ``params``.

    >>> import jax.numpy as jnp
    >>> p = {"hidden_0": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)},
    ...      "output": {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}}
    >>> loss, g = mlp(p, jnp.ones((1, 2)), jnp.array([1]))
    >>> g["output"]["b"].tolist()
    [0.5, -0.5]
    """
    if activation not in ("tanh", "relu"):
        raise ValueError(f"mlp: activation must be 'tanh' or 'relu', got {activation!r}")
    w1, b1 = params["hidden_0"]["w"], params["hidden_0"]["b"]
    w2, b2 = params["output"]["w"], params["output"]["b"]
    a = x @ w1 + b1
    h = jnp.tanh(a) if activation == "tanh" else jnp.maximum(a, 0)
    loss, out = softmax_regression({"w": w2, "b": b2}, h, y)
    n = x.shape[0]
    delta2 = (_softmax(h @ w2 + b2) - _one_hot(y, w2.shape[1], a.dtype)) / n
    dh = delta2 @ w2.T
    f_prime = 1.0 - h**2 if activation == "tanh" else (a > 0).astype(a.dtype)
    delta1 = dh * f_prime
    grads = {
        "hidden_0": {"w": x.T @ delta1, "b": jnp.sum(delta1, axis=0)},
        "output": out,
    }
    return loss, grads


# ------------------------------------------------------------------------ convolution


def conv_padding(
    padding: str | int | Sequence[tuple[int, int]],
    in_hw: Sequence[int],
    kernel_hw: Sequence[int],
    stride: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Per-side padding ``((top, bottom), (left, right))`` as ``lax.conv_general_dilated`` pads.

    ``"VALID"``: none. ``"SAME"``: output ``⌈N/s⌉``, total padding
    ``max((⌈N/s⌉ − 1)s + F − N, 0)``, the smaller half on top/left. An int ``p``: ``p`` on
    every side. Pairs are taken as given.

    >>> conv_padding("SAME", (5, 5), (3, 3), (2, 2))
    ((1, 1), (1, 1))
    """
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return (0, 0), (0, 0)
        if padding.upper() == "SAME":
            same: list[tuple[int, int]] = []
            for n, f, s in zip(in_hw, kernel_hw, stride):
                total = max((-(-n // s) - 1) * s + f - n, 0)
                same.append((total // 2, total - total // 2))
            return tuple(same)
        raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
    if isinstance(padding, int) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        return (padding, padding), (padding, padding)
    pairs = tuple(tuple(int(v) for v in p) for p in cast(Sequence[Sequence[int]], padding))
    if len(pairs) != 2 or any(len(p) != 2 or min(p) < 0 for p in pairs):
        raise ValueError(f"padding pairs must be ((top, bottom), (left, right)), got {padding!r}")
    return tuple((p[0], p[1]) for p in pairs)


def _pad_input(x: Array, w: Array, stride, padding):
    stride = checks.int_tuple(stride, "stride")
    pads = conv_padding(padding, x.shape[1:3], w.shape[:2], stride)
    xpad = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_hw = tuple((xpad.shape[1 + i] - w.shape[i]) // stride[i] + 1 for i in range(2))
    if min(out_hw) < 1:
        raise ValueError(f"kernel {w.shape[:2]} does not fit the padded input {xpad.shape[1:3]}")
    return xpad, pads, stride, out_hw


def _window(a: Array, p: int, q: int, out_hw, stride) -> Array:
    """``a[:, p + s·i, q + s·j, :]`` for every output position ``(i, j)``."""
    (ho, wo), (sh, sw) = out_hw, stride
    return a[:, p : p + sh * (ho - 1) + 1 : sh, q : q + sw * (wo - 1) + 1 : sw, :]


def _correlate(a: Array, k: Array) -> Array:
    """Valid cross-correlation, stride 1: ``out[n,i,j,o] = Σ_{p,q,c} a[n,i+p,j+q,c] k[p,q,c,o]``."""
    kh, kw = k.shape[:2]
    ho, wo = a.shape[1] - kh + 1, a.shape[2] - kw + 1
    out: Any = 0.0
    for p in range(kh):
        for q in range(kw):
            out = out + a[:, p : p + ho, q : q + wo, :] @ k[p, q]
    return out


def conv2d_forward(
    x: Array, w: Array, b: Array | None = None, stride: int | Sequence[int] = 1, padding="VALID"
) -> Array:
    """The forward convolution written out, as plain sums over the kernel's taps.

    ``y[n,i,j,o] = b[o] + Σ_{p,q,c} x̂[n, sᵢi + p, sⱼj + q, c] W[p,q,c,o]``.

    ``x̂`` is ``x`` padded as :func:`conv_padding` says. This is what
    ``funcnn.functional.conv2d(x, w, b, stride, padding)`` and
    ``lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=("NHWC", "HWIO",
    "NHWC"))`` compute (a cross-correlation, as every deep-learning library calls
    "convolution").

    Args:
      x: ``(N, H, W, C)``. w: ``(F_h, F_w, C, O)``. b: ``(O,)`` or ``None``.

    >>> import jax.numpy as jnp
    >>> conv2d_forward(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2))).shape
    (1, 2, 2, 2)
    """
    xpad, _, stride, out_hw = _pad_input(x, w, stride, padding)
    y: Any = 0.0
    for p in range(w.shape[0]):
        for q in range(w.shape[1]):
            y = y + _window(xpad, p, q, out_hw, stride) @ w[p, q]
    return y if b is None else y + b


def conv2d(
    x: Array,
    w: Array,
    b: Array | None,
    upstream: Array,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[tuple[int, int]] = "VALID",
) -> dict[str, Array]:
    """Gradients of a convolution layer ``y = conv2d(x, W, b)`` given ``δ = ∂L/∂y``.

    Forward (:func:`conv2d_forward`, NHWC / HWIO, ``x̂`` the padded input, stride ``s``):

    ```text
      y[n,i,j,o] = b[o] + Σ_{p,q,c} x̂[n, s·i + p, s·j + q, c] · W[p,q,c,o]
    ```

    Each weight is used at every output position, so its gradient sums over them:

    * ``∂L/∂W[p,q,c,o] = Σ_{n,i,j} x̂[n, s·i + p, s·j + q, c] · δ[n,i,j,o]``: a
      correlation of the input with the upstream gradient (with stride ``s``, of the
      input's every ``s``-th position).
    * ``∂L/∂b[o] = Σ_{n,i,j} δ[n,i,j,o]``.
    * ``∂L/∂x̂[n,a,b,c] = Σ over (i,p) with s·i + p = a, (j,q) with s·j + q = b of
      δ[n,i,j,o] · W[p,q,c,o]``: a *full* convolution of ``δ`` with the kernel, i.e.
      dilate ``δ`` by ``s`` (``s − 1`` zeros between entries), pad it by ``F − 1`` on each
      side, and correlate it with the kernel flipped in both spatial axes and with ``C``
      and ``O`` swapped: ``W̃[p,q,o,c] = W[F_h−1−p, F_w−1−q, c, o]``. ``∂L/∂x`` is
      ``∂L/∂x̂`` with the padding cropped off.

    Args:
      x: ``(N, H, W, C)``. w: ``(F_h, F_w, C, O)``. b: ``(O,)`` or ``None``.
      upstream: ``δ = ∂L/∂y``, ``(N, H', W', O)``.
      stride: an int or ``(s_h, s_w)``.
      padding: ``"VALID"``, ``"SAME"``, an int, or ``((top, bottom), (left, right))``.

    Returns:
      ``{"x": ∂L/∂x, "w": ∂L/∂W, "b": ∂L/∂b}`` (no ``"b"`` when ``b`` is ``None``).

    >>> import jax.numpy as jnp
    >>> g = conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((2, 2, 1, 1)), jnp.zeros(1),
    ...            jnp.ones((1, 2, 2, 1)))
    >>> g["x"][0, :, :, 0].tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    xpad, pads, (sh, sw), (ho, wo) = _pad_input(x, w, stride, padding)
    kh, kw, _, o = w.shape
    n = x.shape[0]
    if upstream.shape != (n, ho, wo, o):
        raise ValueError(f"upstream has shape {upstream.shape}, expected {(n, ho, wo, o)}")
    dw = jnp.stack(
        [
            jnp.stack(
                [
                    jnp.einsum("nijc,nijo->co", _window(xpad, p, q, (ho, wo), (sh, sw)), upstream)
                    for q in range(kw)
                ]
            )
            for p in range(kh)
        ]
    )
    dilated = jnp.zeros((n, sh * (ho - 1) + 1, sw * (wo - 1) + 1, o), upstream.dtype)
    dilated = dilated.at[:, ::sh, ::sw, :].set(upstream)
    full = jnp.pad(dilated, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    dxpad = _correlate(full, flipped)
    rest = (
        (0, 0),
        (0, xpad.shape[1] - dxpad.shape[1]),
        (0, xpad.shape[2] - dxpad.shape[2]),
        (0, 0),
    )
    dxpad = jnp.pad(dxpad, rest)
    (top, _), (left, _) = pads
    grads = {"x": dxpad[:, top : top + x.shape[1], left : left + x.shape[2], :], "w": dw}
    if b is not None:
        grads["b"] = jnp.sum(upstream, axis=(0, 1, 2))
    return grads


# ------------------------------------------------------------------------ max pooling


def _pool_geometry(
    x: Array, window, stride
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    window = checks.int_tuple(window, "window")
    stride = window if stride is None else checks.int_tuple(stride, "stride")
    out_hw = tuple((x.shape[1 + i] - window[i]) // stride[i] + 1 for i in range(2))
    if min(out_hw) < 1:
        raise ValueError(f"window {window} is larger than the input {x.shape[1:3]}")
    return window, stride, out_hw


def max_pool_forward(x: Array, window: int | Sequence[int], stride=None) -> Array:
    """Max pooling without padding: ``y[n,i,j,c] = max_{p,q} x[n, sᵢi + p, sⱼj + q, c]``.

    ``stride`` defaults to the window. x: ``(N, H, W, C)``.

    >>> import jax.numpy as jnp
    >>> max_pool_forward(jnp.arange(16.0).reshape(1, 4, 4, 1), 2)[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    (kh, kw), stride, out_hw = _pool_geometry(x, window, stride)
    taps = [_window(x, p, q, out_hw, stride) for p in range(kh) for q in range(kw)]
    return jnp.max(jnp.stack(taps), axis=0)


def max_pool(
    x: Array,
    upstream: Array,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
) -> Array:
    """``∂L/∂x`` of max pooling (no padding) given ``δ = ∂L/∂y``: the gradient goes to the arg-max.

    ``y[n,i,j,c] = max_{p,q} x[n, s·i + p, s·j + q, c]`` depends, locally, on its
    maximal element only (``∂ max(u)/∂u_k = [k = argmax u]``), so each ``δ[n,i,j,c]`` is
    routed to the position of its window's maximum (the first one on ties) and every other
    input gets nothing from that window. Where windows overlap (stride < window), an input
    collects the sum over the windows it wins:

    ```text
      ∂L/∂x[n,a,b,c] = Σ_{i,j: (a,b) = argmax of window (i,j)} δ[n,i,j,c]
    ```

    Args:
      x: ``(N, H, W, C)``. upstream: ``(N, H', W', C)``.
      window: an int or ``(F_h, F_w)``. stride: defaults to the window.

    >>> import jax.numpy as jnp
    >>> dx = max_pool(jnp.arange(16.0).reshape(1, 4, 4, 1), jnp.ones((1, 2, 2, 1)), 2)
    >>> dx[0, :, :, 0].tolist()[1]
    [0.0, 1.0, 0.0, 1.0]
    """
    (kh, kw), stride, out_hw = _pool_geometry(x, window, stride)
    if upstream.shape != (x.shape[0], *out_hw, x.shape[3]):
        raise ValueError(
            f"upstream has shape {upstream.shape}, expected {(x.shape[0], *out_hw, x.shape[3])}"
        )
    taps = [(p, q) for p in range(kh) for q in range(kw)]
    winner = jnp.argmax(jnp.stack([_window(x, p, q, out_hw, stride) for p, q in taps]), axis=0)
    (ho, wo), (sh, sw) = out_hw, stride
    dx = jnp.zeros_like(x, dtype=upstream.dtype)
    for t, (p, q) in enumerate(taps):
        share = jnp.where(winner == t, upstream, 0.0)
        dx = dx.at[:, p : p + sh * (ho - 1) + 1 : sh, q : q + sw * (wo - 1) + 1 : sw, :].add(share)
    return dx
