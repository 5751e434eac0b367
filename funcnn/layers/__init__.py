"""Layer constructors: each a thin ``(init, apply)`` pair over one functional op.

Every constructor returns a :class:`funcnn.core.Layer`; call it, even without arguments
(``Tanh()``), and compose with :func:`funcnn.core.serial`.
"""

from __future__ import annotations

from .activations import (
    Elu,
    Exp,
    Gelu,
    Identity,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Selu,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
    elementwise,
)
from .attention import MultiHeadAttention
from .conv import LRN, Conv, Conv1D, Conv3D, ConvTranspose
from .dense import Dense, Dropout, Flatten
from .embedding import Embedding
from .norm import BatchNorm, GroupNorm, LayerNorm
from .pooling import AvgPool, GlobalAvgPool, MaxPool, SumPool
from .recurrent import GRU, LSTM, SimpleRNN

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
    "Elu",
    "Selu",
    "Softplus",
    "Exp",
    "elementwise",
    "Conv",
    "Conv1D",
    "Conv3D",
    "ConvTranspose",
    "MaxPool",
    "AvgPool",
    "SumPool",
    "Flatten",
    "LRN",
    "GlobalAvgPool",
    "BatchNorm",
    "LayerNorm",
    "GroupNorm",
    "Embedding",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "MultiHeadAttention",
]
