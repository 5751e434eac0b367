"""The XLA options ``funcnn.jit`` compiles with on a CPU.

On a CPU, XLA can hand convolutions to the YNNPACK library as "library fusions". For the
small channel counts of LeNet-sized networks those run slower than XLA's own convolution
kernels (a profile of LeNet's gradient put its two weight gradients there, each slower than
XLA's kernel for the same convolution), so on a CPU funcnn keeps YNNPACK for dots and
reductions only. The numbers are the same up to float32 summation order; the measurements,
per program and per option tried, are in ``docs/benchmarks.md``. Nothing is set:

- on any platform other than the CPU;
- when ``XLA_FLAGS`` already sets the option (the user's setting wins);
- when the installed XLA does not know the option (an older jaxlib): ``jax.jit`` as it is.
"""

from __future__ import annotations

import functools
import inspect
import os

import jax
import jax.numpy as jnp

__all__ = ["CPU_OPTIONS", "xla_options"]

# XLA's CPU default minus LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION
CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    ),
}


@functools.cache
def xla_options() -> tuple[tuple[str, str], ...]:
    """The ``(option, value)`` pairs of :data:`CPU_OPTIONS` that apply on this machine.

    Probed once (the result is cached; ``xla_options.cache_clear()`` forgets it): ``()`` off
    a CPU, for an option ``XLA_FLAGS`` already sets, and for an XLA that rejects them.

    >>> all(name in CPU_OPTIONS for name, _ in xla_options())
    True
    """
    if jax.default_backend() != "cpu":
        return ()
    if "compiler_options" not in inspect.signature(jax.jit).parameters:
        return ()
    flags = os.environ.get("XLA_FLAGS", "")
    options = {k: v for k, v in CPU_OPTIONS.items() if f"--{k}" not in flags}
    if not options:
        return ()
    try:  # one tiny compile: does this XLA know the options?
        jax.jit(lambda: jnp.zeros(()), compiler_options=options).lower().compile()
    except Exception:  # an XLA without them rejects the compile; plain jax.jit then
        return ()
    return tuple(options.items())
