"""Ready-made networks of the lecture.

Every model is a :class:`~funcnn.core.Model`: a layer whose ``apply`` returns the
*pre-activation* output of its head (logits for classification), so that the losses can be
computed stably, with explicit fields for what the head adds:

* ``model.head``: ``"linear"``, ``"sigmoid"`` or ``"softmax"``;
* ``model.loss``: the matching loss from outputs (``mse``, ``binary_cross_entropy``,
  ``softmax_cross_entropy``);
* ``model.metric``: ``accuracy`` for classification heads, ``None`` for regression;
* ``model.predict(params, x)``: the head applied, the lecture's ``y``: ``wᵀh``, ``σ(wᵀh)``
  or ``softmax(Wh)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from . import checks, losses
from .core import Layer, Model, layer_scope, named, residual, serial
from .layers import (
    LRN,
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    Gelu,
    GlobalAvgPool,
    LeakyRelu,
    MaxPool,
    Relu,
    Sigmoid,
    Tanh,
)

__all__ = [
    "HEADS",
    "ACTIVATIONS",
    "with_head",
    "logistic_regression",
    "mlp",
    "lenet5",
    "alexnet",
    "resnet",
]

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


def with_head(net: Layer, head: str) -> Model:
    """Attach a head's ``loss``, ``metric`` and ``predict`` to a network returning logits.

    ``predict(params, x) = a(net.apply(params, x))`` with ``a`` the head's activation:
    the identity (``"linear"``), ``σ`` (``"sigmoid"``) or ``softmax`` (``"softmax"``).

    Args:
      net: a layer whose ``apply`` returns the pre-activation outputs ``z``, ``(n, c)``.
      head: ``"linear"``, ``"sigmoid"`` or ``"softmax"`` (see :data:`HEADS`).

    Returns:
      a :class:`~funcnn.core.Model` with ``net``'s fields and the head's ``head``, ``loss``,
      ``metric`` and ``activation``.

    >>> import jax, jax.numpy as jnp
    >>> from funcnn.layers import Dense
    >>> model = with_head(Dense(3), "softmax")
    >>> model.head, model.loss.__name__, model.metric.__name__
    ('softmax', 'softmax_cross_entropy', 'accuracy')
    >>> _, params = model.init(jax.random.key(0), (-1, 2))
    >>> p = model.predict(params, jnp.ones((4, 2)))
    >>> p.shape, bool(jnp.allclose(p.sum(axis=1), 1.0))
    ((4, 3), True)
    """
    if head not in HEADS:
        raise ValueError(f"with_head: head must be one of {sorted(HEADS)}, got {head!r}")
    if not isinstance(net, Layer):
        raise TypeError(f"with_head: net must be a Layer, got {net!r}")
    loss, metric, activation = HEADS[head]
    fields = {f.name: getattr(net, f.name) for f in dataclasses.fields(Layer)}
    return Model(**fields, head=head, loss=loss, metric=metric, activation=activation)


def logistic_regression(d: int | None = None) -> Model:
    """Logistic regression, a one-neuron network: ``y = σ(wᵀx + b)``.

    ``apply`` returns the logit ``z = wᵀx + b`` of shape ``(n, 1)``; ``predict`` returns
    ``σ(z)``; the loss is the binary cross-entropy
    ``L = −(1/n) Σ [ỹ log y + (1 − ỹ) log(1 − y)]``. The decision boundary is ``y = 0.5``,
    i.e. ``wᵀx + b = 0``. Params: ``{"w": (d, 1), "b": (1,)}``.

    ``init`` takes a PRNG key or an int seed; ``apply`` refuses params that are not exactly
    these (a missing bias, a bias of another shape, an integer leaf), naming the model:
    ``logistic_regression(2): Dense(1): params['b'] must have shape (1,), got shape (2,)``.

    Args:
      d: the input width; if given, it is checked against the input shape at ``init`` and
        against the inputs at ``apply``.

    >>> import jax, jax.numpy as jnp
    >>> model = logistic_regression(2)
    >>> shape, params = model.init(jax.random.key(0), (-1, 2))
    >>> shape, params["w"].shape, params["b"].shape
    ((-1, 1), (2, 1), (1,))
    >>> float(model.predict(params, jnp.zeros((1, 2)))[0, 0])  # σ(0) = 0.5
    0.5
    """
    d = checks.positive_int(d, "logistic_regression: d", allow_none=True)
    who, dense = f"logistic_regression({d})", Dense(1)

    def check_width(shape: tuple) -> None:
        if d is not None and tuple(shape)[-1:] not in ((d,), (-1,)):
            raise ValueError(f"{who}: expected inputs of width {d}, got shape {tuple(shape)}")

    def init(key, input_shape):
        shape = checks.input_shape(input_shape, who)
        check_width(shape)  # an unknown width (-1) is refused by Dense
        with layer_scope(who):
            return dense.init(key, shape)

    def apply(params, x, *, key=None, train=False):
        check_width(jnp.shape(x))
        with layer_scope(who):
            return dense.apply(params, x)

    net = Layer(init, apply, kind="logistic_regression", description=who)
    return with_head(net, "sigmoid")


def mlp(
    sizes: Sequence[int],
    activation: str = "tanh",
    head: str = "softmax",
    *,
    w_init: str | None = None,
    dropout: float = 0.0,
) -> Model:
    """A perceptron with hidden layers ``h = f(W h_prev + b)`` and a head.

    ``sizes`` are the widths of every Dense layer, hidden layers first and the output
    last: ``mlp([64, 64, 10])`` has two hidden layers of 64 units and 10 outputs. Params
    are keyed ``hidden_0``, ``hidden_1``, ... and ``output``.

    Heads (the lecture's three): ``"linear"`` (regression, ``y = wᵀh``), ``"sigmoid"``
    (binary, ``y = σ(wᵀh)``, output size 1) and ``"softmax"`` (``c`` classes,
    ``y = softmax(Wh)``). ``apply`` returns the output before the head's activation.

    Args:
      sizes: the widths of the Dense layers, the output last.
      activation: the hidden activation ``f``, one of :data:`ACTIVATIONS`.
      head: ``"linear"``, ``"sigmoid"`` or ``"softmax"``.
      w_init: the hidden layers' initializer; default He normal for ReLU-like
        activations, Xavier normal otherwise.
      dropout: a drop rate after every hidden activation (0: none).

    On inputs ``(n, d)``, ``apply`` returns ``(n, sizes[-1])``; ``hidden_i/w`` has shape
    ``(sizes[i-1], sizes[i])`` (``d`` for the first).

    >>> import jax, jax.numpy as jnp
    >>> model = mlp([16, 3], activation="relu")
    >>> shape, params = model.init(jax.random.key(0), (-1, 2))
    >>> shape, list(params), params["hidden_0"]["w"].shape, params["output"]["w"].shape
    ((-1, 3), ['hidden_0', 'output'], (2, 16), (16, 3))
    >>> model.apply(params, jnp.ones((5, 2))).shape
    (5, 3)
    """
    if isinstance(sizes, int) or not isinstance(sizes, Sequence) or not sizes:
        raise ValueError(f"mlp: sizes must be a non-empty list of ints, got {sizes!r}")
    sizes = [checks.positive_int(s, f"mlp: every size in {list(sizes)}") for s in sizes]
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
    net = net.replace(kind="mlp", description=f"mlp({list(sizes)}, {activation!r}, {head!r})")
    return with_head(net, head)


# ---------------------------------------------------------------- convolutional networks


def lenet5(
    num_classes: int = 10,
    *,
    activation: str = "tanh",
    pool: str = "avg",
    padding: str | int = "VALID",
    filters: tuple[int, int] = (6, 16),
    kernel: int = 5,
) -> Model:
    """LeNet-5 (LeCun et al., 1998): convolution + activation, pooling, then a perceptron.

    ``C1`` Conv(6, 5×5) → act → ``S2`` pool 2×2/2 → ``C3`` Conv(16, 5×5) → act → ``S4``
    pool 2×2/2 → Flatten → ``C5`` Dense(120) → act → ``F6`` Dense(84) → act → ``output``
    Dense(num_classes). On 32×32×1 images the maps are 28×28×6, 14×14×6, 10×10×16, 5×5×16
    (C5, a 5×5 convolution over 5×5 maps in the paper, is the same as a dense layer on the
    400 flattened values) and there are 61,706 parameters for 10 classes.

    Args:
      num_classes: the size of the softmax head.
      activation: ``"tanh"`` (the paper's squashing function) or another of
        :data:`ACTIVATIONS`, e.g. ``"relu"``.
      pool: ``"avg"`` (the paper's subsampling) or ``"max"``.
      padding: the convolutions' padding; ``"SAME"`` lets small images such as the 8×8
        digits through (8×8 → 4×4 → 2×2).
      filters: the number of filters of C1 and C3 (the paper's 6 and 16).
      kernel: the convolutions' kernel size ``F`` (the paper's 5).

    >>> from funcnn.inspect import summary
    >>> summary(lenet5(), (-1, 32, 32, 1)).total
    61706
    """
    checks.positive_int(num_classes, "lenet5: num_classes")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"lenet5: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )
    pools = {"avg": AvgPool, "max": MaxPool}
    if pool not in pools:
        raise ValueError(f"lenet5: pool must be 'avg' or 'max', got {pool!r}")
    if len(filters) != 2:
        raise ValueError(f"lenet5: filters must be a pair (C1, C3), got {filters!r}")
    act, Pool = ACTIVATIONS[activation], pools[pool]
    w_init = "he_normal" if activation in ("relu", "leaky_relu", "gelu") else "xavier_normal"
    net = serial(
        named("c1", Conv(filters[0], kernel, padding=padding, w_init=w_init)),
        act(),
        named("s2", Pool(2)),
        named("c3", Conv(filters[1], kernel, padding=padding, w_init=w_init)),
        act(),
        named("s4", Pool(2)),
        Flatten(),
        named("c5", Dense(120, w_init=w_init)),
        act(),
        named("f6", Dense(84, w_init=w_init)),
        act(),
        named("output", Dense(num_classes, w_init="xavier_normal")),
    )
    net = net.replace(kind="lenet5", description=f"lenet5({num_classes}, {activation!r})")
    return with_head(net, "softmax")


def alexnet(
    num_classes: int = 1000,
    *,
    two_towers: bool = False,
    dropout: float = 0.5,
    lrn: bool = True,
) -> Model:
    """AlexNet (Krizhevsky, Sutskever & Hinton, 2012) on 227×227×3 images.

    ``conv1`` Conv(96, 11×11, stride 4) → ReLU → LRN → MaxPool(3, 2) → ``conv2``
    Conv(256, 5×5, pad 2) → ReLU → LRN → MaxPool(3, 2) → ``conv3`` Conv(384, 3×3, pad 1)
    → ReLU → ``conv4`` Conv(384, 3×3, pad 1) → ReLU → ``conv5`` Conv(256, 3×3, pad 1) →
    ReLU → MaxPool(3, 2) → Flatten → ``fc6`` Dense(4096) → ReLU → Dropout(0.5) → ``fc7``
    Dense(4096) → ReLU → Dropout(0.5) → ``fc8`` Dense(num_classes).

    Maps: 55×55×96, 27×27×96, 27×27×256, 13×13×256, 13×13×384, 13×13×384, 13×13×256,
    6×6×256, then 4096, 4096, 1000. The single-tower form has 62,378,344 parameters.

    Args:
      num_classes: the size of the softmax head.
      two_towers: the paper's split over two GPUs: conv2, conv4 and conv5 only see the
        channels of their own tower (``groups=2``), giving 60,965,224 parameters.
      dropout: the drop rate in the dense layers (0 to turn it off).
      lrn: keep the local response normalization after conv1 and conv2.

    >>> from funcnn.inspect import summary
    >>> summary(alexnet(), (-1, 227, 227, 3)).total
    62378344
    """
    checks.positive_int(num_classes, "alexnet: num_classes")
    g = 2 if two_towers else 1
    norm = [LRN()] if lrn else []
    drop = [Dropout(dropout)] if dropout else []
    net = serial(
        named("conv1", Conv(96, 11, stride=4)),
        Relu(),
        *norm,
        MaxPool(3, 2),
        named("conv2", Conv(256, 5, padding=2, groups=g)),
        Relu(),
        *norm,
        MaxPool(3, 2),
        named("conv3", Conv(384, 3, padding=1)),
        Relu(),
        named("conv4", Conv(384, 3, padding=1, groups=g)),
        Relu(),
        named("conv5", Conv(256, 3, padding=1, groups=g)),
        Relu(),
        MaxPool(3, 2),
        Flatten(),
        named("fc6", Dense(4096, w_init="he_normal")),
        Relu(),
        *drop,
        named("fc7", Dense(4096, w_init="he_normal")),
        Relu(),
        *drop,
        named("fc8", Dense(num_classes, w_init="xavier_normal")),
    )
    desc = f"alexnet({num_classes}{', two_towers=True' if two_towers else ''})"
    return with_head(net.replace(kind="alexnet", description=desc), "softmax")


# ------------------------------------------------------------------- residual networks


def _conv_bn(filters: int, kernel: int, stride: int, batch_norm: bool) -> list[Layer]:
    """``Conv`` (no bias when BatchNorm follows: its offset β plays that part) and BatchNorm."""
    conv = Conv(filters, kernel, stride, padding="SAME", use_bias=not batch_norm)
    return [named("conv", conv), named("bn", BatchNorm())] if batch_norm else [named("conv", conv)]


def _basic_block(filters: int, stride: int, shortcut: bool, batch_norm: bool, projects: bool):
    """He et al.'s basic block: ``y = relu(F(x) + S(x))`` with
    ``F = conv3×3(stride) → BN → relu → conv3×3 → BN`` and ``S`` the identity, or a 1×1
    convolution (and BN) where the shape changes; without ``shortcut``, ``y = relu(F(x))``."""
    body = [
        named("a", serial(*_conv_bn(filters, 3, stride, batch_norm))),
        Relu(),
        named("b", serial(*_conv_bn(filters, 3, 1, batch_norm))),
    ]
    if not shortcut:
        return serial(*body, Relu())
    skip = serial(*_conv_bn(filters, 1, stride, batch_norm)) if projects else None
    return serial(residual(*body, shortcut=skip), Relu())


def resnet(
    num_classes: int = 10,
    *,
    widths: Sequence[int] = (16, 32, 64),
    blocks: int = 2,
    shortcut: bool = True,
    batch_norm: bool = True,
) -> Model:
    """A small residual network (He et al., 2016, the CIFAR form) for NHWC images.

    ``stem`` conv3×3 (``widths[0]``) → BN → ReLU, then one stage per width of ``blocks``
    basic blocks ``y = relu(F(x) + S(x))``, ``F = conv3×3 → BN → ReLU → conv3×3 → BN``; the
    first block of every stage after the first halves the size (stride 2) and its shortcut
    ``S`` is a 1×1 convolution with BatchNorm (a projection), the others the identity. Then
    global average pooling and a dense softmax head. Depth ``6·blocks + 2`` for three
    stages. 8×8 digits go 8 → 8 → 4 → 2; 32×32×3 images 32 → 32 → 16 → 8.

    ``shortcut=False`` gives the plain network of the same depth (``y = relu(F(x))``), and
    ``batch_norm=False`` drops every BatchNorm (the convolutions get biases), so that the
    lecture's claim can be shown: deep plain networks get vanishing gradients, residual
    ones train. With BatchNorm the model is stateful: use ``init_with_state``.

    Args:
      num_classes: the size of the softmax head.
      widths: the filters of each stage.
      blocks: basic blocks per stage.
      shortcut: the residual connections (``False``: the plain network).
      batch_norm: BatchNorm after every convolution.

    >>> import jax
    >>> model = resnet()
    >>> shape, params, state = model.init_with_state(jax.random.key(0), (-1, 8, 8, 1))
    >>> shape, model.stateful, sorted(params)[:3], sorted(state["stem"])
    ((-1, 10), True, ['output', 'stage_0_block_0', 'stage_0_block_1'], ['bn'])
    """
    checks.positive_int(num_classes, "resnet: num_classes")
    blocks = checks.positive_int(blocks, "resnet: blocks")
    widths = [checks.positive_int(w, f"resnet: every width in {list(widths)}") for w in widths]
    if not widths:
        raise ValueError("resnet: widths must name at least one stage")
    stages = []
    for i, width in enumerate(widths):
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 else 1
            projects = i > 0 and j == 0  # the size halves (and the width grows)
            block = _basic_block(width, stride, shortcut, batch_norm, projects)
            stages.append(named(f"stage_{i}_block_{j}", block))
    net = serial(
        named("stem", serial(*_conv_bn(widths[0], 3, 1, batch_norm))),
        Relu(),
        *stages,
        GlobalAvgPool(),
        named("output", Dense(num_classes, w_init="xavier_normal")),
    )
    kind = "resnet" if shortcut else "plain"
    desc = f"resnet({num_classes}, widths={list(widths)}, blocks={blocks}"
    desc += f"{'' if shortcut else ', shortcut=False'}{'' if batch_norm else ', batch_norm=False'})"
    return with_head(net.replace(kind=kind, description=desc), "softmax")
