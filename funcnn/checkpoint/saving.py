"""``save``: a pytree written atomically, each entry's CRC-32, size, shape and dtype recorded."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np

from .. import checks
from .archive import FORMAT_VERSION, HEADER

__all__ = ["save", "flatten", "is_key", "SCALARS"]

SCALARS = (bool, int, float, complex)


def is_key(x: Any) -> bool:
    """``x`` is a typed PRNG key (or its shape): ``jax.random.key(0)``, not ``PRNGKey(0)``.

    >>> is_key(jax.random.key(0)), is_key(jax.random.PRNGKey(0))
    (True, False)
    """
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def flatten(tree: Any) -> list[tuple[str, Any]]:
    """``[(keystr(path), leaf)]``: the leaves of ``tree`` by their pytree paths.

    >>> flatten({"w": 1, "b": [2]})
    [("['b'][0]", 2), ("['w']", 1)]
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), leaf) for p, leaf in leaves]


def _to_numpy(name: str, leaf: Any, header: dict) -> np.ndarray:
    """One leaf as a plain numpy array; typed keys and extended dtypes are noted in header."""
    if is_key(leaf):
        header["keys"][name] = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, *SCALARS)):
        raise TypeError(
            f"checkpoint.save: tree leaf {name or '<root>'} is a {type(leaf).__name__}; "
            "expected an array or a number"
        )
    arr = np.asarray(leaf)
    extended = arr.dtype.isbuiltin == 2  # a registered user dtype: bfloat16, float8, int4
    if not extended and arr.dtype.kind not in "biufc":
        raise TypeError(
            f"checkpoint.save: tree leaf {name or '<root>'} has dtype {arr.dtype}; "
            "expected a numeric array"
        )
    if extended:  # stored as raw bits, viewed back on load
        header["dtypes"][name] = arr.dtype.name
        arr = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    return arr


def _header(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    header: dict[str, Any] = {"format": FORMAT_VERSION, "keys": {}, "dtypes": {}, "meta": {}}
    if meta is not None:
        if not isinstance(meta, Mapping):
            raise TypeError(f"checkpoint.save: meta must be a mapping, got {type(meta).__name__}")
        try:
            header["meta"] = json.loads(json.dumps(dict(meta)))
        except (TypeError, ValueError) as err:
            raise TypeError(f"checkpoint.save: meta must be JSON-serializable: {err}") from None
    return header


def save(path: str | os.PathLike, tree: Any, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``tree`` to ``path`` atomically; return the path.

    Every leaf ``x`` at pytree path ``p`` becomes the archive entry ``keystr(p)``; ``meta``
    (a JSON-serializable mapping) travels in the header and comes back from
    :func:`~funcnn.checkpoint.load_meta`. The header also records each entry's CRC-32, size,
    shape and dtype, which :func:`~funcnn.checkpoint.load` holds the file to. The data goes
    to a temporary file in the same folder, which is flushed, ``fsync``\\ ed and renamed
    over ``path``: a crash leaves the old file whole.

    Args:
      path: the file to write (conventionally ``*.npz``); its folder must exist.
      tree: any pytree of arrays, numbers and PRNG keys (params, optax state, a step
        counter, a key).
      meta: small JSON data to store beside the arrays (a history, a step number).

    >>> import jax, jax.numpy as jnp, tempfile, os
    >>> from funcnn.checkpoint import load
    >>> tree = {"w": jnp.ones((2, 3)), "step": 7, "key": jax.random.key(0)}
    >>> f = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> _ = save(f, tree)
    >>> load(f, like=tree)["step"]
    7
    """
    path = checks.path(path, "checkpoint.save")
    header = _header(meta)
    arrays: dict[str, np.ndarray] = {}
    for name, leaf in flatten(tree):
        if name in arrays:
            raise ValueError(f"checkpoint.save: tree has two leaves at the same path {name!r}")
        arrays[name] = _to_numpy(name, leaf, header)
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"checkpoint.save: path's folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_archive(f, arrays, header)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return path


def _write_archive(f: BinaryIO, arrays: dict[str, np.ndarray], header: dict) -> None:
    """The ``.npz`` archive: the arrays, then the header that records each one's CRC-32
    (the zip's own, computed as it writes), size, shape and dtype."""
    entries = {}
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = _write_npy(zf, name, arr)
            entries[name] = {
                "crc32": info.CRC,
                "size": info.file_size,
                "shape": list(arr.shape),
                "dtype": arr.dtype.str,
            }
        text = json.dumps({**header, "entries": entries}).encode()
        _write_npy(zf, HEADER, np.frombuffer(text, dtype=np.uint8))


def _write_npy(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> zipfile.ZipInfo:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array(out, arr, allow_pickle=False)
    return zf.getinfo(f"{name}.npy")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
