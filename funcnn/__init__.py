"""funcnn: a small, exact, fast functional neural-network library for JAX.

Networks are pure functions over parameter pytrees, built from ``(init, apply)`` pairs;
gradients come from ``jax.grad``, optimizers from optax, and ``jax.jit`` compiles whole
training steps and epochs.
"""

from . import (
    checkpoint,
    compiler,
    core,
    data,
    functional,
    gradients,
    graph,
    initializers,
    inspect,
    layers,
    losses,
    models,
    reference,
    train,
)
from .compiler import jit
from .core import Layer, Model, fanin_concat, fanin_sum, fanout, named, parallel, residual, serial
from .functional import conv_output_size
from .inspect import param_count, summary
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
    GroupNorm,
    Identity,
    LayerNorm,
    LeakyRelu,
    LogSoftmax,
    MaxPool,
    Relu,
    Sigmoid,
    Softmax,
    Tanh,
)
from .train import FitResult, NonFiniteError, evaluate, fit, train_step, train_step_with_state

__version__ = "0.1.0"

__all__ = [
    "core",
    "compiler",
    "jit",
    "data",
    "functional",
    "initializers",
    "layers",
    "losses",
    "models",
    "train",
    "gradients",
    "graph",
    "inspect",
    "reference",
    "Layer",
    "Model",
    "serial",
    "parallel",
    "fanout",
    "fanin_sum",
    "fanin_concat",
    "residual",
    "named",
    "Dense",
    "Dropout",
    "Gelu",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "Relu",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "fit",
    "evaluate",
    "train_step",
    "train_step_with_state",
    "FitResult",
    "checkpoint",
    "NonFiniteError",
    "inspect",
    "Conv",
    "MaxPool",
    "AvgPool",
    "Flatten",
    "LRN",
    "BatchNorm",
    "LayerNorm",
    "GroupNorm",
    "GlobalAvgPool",
    "conv_output_size",
    "summary",
    "param_count",
]
