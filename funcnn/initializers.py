"""Weight initialization schemes of the lecture, by name, built on ``jax.nn.initializers``.

Every initializer has the ``jax.nn.initializers`` signature ``init(key, shape, dtype)``
and returns an array of that shape and dtype; ``Initializer`` names that type,
``Callable[[key, shape, dtype], Array]``. The functions below with arguments
(``normal(stddev)``, ``he_normal()``, ...) build one; ``zeros`` and ``ones`` are
initializers themselves.
For a kernel of shape ``(..., fan_in, fan_out)`` (Dense ``(n_in, n_out)``, Conv HWIO), the
fans count the receptive field: ``fan_in = H·W·I``, ``fan_out = H·W·O``.

=================== ==================================================
name                distribution
=================== ==================================================
``zeros``           0 (every unit the same: the symmetry never breaks)
``ones``            1
``standard_normal`` N(0, 1) (saturates tanh in deep nets)
``lecun_normal``    N(0, 1/fan_in): the lecture's N(0, 1/dim W)
``xavier_normal``   N(0, 2/(fan_in + fan_out)) (Glorot & Bengio, 2010)
``xavier_uniform``  U(−a, a), a = √(6/(fan_in + fan_out))
``he_normal``       N(0, 2/fan_in) (He et al., 2015), for ReLU
``he_uniform``      U(−a, a), a = √(6/fan_in)
=================== ==================================================
"""

from __future__ import annotations

from collections.abc import Callable

import jax.nn.initializers as jinit

__all__ = [
    "Initializer",
    "get",
    "zeros",
    "ones",
    "constant",
    "normal",
    "standard_normal",
    "lecun_normal",
    "xavier_normal",
    "xavier_uniform",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "NAMES",
]

# The type of an initializer: init(key, shape, dtype) -> Array, as in jax.nn.initializers.
Initializer = Callable  # (key, shape, dtype) -> Array

zeros = jinit.zeros
ones = jinit.ones


def constant(value: float) -> Initializer:
    """Every weight equal to ``value``: ``w_ij = value``.

    Args:
      value: the constant.

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> constant(0.5)(jax.random.key(0), (2, 3), jnp.float32).tolist()
    [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    """
    return jinit.constant(value)


def normal(stddev: float = 1.0) -> Initializer:
    """N(0, stddev²), independent of the fans.

    Args:
      stddev: the standard deviation, ``> 0``.

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> w = normal(0.01)(jax.random.key(0), (300, 200), jnp.float32)
    >>> w.shape, bool(abs(w.std() - 0.01) < 0.0005)
    ((300, 200), True)
    """
    if not stddev > 0:
        raise ValueError(f"normal: stddev must be > 0, got {stddev!r}")
    return jinit.normal(stddev)


def standard_normal() -> Initializer:
    """N(0, 1): the naive choice whose activations saturate in deep tanh networks.

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> w = standard_normal()(jax.random.key(0), (300, 200), jnp.float32)
    >>> bool(abs(w.mean()) < 0.05), bool(abs(w.std() - 1) < 0.05)
    (True, True)
    """
    return jinit.normal(1.0)


def lecun_normal() -> Initializer:
    """N(0, 1/fan_in), untruncated: the lecture's N(0, 1/dim W); keeps Var(Wx) ≈ Var(x).

    For a kernel ``(..., fan_in, fan_out)`` (Dense ``(n_in, n_out)``, Conv HWIO with the
    receptive field counted in both fans).

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> w = lecun_normal()(jax.random.key(0), (400, 300), jnp.float32)
    >>> bool(abs(w.var() * 400 - 1) < 0.05)  # Var = 1/fan_in
    True
    """
    return jinit.variance_scaling(1.0, "fan_in", "normal")


def xavier_normal() -> Initializer:
    """Xavier/Glorot normal: N(0, 2/(fan_in + fan_out)); also named ``glorot_normal``.

    For a kernel ``(..., fan_in, fan_out)`` (Dense ``(n_in, n_out)``, Conv HWIO with the
    receptive field counted in both fans).

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> w = xavier_normal()(jax.random.key(0), (400, 300), jnp.float32)
    >>> bool(abs(w.var() * (400 + 300) / 2 - 1) < 0.05)  # Var = 2/(fan_in + fan_out)
    True
    """
    return jinit.variance_scaling(1.0, "fan_avg", "normal")


def xavier_uniform() -> Initializer:
    """Xavier/Glorot uniform: U(−a, a) with a = √(6/(fan_in + fan_out)); also named
    ``glorot_uniform``. Its variance ``a²/3`` is Xavier normal's ``2/(fan_in + fan_out)``.

    For a kernel ``(..., fan_in, fan_out)`` (Dense ``(n_in, n_out)``, Conv HWIO with the
    receptive field counted in both fans).

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> w = xavier_uniform()(jax.random.key(0), (400, 300), jnp.float32)
    >>> a = (6 / (400 + 300)) ** 0.5
    >>> bool(jnp.abs(w).max() <= a), bool(abs(w.var() * (400 + 300) / 2 - 1) < 0.05)
    (True, True)
    """
    return jinit.variance_scaling(1.0, "fan_avg", "uniform")


def he_normal() -> Initializer:
    """He/Kaiming normal: N(0, 2/fan_in), for ReLU networks.

    For a kernel ``(..., fan_in, fan_out)`` (Dense ``(n_in, n_out)``, Conv HWIO with the
    receptive field counted in both fans).

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> w = he_normal()(jax.random.key(0), (3, 3, 64, 64), jnp.float32)  # fan_in = 3·3·64
    >>> bool(abs(w.var() * 576 / 2 - 1) < 0.05)
    True
    """
    return jinit.variance_scaling(2.0, "fan_in", "normal")


def he_uniform() -> Initializer:
    """He/Kaiming uniform: U(−a, a) with a = √(6/fan_in), variance ``2/fan_in``.

    For a kernel ``(..., fan_in, fan_out)`` (Dense ``(n_in, n_out)``, Conv HWIO with the
    receptive field counted in both fans).

    Returns:
      an initializer ``(key, shape, dtype) -> array``.

    >>> import jax, jax.numpy as jnp
    >>> w = he_uniform()(jax.random.key(0), (400, 300), jnp.float32)
    >>> bool(jnp.abs(w).max() <= (6 / 400) ** 0.5), bool(abs(w.var() * 400 / 2 - 1) < 0.05)
    (True, True)
    """
    return jinit.variance_scaling(2.0, "fan_in", "uniform")


glorot_normal = xavier_normal
glorot_uniform = xavier_uniform

NAMES: dict[str, Callable[[], Initializer]] = {
    "zeros": lambda: zeros,
    "ones": lambda: ones,
    "standard_normal": standard_normal,
    "lecun_normal": lecun_normal,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "glorot_normal": xavier_normal,
    "glorot_uniform": xavier_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "kaiming_uniform": he_uniform,
}


def get(init: str | Initializer, *, argument: str = "init") -> Initializer:
    """Resolve an initializer given by name (see the table above) or as a callable.

    >>> get("xavier_uniform") is not None
    True
    """
    if isinstance(init, str):
        try:
            return NAMES[init]()
        except KeyError:
            raise ValueError(
                f"{argument}: unknown initializer {init!r}; choose one of {sorted(NAMES)} "
                "or pass a callable (key, shape, dtype) -> array"
            ) from None
    if callable(init):
        return init
    raise TypeError(f"{argument}: expected an initializer name or callable, got {init!r}")
