"""``load`` and ``load_meta``: a checkpoint read back, checked against a template."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .archive import read_checkpoint
from .saving import SCALARS, flatten

__all__ = ["load", "load_meta"]


def _like_leaf(name: str, leaf: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the template leaf and give it the template's type."""
    label = name or "<root>"
    if isinstance(leaf, SCALARS) and not isinstance(leaf, np.generic):
        want_shape, want_dtype = (), np.asarray(leaf).dtype
    elif hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        want_shape, want_dtype = tuple(leaf.shape), leaf.dtype
    else:
        raise TypeError(
            f"{where}: like's leaf {label} is a {type(leaf).__name__}; expected an array, "
            "a number or a jax.ShapeDtypeStruct"
        )
    if tuple(value.shape) != want_shape:
        raise ValueError(
            f"{where}: {label} has shape {tuple(value.shape)} in the file, but like expects "
            f"{want_shape}"
        )
    if value.dtype != want_dtype:
        raise ValueError(
            f"{where}: {label} has dtype {value.dtype} in the file, but like expects {want_dtype}"
        )
    if isinstance(leaf, SCALARS) and not isinstance(leaf, np.generic):
        return type(leaf)(np.asarray(value).item())
    if isinstance(leaf, np.ndarray | np.generic):
        return np.asarray(value)[()] if isinstance(leaf, np.generic) else np.asarray(value)
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        return jax.device_put(value, leaf.sharding)
    return jnp.asarray(value)


def load(path: str | os.PathLike, like: Any = None) -> Any:
    """Read a checkpoint written by :func:`~funcnn.checkpoint.save`, checked against the
    template ``like``.

    With ``like``, the result has ``like``'s pytree structure, each leaf of ``like``'s
    shape and dtype and of its kind (jax array on the template's device, numpy array,
    Python number, PRNG key); the first path where the file differs is named in a
    ValueError. Without ``like``, a flat ``{path: array}`` dict. A load that succeeds
    returns exactly the bytes that were saved: every entry is checked against the CRC-32,
    size, shape and dtype the header recorded.

    Args:
      path: a checkpoint file.
      like: a pytree with the expected structure; leaves are arrays, numbers or
        ``jax.ShapeDtypeStruct`` (so ``jax.eval_shape`` output works).

    Raises:
      CheckpointError: (a ``ValueError``) the file is empty, truncated, corrupt, tampered
        with or hostile (object arrays, a compression bomb, a header that disagrees with
        the data); nothing is allocated beyond what the file can hold.
      ValueError: the file reads well but does not match ``like``.
      FileNotFoundError: there is no such file.

    >>> import jax.numpy as jnp, tempfile, os
    >>> from funcnn.checkpoint import save
    >>> f = os.path.join(tempfile.mkdtemp(), "p.npz")
    >>> _ = save(f, {"b": jnp.zeros(2)})
    >>> load(f)
    {"['b']": array([0., 0.], dtype=float32)}
    """
    raw, _ = read_checkpoint(path, "checkpoint.load")
    if like is None:
        return raw
    where = f"checkpoint.load: {str(path)!r}"
    template = flatten(like)
    out = []
    for name, leaf in template:
        if name not in raw:
            raise ValueError(
                f"{where}: the file has no entry {name or '<root>'} that like expects "
                f"(it holds {len(raw)} entries: {sorted(raw)[:4]}...)"
            )
        out.append(_like_leaf(name, leaf, raw[name], where))
    extra = sorted(set(raw) - {name for name, _ in template})
    if extra:
        raise ValueError(f"{where}: the file holds {extra[0]}, which like does not have")
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), out)


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` mapping given to :func:`~funcnn.checkpoint.save` (``{}`` if none), from
    ``path``.

    Reads the header alone and checks it against the archive's directory, not the arrays'
    bytes: a file whose data is damaged passes here and is refused by
    :func:`~funcnn.checkpoint.load`. Raises what ``load`` raises for a damaged file.

    >>> import tempfile, os
    >>> from funcnn.checkpoint import save
    >>> f = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> load_meta(save(f, {}, meta={"epoch": 3}))
    {'epoch': 3}
    """
    _, header = read_checkpoint(path, "checkpoint.load_meta", arrays=False)
    return header.get("meta", {})
