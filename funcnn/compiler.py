"""How funcnn compiles: :func:`jit`, ``jax.jit`` tuned for the CPU, and the switch to untune it.

Every program funcnn compiles itself (:func:`funcnn.train.train_step`, ``fit``'s epochs,
``evaluate``, :func:`funcnn.inspect.grad_norms`, the playground) goes through :func:`jit`.
Use it for your own programs to get the same speed: ``fn.jit(jax.grad(loss))``. On a CPU it
differs from ``jax.jit`` in two ways, both computing the same numbers up to float32 summation
order (``tests/test_cpu_fast_paths.py``, ``tests/test_compiler.py``), both measured in
``docs/benchmarks.md``:

- it compiles with :func:`compiler_options`: XLA's own kernels for convolutions rather than
  YNNPACK's library fusions, which are slower for small channel counts;
- while it traces your function, :func:`funcnn.functional.conv2d` and
  :func:`funcnn.functional.max_pool` may compute their ``lax`` op by an equivalent
  formulation that XLA's CPU backend runs faster (a one-channel convolution as shifted
  products; an in-place input gradient for 2 to 8 input channels; a cheaper derivative for
  tiling max pooling). ``lax.platform_dependent`` chooses it, so a program lowered for a GPU
  or TPU keeps the ``lax`` ops.

Outside ``funcnn.jit`` (``jax.jit``, ``jax.make_jaxpr``, ``jax.export``,
:func:`funcnn.graph.trace`) those functions are always the plain ``lax`` ops.

**The switch.** For exactly what ``jax.jit`` would compile (no options, no CPU formulations),
set the environment variable ``FUNCNN_CPU_TUNING=0``, or call :func:`cpu_tuning`:
``cpu_tuning(False)`` for the rest of the process, ``with cpu_tuning(False): ...`` for a
block. A ``funcnn.jit`` function reads the switch when it is built, on its first call or
lowering, and keeps that setting; :func:`compiler_options` reads it on every call.

funcnn's XLA options are left out, the switch aside:

- on any platform other than the CPU;
- when ``XLA_FLAGS`` already sets the option (yours wins);
- when the installed XLA does not know the option (older jaxlib): ``jax.jit`` as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import jax

from . import _cpu, checks

__all__ = ["compiler_options", "cpu_tuning", "cpu_tuning_enabled", "jit"]


def compiler_options() -> dict[str, str]:
    """The XLA options funcnn compiles with on this machine (``{}`` where there are none).

    On a CPU whose XLA supports it, with the CPU tuning on: ``xla_cpu_experimental_ynn_fusion_type``
    set to XLA's default list without individual convolutions, so convolutions run on XLA's
    own kernels.

    >>> opts = compiler_options()
    >>> isinstance(opts, dict) and all(isinstance(v, str) for v in opts.values())
    True
    >>> with cpu_tuning(False):
    ...     compiler_options()
    {}
    """
    return dict(_cpu.xla_options()) if _cpu.enabled() else {}


def cpu_tuning_enabled() -> bool:
    """Whether a :func:`jit` function built now gets funcnn's CPU tuning: the last
    :func:`cpu_tuning` setting, else on unless the environment sets ``FUNCNN_CPU_TUNING=0``
    (or ``false``, ``off``, ``no``).

    >>> with cpu_tuning(False):
    ...     cpu_tuning_enabled()
    False
    """
    return _cpu.enabled()


def cpu_tuning(enabled: bool) -> AbstractContextManager[None]:
    """Turn funcnn's CPU tuning (XLA options and CPU formulations) on or off.

    A plain call sets it for the process, over ``FUNCNN_CPU_TUNING``; used as a context
    manager it holds for the ``with`` block, then the previous setting returns. It applies
    to :func:`jit` functions built from then on (a function is built on its first call or
    lowering), and to :func:`compiler_options`.

    >>> import jax, jax.numpy as jnp
    >>> def f(x):
    ...     return jnp.sin(x) * 2
    >>> with cpu_tuning(False):  # exactly jax.jit's program
    ...     ours = jit(f).lower(1.0).as_text()
    >>> ours == jax.jit(f).lower(1.0).as_text()
    True
    """
    return _RestoreTuning(_cpu.set_enabled(checks.boolean(enabled, "cpu_tuning: enabled")))


class _RestoreTuning(AbstractContextManager):
    """What :func:`cpu_tuning` returns: at the end of a ``with`` block, the setting before."""

    def __init__(self, previous: bool | None):
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _cpu.set_enabled(self._previous)


def jit(fun: Callable | None = None, **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)`` with funcnn's CPU tuning: :func:`compiler_options` added,
    and ``fun`` traced with the CPU formulations of ``conv2d`` and ``max_pool`` allowed.

    Options passed in ``kwargs["compiler_options"]`` win over funcnn's. With the tuning off
    (:func:`cpu_tuning`) it is ``jax.jit(fun, **kwargs)`` itself. Like ``jax.jit`` it works
    as a decorator, with or without arguments, and starts nothing until the function is first
    called or lowered: the options depend on the backend, which must not start at decoration
    time (a later ``jax.config.update`` or ``jax.distributed.initialize`` would fail).

    >>> import jax.numpy as jnp
    >>> f = jit(lambda x: jnp.sum(x * x))
    >>> float(f(jnp.arange(3.0)))
    5.0
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _Jitted(fun, kwargs)


class _Jitted:
    """``jax.jit`` of ``fun`` with funcnn's tuning, built on first use; every attribute of
    the jitted function (``lower``, ``trace``, ``eval_shape``, ...) is passed through."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun, self._kwargs = fun, kwargs
        self._jitted: Any = None  # jax.jit of fun with funcnn's options, built on first use
        self._nested: Any = None  # the same without options, inside another transformation
        functools.update_wrapper(self, fun)

    def _build(self) -> Any:
        if self._jitted is None:
            if not _cpu.enabled():
                self._jitted = jax.jit(self._fun, **self._kwargs)
                return self._jitted
            kwargs = dict(self._kwargs)
            options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
            if options:
                kwargs["compiler_options"] = options
            self._jitted = jax.jit(_cpu.allow_fast_paths(self._fun), **kwargs)
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._build()(*args, **kwargs)
        except ValueError as err:
            # called inside another transformation (jax.grad, an outer jit): XLA options
            # belong to the outermost program, so this one is traced without its own
            if "compiler_options" not in str(err) or "top-level" not in str(err):
                raise
        return self._build_nested()(*args, **kwargs)

    def _build_nested(self) -> Any:
        if self._nested is None:
            kwargs = {k: v for k, v in self._kwargs.items() if k != "compiler_options"}
            fun = _cpu.allow_fast_paths(self._fun) if _cpu.enabled() else self._fun
            self._nested = jax.jit(fun, **kwargs)
        return self._nested

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_fun", "_kwargs", "_jitted", "_nested"):
            raise AttributeError(name)  # dunders (copy, pickle probe them) and a half-built self
        return getattr(self._build(), name)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:  # as a method, like jax.jit's
        return self if obj is None else functools.partial(self, obj)
