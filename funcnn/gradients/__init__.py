"""Gradients made visible: finite-difference checks, hand-derived formulas, per-example grads.

* :func:`check_grads` compares ``jax.grad``, ``jax.vjp`` and ``jax.jvp`` with central finite
  differences ``(f(θ + h eᵢ) − f(θ − h eᵢ)) / 2h`` in float64, leaf by leaf of a params pytree,
  and names the worst leaf and element.
* :mod:`funcnn.reference` (also reachable as ``gradients.reference``) holds the gradients
  derived by hand: linear, logistic and softmax regression, a one-hidden-layer perceptron,
  convolution and max pooling. :func:`compare` prints automatic against hand-derived,
  leaf by leaf.
* :func:`per_example` gives one gradient per example with ``jax.vmap``.

The check is split into named parts, each a module of this package: ``probe`` (the leaves,
the cotangent and the elements to probe), ``finite_differences`` (the estimates beside
jax's derivatives), ``report`` (the comparison and the report) and ``check``
(``check_grads`` itself).
"""

from __future__ import annotations

from .. import reference

# isort: off
# in the order the API reference lists them (it follows the imports)
from .report import LeafCheck, GradCheckError, GradCheckReport, path_str
from .check import check_grads
from .comparison import Comparison, compare
from .examplewise import per_example
from .check import MODES as MODES

# isort: on

__all__ = [
    "check_grads",
    "GradCheckReport",
    "LeafCheck",
    "GradCheckError",
    "compare",
    "Comparison",
    "per_example",
    "path_str",
    "reference",
]
