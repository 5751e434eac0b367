"""Params as flat named tensors, and safetensors files of them.

A params tree is written as one tensor per leaf, named by its path with ``/`` between the
keys: ``{"conv1": {"w": ..., "b": ...}}`` is ``conv1/w`` and ``conv1/b`` (a list's items are
``0``, ``1``, ...). `safetensors <https://huggingface.co/docs/safetensors>`_ files hold only
tensors and a JSON header, so loading one runs no code; other frameworks read them too.
Dtypes are kept, ``bfloat16`` included. Needs the ``safetensors`` package
(``pip install 'funcnn[safetensors]'``); the NumPy side of its API is used, so PyTorch is not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import checks

__all__ = ["flatten", "unflatten", "save_safetensors", "load_safetensors", "require_safetensors"]

SEP = "/"


def _key_name(key: Any, where: str) -> str:
    name = getattr(key, "key", getattr(key, "idx", getattr(key, "name", None)))
    if name is None or not isinstance(name, (str, int)) or SEP in str(name) or str(name) == "":
        raise ValueError(
            f"flatten: the key {key} at {where or 'the top'} cannot be part of a "
            f"name: keys must be non-empty str or int without {SEP!r}"
        )
    return str(name)


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` for every leaf, the name its path with ``/`` between the keys."""
    named, seen = [], set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names: list[str] = []
        for key in path:
            names.append(_key_name(key, SEP.join(names)))
        name = SEP.join(names)
        if name in seen:
            raise ValueError(f"flatten: two leaves are both named {name!r}")
        seen.add(name)
        named.append((name, leaf))
    return named


def flatten(params: Any) -> dict[str, np.ndarray]:
    """Every leaf of a params tree as a NumPy array, named by its path: ``"conv1/w"``.

    Args:
      params: a pytree of arrays (nested dicts as ``init`` returns them, lists, tuples).

    Returns:
      ``{name: array}`` in the tree's order; dtypes kept.

    >>> import jax.numpy as jnp
    >>> flat = flatten({"conv1": {"w": jnp.ones((3, 3, 1, 2)), "b": jnp.zeros(2)}})
    >>> {name: a.shape for name, a in flat.items()}
    {'conv1/b': (2,), 'conv1/w': (3, 3, 1, 2)}
    """
    return {name: np.asarray(leaf) for name, leaf in _named_leaves(params)}


def unflatten(flat: Mapping[str, Any]) -> dict:
    """Nested dicts from ``{"conv1/w": ..., ...}``: the inverse of :func:`flatten` for
    params made of dicts (list items come back as dicts keyed ``"0"``, ``"1"``, ...; pass
    ``like=`` to :func:`load_safetensors` to get the original structure).

    >>> unflatten({"conv1/w": 1, "conv1/b": 2, "scale": 3})
    {'conv1': {'w': 1, 'b': 2}, 'scale': 3}
    """
    tree: dict = {}
    for name, value in flat.items():
        *parents, last = str(name).split(SEP)
        node = tree
        for i, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(
                    f"unflatten: {SEP.join(parents[: i + 1])!r} is both a tensor "
                    f"and a folder of {name!r}"
                )
        if last in node:
            raise ValueError(f"unflatten: {name!r} is both a tensor and a folder")
        node[last] = value
    return tree


def require_safetensors() -> Any:
    """Import ``safetensors.numpy``, or say how to get it.

    Raises:
      ImportError: safetensors is not installed, with the ``pip install`` to run.

    >>> require_safetensors().__name__
    'safetensors.numpy'
    """
    try:
        import safetensors.numpy as st
    except ImportError as err:
        raise ImportError(
            "funcnn.interop needs the safetensors package for .safetensors files: "
            "pip install 'funcnn[safetensors]'"
        ) from err
    return st


def save_safetensors(
    params: Any, path: str | os.PathLike, *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a params tree to a safetensors file, one tensor per leaf named as
    :func:`flatten` names it. The file is written beside the target and renamed over it,
    so a crash never leaves half a file.

    Args:
      params: a pytree of arrays.
      path: the file to write (missing folders are created).
      metadata: text to keep in the file's header, ``{str: str}``.

    Returns:
      the path.

    >>> import tempfile, jax.numpy as jnp
    >>> params = {"conv1": {"w": jnp.ones((3, 3, 1, 2), jnp.bfloat16), "b": jnp.zeros(2)}}
    >>> path = save_safetensors(params, Path(tempfile.mkdtemp()) / "lenet.safetensors")
    >>> back = load_safetensors(path)
    >>> back["conv1"]["w"].dtype, back["conv1"]["b"].shape
    (dtype(bfloat16), (2,))
    """
    st = require_safetensors()
    path = checks.path(path, "save_safetensors")
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in dict(metadata).items()
    ):
        raise TypeError(f"save_safetensors: metadata must map str to str, got {metadata!r}")
    tensors = {name: np.ascontiguousarray(a) for name, a in flatten(params).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        st.save_file(tensors, tmp, metadata=dict(metadata) if metadata is not None else None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _like(flat: dict[str, np.ndarray], like: Any, path: Path) -> Any:
    """``flat`` in the structure of ``like``, names, shapes and dtypes checked."""
    want = _named_leaves(like)
    names = [name for name, _ in want]
    if set(names) != set(flat):
        missing, extra = sorted(set(names) - set(flat)), sorted(set(flat) - set(names))
        raise ValueError(
            f"load_safetensors: {path} does not match like: missing {missing}, unexpected {extra}"
        )
    for name, leaf in want:
        got, shape = flat[name], tuple(np.shape(leaf))
        dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)
        if got.shape != shape or got.dtype != dtype:
            raise ValueError(
                f"load_safetensors: {path}: {name!r} is {got.dtype}{list(got.shape)}, like has "
                f"{dtype}{list(shape)}"
            )
    treedef = jax.tree_util.tree_structure(like)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(flat[n]) for n in names])


def load_safetensors(path: str | os.PathLike, *, like: Any = None) -> Any:
    """Read a safetensors file written by :func:`save_safetensors` (or by any framework with
    ``/``-separated names) into a params tree of JAX arrays, dtypes kept.

    Args:
      path: the file.
      like: a params tree (arrays or ``jax.ShapeDtypeStruct``) whose structure the result
        takes; names, shapes and dtypes are checked against it. Default: nested dicts.

    Returns:
      the params.

    >>> import tempfile, jax, jax.numpy as jnp
    >>> params = [{"w": jnp.ones((2, 3))}, {"w": jnp.ones((3, 1))}]
    >>> path = save_safetensors(params, Path(tempfile.mkdtemp()) / "p.safetensors")
    >>> load_safetensors(path)["1"]["w"].shape
    (3, 1)
    >>> jax.tree_util.tree_structure(load_safetensors(path, like=params)) == (
    ...     jax.tree_util.tree_structure(params))
    True
    """
    st = require_safetensors()
    path = checks.path(path, "load_safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"load_safetensors: no file at {path}")
    flat = st.load_file(str(path))
    if like is not None:
        return _like(flat, like, path)
    return unflatten({name: jnp.asarray(a) for name, a in flat.items()})
