"""Ready-made networks of the lecture.

Every model is a :class:`~funcnn.core.Layer` whose ``apply`` returns the *pre-activation*
output of its head (logits for classification), so that the losses can be computed
stably. The model also carries:

* ``model.head``: ``"linear"``, ``"sigmoid"`` or ``"softmax"``;
* ``model.loss``: the matching loss from outputs (``mse``, ``binary_cross_entropy``,
  ``softmax_cross_entropy``);
* ``model.metric``: ``accuracy`` for classification heads, ``None`` for regression;
* ``model.predict(params, x)``: the head applied, the lecture's ``y``: ``wᵀh``, ``σ(wᵀh)``
  or ``softmax(Wh)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from . import losses
from .core import Layer, named, serial
from .layers import Dense, Dropout, Gelu, LeakyRelu, Relu, Sigmoid, Tanh

__all__ = ["HEADS", "ACTIVATIONS", "with_head", "logistic_regression", "mlp"]

ACTIVATIONS = {
    "tanh": Tanh,
    "relu": Relu,
    "sigmoid": Sigmoid,
    "gelu": Gelu,
    "leaky_relu": LeakyRelu,
}

HEADS = {
    "linear": (losses.mse, None, lambda z: z),
    "sigmoid": (losses.binary_cross_entropy, losses.accuracy, jax.nn.sigmoid),
    "softmax": (losses.softmax_cross_entropy, losses.accuracy, jax.nn.softmax),
}


def with_head(net: Layer, head: str) -> Layer:
    """Attach a head's ``loss``, ``metric`` and ``predict`` to a network returning logits."""
    if head not in HEADS:
        raise ValueError(f"with_head: head must be one of {sorted(HEADS)}, got {head!r}")
    loss, metric, activation = HEADS[head]

    def predict(params, x):
        return activation(net.apply(params, x))

    return net.with_attrs(head=head, loss=loss, metric=metric, predict=predict)


def logistic_regression(d: int | None = None) -> Layer:
    """Logistic regression, a one-neuron network: ``y = σ(wᵀx + b)``.

    ``apply`` returns the logit ``z = wᵀx + b`` of shape ``(n, 1)``; ``predict`` returns
    ``σ(z)``; the loss is the binary cross-entropy
    ``L = −(1/n) Σ [ỹ log y + (1 − ỹ) log(1 − y)]``. The decision boundary is ``y = 0.5``,
    i.e. ``wᵀx + b = 0``. Params: ``{"w": (d, 1), "b": (1,)}``.

    ``d``, if given, is checked against the input width at ``init``.
    """
    if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
        raise ValueError(f"logistic_regression: d must be a positive int, got {d!r}")
    dense = Dense(1)

    def init(key, input_shape):
        if d is not None and tuple(input_shape)[-1:] != (d,):
            raise ValueError(
                f"logistic_regression({d}): expected inputs of width {d}, got shape "
                f"{tuple(input_shape)}"
            )
        return dense.init(key, input_shape)

    net = Layer(
        init, dense.apply, kind="logistic_regression", description=f"logistic_regression({d})"
    )
    return with_head(net, "sigmoid")


def mlp(
    sizes: Sequence[int],
    activation: str = "tanh",
    head: str = "softmax",
    *,
    w_init: str | None = None,
    dropout: float = 0.0,
) -> Layer:
    """A perceptron with hidden layers ``h = f(W h_prev + b)`` and a head.

    ``sizes`` are the widths of every Dense layer, hidden layers first and the output
    last: ``mlp([64, 64, 10])`` has two hidden layers of 64 units and 10 outputs. Params
    are keyed ``hidden_0``, ``hidden_1``, ... and ``output``.

    Heads (the lecture's three): ``"linear"`` (regression, ``y = wᵀh``), ``"sigmoid"``
    (binary, ``y = σ(wᵀh)``, output size 1) and ``"softmax"`` (``c`` classes,
    ``y = softmax(Wh)``). ``apply`` returns the output before the head's activation.
    """
    if isinstance(sizes, int) or not isinstance(sizes, Sequence) or not sizes:
        raise ValueError(f"mlp: sizes must be a non-empty list of ints, got {sizes!r}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"mlp: every size must be a positive int, got {list(sizes)}")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"mlp: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )
    if head not in HEADS:
        raise ValueError(f"mlp: head must be one of {sorted(HEADS)}, got {head!r}")
    if head == "sigmoid" and sizes[-1] != 1:
        raise ValueError(f"mlp: a sigmoid head has one output, got output size {sizes[-1]}")
    if w_init is None:
        w_init = "he_normal" if activation in ("relu", "leaky_relu", "gelu") else "xavier_normal"
    layers = []
    for i, width in enumerate(sizes[:-1]):
        layers += [named(f"hidden_{i}", Dense(width, w_init=w_init)), ACTIVATIONS[activation]()]
        if dropout:
            layers.append(Dropout(dropout))
    layers.append(named("output", Dense(sizes[-1], w_init="xavier_normal")))
    net = serial(*layers)
    net = net.with_attrs(kind="mlp", description=f"mlp({list(sizes)}, {activation!r}, {head!r})")
    return with_head(net, head)
