"""The layer pair and the combinators that build networks out of layers.

A layer is a pair ``(init, apply)``:

* ``init(key, input_shape) -> (output_shape, params)`` draws the weights; the batch
  dimension of ``input_shape`` may be ``-1``.
* ``apply(params, x, *, key=None, train=False) -> y`` is pure; ``key`` feeds dropout.

Combinators (``serial``, ``parallel``, ``residual``, ...) are layers themselves. They key
their children's params by name: a user's name given with :func:`named`, or a stable
automatic name ``<kind>_<i>`` counted per kind (``dense_0``, ``tanh_0``, ``dense_1``).
Children without parameters add no key.

State, for the layers that keep some (BatchNorm's running statistics), is a second pytree
beside params, named like params (``{"block_0": {"bn": {"mean": ..., "var": ...}}}``),
never differentiated and never seen by the optimizer. Every layer has

* ``init_with_state(key, input_shape) -> (output_shape, params, state)``;
* ``apply_with_state(params, state, x, *, key=None, train=False) -> (y, state)``;

and says whether it keeps state (``layer.stateful``; a combinator does when a child does).
For a stateless layer the state is ``{}`` and passes through, so stateless code keeps the
plain pair untouched. Plain ``apply`` on a network with stateful layers is an error naming
the stateful layer and saying to call ``apply_with_state``; evaluation (``train=False``)
never changes the state. Training threads it with :func:`funcnn.train_step_with_state`
and ``fit(..., state=...)``.

Two type aliases name what flows through ``init``:

* ``Shape``: a tuple of ints, the batch (first) dimension possibly ``-1`` for "any",
  e.g. ``(-1, 28, 28, 1)``; for layers with several inputs or outputs (``parallel``,
  ``fanout``), a tuple of such tuples.
* ``Params``: a layer's parameters, a nested dict of arrays such as
  ``{"hidden": {"w": (2, 3), "b": (3,)}}``; ``{}`` for a layer without parameters.
"""

from ..checks import input_shape as check_input_shape
from ..checks import shapes_match
from .combinators import fanin_concat, fanin_sum, fanout, named, parallel, residual, serial
from .layer import Layer, Model, Params, Shape, layer_scope

__all__ = [
    "Layer",
    "Model",
    "Shape",
    "Params",
    "serial",
    "parallel",
    "fanout",
    "fanin_sum",
    "fanin_concat",
    "residual",
    "named",
    "layer_scope",
    "check_input_shape",
    "shapes_match",
]
