"""Save and load pytrees of arrays safely: no code runs on load, and a crash never corrupts.

A checkpoint is a numpy ``.npz`` archive (a zip of ``.npy`` arrays) with one entry per
leaf, named by the leaf's pytree path as :func:`jax.tree_util.keystr` writes it
(``"['hidden_0']['w']"``, ``"[0].mu['output']['b']"``), plus one header entry holding a
small JSON document. Loading reads it with ``allow_pickle=False`` and refuses object
arrays, so a checkpoint from a stranger cannot execute code.

* **Atomic.** :func:`save` writes a temporary file beside the target, flushes and
  ``fsync``\\ s it, then renames it over the target (``os.replace``), so a crash at any
  moment leaves either the old checkpoint or the new one, whole.
* **Checked.** :func:`load` with ``like=template`` checks structure, shapes and dtypes
  against the template and names the first path that differs.
* **Any leaf.** Arrays (numpy or jax, including ``bfloat16``), Python and numpy scalars,
  and typed PRNG keys from ``jax.random.key`` (stored as ``jax.random.key_data`` and
  restored with ``jax.random.wrap_key_data``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import checks

__all__ = ["save", "load", "load_meta", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_HEADER = "__funcnn__"
_SCALARS = (bool, int, float, complex)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _flatten(tree: Any) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), leaf) for p, leaf in leaves]


def _to_numpy(name: str, leaf: Any, header: dict) -> np.ndarray:
    """One leaf as a plain numpy array; typed keys and extended dtypes are noted in header."""
    if _is_key(leaf):
        header["keys"][name] = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, *_SCALARS)):
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


def save(path: str | os.PathLike, tree: Any, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``tree`` to ``path`` atomically; return the path.

    Every leaf ``x`` at pytree path ``p`` becomes the archive entry ``keystr(p)``; ``meta``
    (a JSON-serializable mapping) travels in the header and comes back from
    :func:`load_meta`. The data goes to a temporary file in the same folder, which is
    flushed, ``fsync``\\ ed and renamed over ``path``: a crash leaves the old file whole.

    Args:
      path: the file to write (conventionally ``*.npz``); its folder must exist.
      tree: any pytree of arrays, numbers and PRNG keys (params, optax state, a step
        counter, a key).
      meta: small JSON data to store beside the arrays (a history, a step number).

    >>> import jax, jax.numpy as jnp, tempfile, os
    >>> tree = {"w": jnp.ones((2, 3)), "step": 7, "key": jax.random.key(0)}
    >>> f = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> _ = save(f, tree)
    >>> load(f, like=tree)["step"]
    7
    """
    path = checks.path(path, "checkpoint.save")
    header: dict[str, Any] = {"format": FORMAT_VERSION, "keys": {}, "dtypes": {}, "meta": {}}
    if meta is not None:
        if not isinstance(meta, Mapping):
            raise TypeError(f"checkpoint.save: meta must be a mapping, got {type(meta).__name__}")
        try:
            header["meta"] = json.loads(json.dumps(dict(meta)))
        except (TypeError, ValueError) as err:
            raise TypeError(f"checkpoint.save: meta must be JSON-serializable: {err}") from None
    arrays: dict[str, np.ndarray] = {}
    for name, leaf in _flatten(tree):
        if name in arrays:
            raise ValueError(f"checkpoint.save: tree has two leaves at the same path {name!r}")
        arrays[name] = _to_numpy(name, leaf, header)
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"checkpoint.save: path's folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _member(zf: zipfile.ZipFile, member: str, where: str) -> np.ndarray:
    """Read one ``.npy`` entry, refusing object arrays before any data is interpreted."""
    buf = io.BytesIO(zf.read(member))  # checks the CRC: a corrupt entry fails here
    version = np.lib.format.read_magic(buf)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    _, _, dtype = read_header(buf)
    if dtype.hasobject:
        raise ValueError(
            f"{where}: entry {member[:-4]!r} holds Python objects (dtype {dtype}); refusing to "
            "load it, since unpickling could run arbitrary code"
        )
    buf.seek(0)
    return np.lib.format.read_array(buf, allow_pickle=False)


def _read(path: Any, who: str) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays of a checkpoint (typed keys and extended dtypes restored) and its header."""
    path = checks.path(path, who)
    where = f"{who}: {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{where}: the file is empty (0 bytes), not a checkpoint")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{where}: not a checkpoint (not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            bad = [m for m in members if not m.endswith(".npy")]
            if bad:
                raise ValueError(f"{where}: unexpected entry {bad[0]!r}, not an .npy array")
            raw = {m[:-4]: _member(zf, m, where) for m in members}
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        raise ValueError(f"{where}: the file is truncated or corrupt ({err})") from None
    except ValueError as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: the file is truncated or corrupt ({err})") from None
    if _HEADER not in raw:
        raise ValueError(f"{where}: not a funcnn checkpoint (no {_HEADER!r} header entry)")
    try:
        header = json.loads(raw.pop(_HEADER).tobytes().decode())
        if header["format"] > FORMAT_VERSION:
            raise ValueError(f"format {header['format']} is newer than {FORMAT_VERSION}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: unreadable checkpoint header ({err})") from None
    for name, dtype in header.get("dtypes", {}).items():
        raw[name] = raw[name].view(jnp.dtype(dtype))
    for name, impl in header.get("keys", {}).items():
        raw[name] = jax.random.wrap_key_data(raw[name], impl=impl)
    return raw, header


def _like_leaf(name: str, leaf: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the template leaf and give it the template's type."""
    label = name or "<root>"
    if isinstance(leaf, _SCALARS) and not isinstance(leaf, np.generic):
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
    if isinstance(leaf, _SCALARS) and not isinstance(leaf, np.generic):
        return type(leaf)(np.asarray(value).item())
    if isinstance(leaf, np.ndarray | np.generic):
        return np.asarray(value)[()] if isinstance(leaf, np.generic) else np.asarray(value)
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        return jax.device_put(value, leaf.sharding)
    return jnp.asarray(value)


def load(path: str | os.PathLike, like: Any = None) -> Any:
    """Read a checkpoint written by :func:`save`, checked against the template ``like``.

    With ``like``, the result has ``like``'s pytree structure, each leaf of ``like``'s
    shape and dtype and of its kind (jax array on the template's device, numpy array,
    Python number, PRNG key); the first path where the file differs is named in a
    ValueError. Without ``like``, a flat ``{path: array}`` dict.

    Args:
      path: a checkpoint file.
      like: a pytree with the expected structure; leaves are arrays, numbers or
        ``jax.ShapeDtypeStruct`` (so ``jax.eval_shape`` output works).

    Raises:
      ValueError: the file is empty, truncated, corrupt, holds object arrays, or does
        not match ``like``.

    >>> import jax.numpy as jnp, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "p.npz")
    >>> _ = save(f, {"b": jnp.zeros(2)})
    >>> load(f)
    {"['b']": array([0., 0.], dtype=float32)}
    """
    raw, _ = _read(path, "checkpoint.load")
    if like is None:
        return raw
    where = f"checkpoint.load: {str(path)!r}"
    template = _flatten(like)
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
    """The ``meta`` mapping given to :func:`save` (``{}`` if none), from ``path``.

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> load_meta(save(f, {}, meta={"epoch": 3}))
    {'epoch': 3}
    """
    _, header = _read(path, "checkpoint.load_meta")
    return header.get("meta", {})
