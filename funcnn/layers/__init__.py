"""Layer constructors: each a thin ``(init, apply)`` pair over one functional op.

Every constructor returns a :class:`funcnn.core.Layer`; call it, even without arguments
(``Tanh()``), and compose with :func:`funcnn.core.serial`.
"""

from __future__ import annotations

from .activations import (
    Gelu,
    Identity,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Softmax,
    Tanh,
    elementwise,
)
from .conv import LRN, AvgPool, Conv, GlobalAvgPool, MaxPool
from .dense import Dense, Dropout, Flatten
from .norm import BatchNorm, GroupNorm, LayerNorm

__all__ = [
    "Dense",
    "Dropout",
    "Identity",
    "Tanh",
    "Relu",
    "Sigmoid",
    "Softmax",
    "LogSoftmax",
    "Gelu",
    "LeakyRelu",
    "elementwise",
    "Conv",
    "MaxPool",
    "AvgPool",
    "Flatten",
    "LRN",
    "GlobalAvgPool",
    "BatchNorm",
    "LayerNorm",
    "GroupNorm",
]
