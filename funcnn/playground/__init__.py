"""The playground: the lecture's interactive 2-D classification page, trained by funcnn.

``python -m funcnn playground`` serves, on a loopback address, a page where clicks add
points of two classes and a logistic regression and an MLP (1–3 hidden layers, tanh / ReLU
/ sigmoid) train side by side, their decision regions redrawn live. Every update on the
server is one jit-compiled ``lax.scan`` of :func:`funcnn.train.train_step` steps.

The HTTP handling is in ``server``, the training sessions in ``sessions``, the checks of
the requests' fields in ``fields``.

>>> from funcnn.playground import make_server
>>> server = make_server(port=0)   # a free port on 127.0.0.1
>>> server.server_close()
"""

from .fields import LIMITS, RequestError
from .server import PlaygroundServer, check_loopback, make_server, serve
from .sessions import OPTIMIZERS, ModelConfig, Session, Trainer

__all__ = [
    "LIMITS",
    "OPTIMIZERS",
    "ModelConfig",
    "PlaygroundServer",
    "RequestError",
    "Session",
    "Trainer",
    "check_loopback",
    "make_server",
    "serve",
]
