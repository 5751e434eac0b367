"""Training: a pure, jit-compiled step and ``fit``, the loop of epochs around it.

A training step is the pure function

``(params, opt_state, batch, key) -> (params, opt_state, metrics)``

that computes ``L(θ)`` on the batch, its gradient ``∇L(θ)`` with ``jax.grad``, and the
optimizer's update (for plain SGD, ``θ ← θ − α ∇L(θ)``). ``fit`` runs it over shuffled
minibatches for a number of epochs: ``batch_size=1`` is SGD, ``batch_size=n`` full-batch
gradient descent, anything between minibatch SGD. With ``scan=True`` each epoch is one
compiled ``lax.scan`` over its minibatches, with the data kept on the device.

A model with state (BatchNorm) trains with :func:`train_step_with_state`,
``(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)``, and
``fit(..., state=...)``; the state rides beside the params, never seen by the optimizer.

This package knows models only through their ``apply`` function (and the ``loss`` /
``metric`` a :class:`~funcnn.core.Model` carries). Its parts, in the order ``fit`` uses
them:

* ``model``: a model's apply function, loss and metric;
* ``settings``: ``fit``'s arguments checked into one frozen record, and the label check;
* ``step``: the pure training step, its non-finite guard, :func:`train_step`;
* ``precision``: mixed precision, :class:`Precision`, and float16's loss scaling;
* ``evaluation``: :func:`evaluate`, the loss and metrics over a whole dataset;
* ``programs``: the compiled programs of an epoch (loop step and scan) and their cache;
* ``state``: the run state and its checkpoint policy;
* ``epochs``: the epoch loop; ``early_stopping``: improvement, patience, best params;
* ``fitting``: :func:`fit` itself.
"""

from .evaluation import evaluate
from .fitting import FitResult, fit
from .precision import Precision
from .step import NonFiniteError, train_step, train_step_with_state

__all__ = [
    "train_step",
    "train_step_with_state",
    "evaluate",
    "fit",
    "FitResult",
    "NonFiniteError",
    "Precision",
]
