"""Pure array operations beyond the lecture's: convolution of any rank and its transpose,
pooling in any layout, recurrent cells, attention and embedding lookups.

Like :mod:`funcnn.functional` (whose 2-D convolution and NHWC pooling the ops here call for
those cases, so that its CPU kernels keep applying), every function is pure, works under
``jax.jit``, ``jax.grad`` and ``jax.vmap``, and is the ``lax`` / ``jax.numpy`` call its formula
reads as. The import direction: :mod:`funcnn.checks` ← :mod:`funcnn.functional` ← ``ops`` ←
:mod:`funcnn.layers`.
"""

from __future__ import annotations

from .attention import attention_weights, causal_mask, dot_product_attention
from .convolution import (
    conv,
    conv_transpose,
    conv_transpose_output_size,
    conv_transpose_padding,
    padding_pairs,
)
from .lookup import embedding
from .pooling import Layout, avg_pool, channels_last, layout, max_pool, sum_pool
from .recurrent import gru_cell, lstm_cell, recur, simple_rnn_cell

__all__ = [
    "padding_pairs",
    "conv",
    "conv_transpose",
    "conv_transpose_padding",
    "conv_transpose_output_size",
    "Layout",
    "layout",
    "channels_last",
    "max_pool",
    "avg_pool",
    "sum_pool",
    "embedding",
    "simple_rnn_cell",
    "lstm_cell",
    "gru_cell",
    "recur",
    "causal_mask",
    "attention_weights",
    "dot_product_attention",
]
