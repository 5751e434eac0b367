"""How funcnn compiles: ``jax.jit`` with the XLA options that are fastest for its programs.

Every program funcnn compiles itself (:func:`funcnn.train.train_step`, ``fit``'s epochs,
``evaluate``, :func:`funcnn.inspect.grad_norms`, the playground) goes through :func:`jit`,
which is ``jax.jit`` plus :func:`compiler_options`. Use it for your own programs to get the
same speed: ``fn.jit(jax.grad(loss))``.

On a CPU, XLA can hand convolutions to the YNNPACK library as "library fusions". For the
small channel counts of LeNet-sized networks those run slower than XLA's own convolution
kernels — in the LeNet training step the YNNPACK weight gradients took 2.9 and 1.8 ms — so
on a CPU funcnn keeps YNNPACK for dots and reductions only. The numbers are the same up to
float32 summation order; ``docs/benchmarks.md`` has the measurements (LeNet gradient 13.1 →
10.7 ms, AlexNet's 642 → 542 ms on a 2-core machine). Nothing is changed:

- on any platform other than the CPU;
- when ``XLA_FLAGS`` already sets the option (yours wins);
- when the installed XLA does not know the option (older jaxlib): ``jax.jit`` as it is.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["compiler_options", "jit"]

_YNN_FUSION_TYPES = "xla_cpu_experimental_ynn_fusion_type"
# XLA's CPU default minus LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION
_CPU_OPTIONS = {
    _YNN_FUSION_TYPES: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


@functools.cache
def _cpu_options() -> tuple[tuple[str, str], ...]:
    if jax.default_backend() != "cpu":
        return ()
    if "compiler_options" not in inspect.signature(jax.jit).parameters:
        return ()
    flags = os.environ.get("XLA_FLAGS", "")
    options = {k: v for k, v in _CPU_OPTIONS.items() if f"--{k}" not in flags}
    if not options:
        return ()
    try:  # one tiny compile: does this XLA know the options?
        jax.jit(lambda: jnp.zeros(()), compiler_options=options).lower().compile()
    except Exception:  # an XLA without them rejects the compile; plain jax.jit then
        return ()
    return tuple(options.items())


def compiler_options() -> dict[str, str]:
    """The XLA options funcnn compiles with on this machine (``{}`` where there are none).

    On a CPU whose XLA supports it: ``xla_cpu_experimental_ynn_fusion_type`` set to XLA's
    default list without individual convolutions, so convolutions run on XLA's own kernels.

    >>> opts = compiler_options()
    >>> isinstance(opts, dict) and all(isinstance(v, str) for v in opts.values())
    True
    """
    return dict(_cpu_options())


def jit(fun: Callable | None = None, **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)`` with :func:`compiler_options` added.

    Options passed in ``kwargs["compiler_options"]`` win over funcnn's. Like ``jax.jit`` it
    works as a decorator, with or without arguments, and starts nothing until the function
    is first called or lowered: the options depend on the backend, which must not start at
    decoration time (a later ``jax.config.update`` or ``jax.distributed.initialize`` would
    fail).

    >>> import jax.numpy as jnp
    >>> f = jit(lambda x: jnp.sum(x * x))
    >>> float(f(jnp.arange(3.0)))
    5.0
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _Jitted(fun, kwargs)


class _Jitted:
    """``jax.jit`` of ``fun`` with funcnn's options, built on first use; every attribute of
    the jitted function (``lower``, ``trace``, ``eval_shape``, ...) is passed through."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun, self._kwargs, self._jitted = fun, kwargs, None
        functools.update_wrapper(self, fun)

    def _build(self) -> Any:
        if self._jitted is None:
            kwargs = dict(self._kwargs)
            options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
            if options:
                kwargs["compiler_options"] = options
            self._jitted = jax.jit(self._fun, **kwargs)
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._build()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_fun", "_kwargs", "_jitted"):
            raise AttributeError(name)  # dunders (copy, pickle probe them) and a half-built self
        return getattr(self._build(), name)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:  # as a method, like jax.jit's
        return self if obj is None else functools.partial(self, obj)
