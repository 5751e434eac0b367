"""The archive format of a checkpoint, and its reader: every byte is distrusted.

A checkpoint is a zip of ``.npy`` entries, one per pytree leaf, plus the header entry
``__funcnn__.npy``: the JSON document ``{"format", "entries", "dtypes", "keys", "meta"}``.
Since format 2, ``entries`` records each entry's CRC-32, size in bytes, shape and dtype, and
the reader holds the file to it; the zip's own CRC-32 of every entry, checked as the entry is
read to its end, then ties the bytes to the header, so a load that succeeds returns exactly
the bytes that were saved.

Before it allocates or inflates anything, the reader checks what the archive declares against
what the file can hold: an entry of ``s`` stored bytes holds ``s`` bytes (``ZIP_STORED``) or
at most ``1032 s`` (``ZIP_DEFLATED``, deflate's largest ratio); every entry lies inside the
file, and no two overlap; an array's shape and dtype fill exactly its entry's declared size.
Any failure, whatever its cause, is a :class:`CheckpointError`.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
import zipfile
from typing import IO, Any, BinaryIO, cast

import jax
import jax.numpy as jnp
import numpy as np

from .. import checks

__all__ = ["CheckpointError", "FORMAT_VERSION", "HEADER", "read_checkpoint"]

FORMAT_VERSION = 2
HEADER = "__funcnn__"
DEFLATE_RATIO = 1032  # deflate's largest ratio of output to input bytes
CHUNK = 1 << 24  # bytes read (and inflated) at a time
MAX_NPY_HEADER = 1 << 16  # an .npy entry's own header, in bytes, at most
DTYPE_KINDS = "biufc"  # bool, int, uint, float, complex: what a checkpoint stores


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: empty, truncated, corrupt, tampered with or
    hostile. The one error :func:`~funcnn.checkpoint.load` and
    :func:`~funcnn.checkpoint.load_meta` raise for a damaged file, whatever the damage; a
    ``ValueError``, so code that caught those before still catches it. A file that reads
    well but does not match ``like`` raises a plain ``ValueError`` instead.

    >>> import os, tempfile
    >>> from funcnn import checkpoint
    >>> f = os.path.join(tempfile.mkdtemp(), "torn.npz")
    >>> _ = open(f, "wb").write(b"PK\\x03\\x04 torn")
    >>> try:
    ...     checkpoint.load(f)
    ... except checkpoint.CheckpointError as err:
    ...     print(isinstance(err, ValueError), "truncated or corrupt" in str(err))
    True True
    """


def read_checkpoint(path: Any, who: str, arrays: bool = True) -> tuple[dict[str, Any], dict]:
    """The entries of a checkpoint (typed keys and extended dtypes restored) and its header;
    with ``arrays=False`` only the header, checked against the archive (no entry is read).

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a
    damaged one.

    >>> import os, tempfile
    >>> from funcnn import checkpoint
    >>> f = checkpoint.save(os.path.join(tempfile.mkdtemp(), "c.npz"), {"w": 1.5})
    >>> raw, header = read_checkpoint(f, "example")
    >>> raw, header["format"], header["entries"]["['w']"]["shape"]
    ({"['w']": array(1.5)}, 2, [])
    """
    path = checks.path(path, who)
    where = f"{who}: {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such checkpoint file")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointError(f"{where}: the file is empty (0 bytes), not a checkpoint")
        if f.read(4) != b"PK\x03\x04":
            raise CheckpointError(f"{where}: not a checkpoint (not an .npz archive)")
        f.seek(0)
        try:
            return _read_archive(f, size, where, arrays)
        except (CheckpointError, MemoryError):
            raise
        except Exception as err:  # anything else a damaged archive provokes
            message = f"{type(err).__name__}: {err}"[:300]
            raise CheckpointError(
                f"{where}: the file is truncated or corrupt ({message})"
            ) from None


def _read_archive(f: BinaryIO, size: int, where: str, arrays: bool) -> tuple[dict, dict]:
    with zipfile.ZipFile(f) as zf:
        infos = _members(zf, size, where)
        if HEADER not in infos:
            raise CheckpointError(f"{where}: not a funcnn checkpoint (no {HEADER!r} header entry)")
        header = _header(zf, infos, where)
        if not arrays:
            return {}, header
        entries = header.get("entries", {})
        raw = {
            name: _read_npy(zf, info, f"{where}: entry {name}", entries.get(name))
            for name, info in infos.items()
            if name != HEADER
        }
    return _restore_kinds(raw, header, where), header


def _members(zf: zipfile.ZipFile, size: int, where: str) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by name (``.npy`` dropped), each checked to fit in the file."""
    infos = zf.infolist()
    names = [info.filename for info in infos]
    bad = [name for name in names if not name.endswith(".npy")]
    if bad:
        raise CheckpointError(f"{where}: unexpected entry {bad[0]!r}, not an .npy array")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{where}: the archive names an entry twice")
    for info in infos:
        name = info.filename[:-4]
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{where}: entry {name} uses compression method {info.compress_type}; a "
                "checkpoint's entries are stored or deflated"
            )
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where}: entry {name} is encrypted")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_RATIO
        if info.file_size > ratio * info.compress_size:
            raise CheckpointError(
                f"{where}: entry {name} declares {info.file_size} bytes, more than its "
                f"{info.compress_size} stored bytes can hold"
            )
    # each entry's local header (30 bytes at least) and data, which must not run into the
    # next entry's (overlapping entries multiply a bomb) nor past the end of the file
    spans = sorted((i.header_offset, i.header_offset + 30 + i.compress_size) for i in infos)
    starts = [start for start, _ in spans[1:]] + [size]
    if any(end > start for (_, end), start in zip(spans, starts)):
        raise CheckpointError(f"{where}: the archive's entries overlap or run past its end")
    return {info.filename[:-4]: info for info in infos}


def _header(zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], where: str) -> dict:
    """The JSON header, its fields checked and, from format 2, held to the archive."""
    data = _read_npy(zf, infos[HEADER], f"{where}: the header", None)
    try:
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"an array of {data.dtype}{list(data.shape)}, not of bytes")
        header = json.loads(data.tobytes().decode())
        _check_header_fields(header)
    except (ValueError, TypeError, RecursionError) as err:
        raise CheckpointError(f"{where}: unreadable checkpoint header ({err})") from None
    names = set(infos) - {HEADER}
    entries = header.get("entries")
    if entries is not None:
        _check_entries(entries, infos, where)
    for field in ("dtypes", "keys"):
        missing = sorted(set(header.get(field, {})) - names)
        if missing:
            raise CheckpointError(
                f"{where}: the header's {field} names entry {missing[0]}, "
                "which the archive does not hold"
            )
    for name, dtype in header.get("dtypes", {}).items():
        if extended_dtype(dtype) is None:
            raise CheckpointError(
                f"{where}: the header gives entry {name} the dtype {dtype!r}, which is no "
                "extended dtype known here (bfloat16, float8_*, int4, ...)"
            )
    return header


def _check_header_fields(header: Any) -> None:
    """The header's fields have their types (a ``ValueError`` or ``TypeError`` if not)."""
    if not isinstance(header, dict):
        raise TypeError(f"a JSON {type(header).__name__}, not an object")
    version = header.get("format")
    if type(version) is not int or version < 1:
        raise ValueError(f"format {version!r} is not a format number")
    if version > FORMAT_VERSION:
        raise ValueError(f"format {version} is newer than {FORMAT_VERSION}")
    for field in ("dtypes", "keys"):
        value = header.get(field, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise TypeError(f"{field} is not a mapping of names")
    if not isinstance(header.get("meta", {}), dict):
        raise TypeError("meta is not a mapping")
    entries = header.get("entries")
    if (version >= 2 or entries is not None) and not isinstance(entries, dict):
        raise TypeError("entries is not a mapping of records")


def _check_entries(entries: dict, infos: dict[str, zipfile.ZipInfo], where: str) -> None:
    """Format 2: the archive holds exactly the entries the header records, each with the
    recorded CRC-32 and size."""
    names = set(infos) - {HEADER}
    if set(entries) != names:
        name = sorted(set(entries) ^ names)[0]
        side = "the header records" if name in entries else "the archive holds"
        raise CheckpointError(f"{where}: {side} entry {name} alone")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not _is_entry(entry):
            raise CheckpointError(f"{where}: the header's record of entry {name} is malformed")
        info = infos[name]
        if (info.CRC, info.file_size) != (entry["crc32"], entry["size"]):
            raise CheckpointError(
                f"{where}: entry {name} has CRC-32 {info.CRC} and {info.file_size} bytes, the "
                f"header recorded {entry['crc32']} and {entry['size']}"
            )


def _is_entry(entry: dict) -> bool:
    """A record ``{"crc32", "size", "shape", "dtype"}`` of counts, a list of them and a str."""
    shape = entry.get("shape")
    counts = [entry.get("crc32"), entry.get("size"), *(shape if isinstance(shape, list) else [])]
    return (
        isinstance(shape, list)
        and isinstance(entry.get("dtype"), str)
        and all(type(v) is int and v >= 0 for v in counts)
    )


def extended_dtype(name: str) -> np.dtype | None:
    """The registered extended dtype (``bfloat16``, ``float8_*``, ``int4``) named ``name``,
    or ``None``.

    >>> extended_dtype("bfloat16").itemsize, extended_dtype("float33")
    (2, None)
    """
    try:
        dtype = np.dtype(jnp.dtype(name))
    except Exception:  # any name numpy and jax do not know
        return None
    return dtype if dtype.isbuiltin == 2 else None


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, entry: dict | None):
    """One ``.npy`` entry, read in bounded chunks after its header is checked: the dtype is
    numeric, shape and dtype fill exactly the entry's declared size (and match the header's
    ``entry`` record), so nothing is allocated or inflated beyond what was declared."""
    with zf.open(info) as f:
        head = _read_upto(f, min(info.file_size, MAX_NPY_HEADER + 16))
        shape, fortran, dtype, offset = _npy_header(head, where)
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise CheckpointError(
                f"{where}: shape {shape} of {dtype} needs {nbytes} bytes, the entry holds "
                f"{info.file_size - offset}"
            )
        if entry is not None and (list(shape), dtype.str) != (entry["shape"], entry["dtype"]):
            raise CheckpointError(
                f"{where}: the entry holds {dtype.str}{list(shape)}, the header recorded "
                f"{entry['dtype']}{entry['shape']}"
            )
        out = np.empty(math.prod(shape), dtype)
        view = out.reshape(-1).view(np.uint8).data
        done = len(head) - offset
        view[:done] = head[offset:]
        while done < nbytes:
            chunk = f.read(min(CHUNK, nbytes - done))
            if not chunk:
                raise CheckpointError(f"{where}: the entry ends early")
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
        if f.read(1):  # the end of the entry, where zipfile checks its CRC-32
            raise CheckpointError(f"{where}: the entry runs past its declared size")
    return out.reshape(shape, order="F" if fortran else "C")


def _read_upto(f: IO[bytes], n: int) -> bytes:
    """At most ``n`` bytes of ``f``, read in bounded chunks."""
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(CHUNK, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _npy_header(head: bytes, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` from the first bytes of an entry;
    object, structured and non-numeric dtypes are refused before any data is read."""
    buf = io.BytesIO(head)
    version = np.lib.format.read_magic(buf)
    if version not in ((1, 0), (2, 0)):
        raise CheckpointError(f"{where}: .npy format {version} is not one a checkpoint uses")
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's note on headers written by Python 2
        shape, fortran, dtype = read(buf)
    if dtype.hasobject:
        raise CheckpointError(
            f"{where} holds Python objects (dtype {dtype}); refusing to load it, since "
            "unpickling could run arbitrary code"
        )
    if dtype.kind not in DTYPE_KINDS or dtype.fields or dtype.subdtype or dtype.itemsize == 0:
        raise CheckpointError(f"{where}: dtype {dtype} is not a numeric array's")
    if any(d < 0 for d in shape):
        raise CheckpointError(f"{where}: shape {shape} has a negative size")
    return shape, fortran, dtype, buf.tell()


def _restore_kinds(raw: dict[str, np.ndarray], header: dict, where: str) -> dict[str, Any]:
    """Extended dtypes viewed back from their raw bits; typed PRNG keys wrapped again."""
    for name, dtype_name in header.get("dtypes", {}).items():
        dtype, bits = extended_dtype(dtype_name), raw[name].dtype
        assert dtype is not None  # _header refused the names of no extended dtype
        if bits.kind != "u" or bits.itemsize != dtype.itemsize:
            raise CheckpointError(
                f"{where}: entry {name} holds {bits}, not the raw bits of the header's "
                f"dtype {dtype_name}"
            )
        raw[name] = raw[name].view(dtype)
    for name, impl in header.get("keys", {}).items():
        try:
            # annotated as taking a jax.Array, it takes any array (jnp.asarray)
            raw[name] = jax.random.wrap_key_data(cast(jax.Array, raw[name]), impl=impl)
        except Exception as err:  # an unknown implementation, or data of the wrong shape
            raise CheckpointError(
                f"{where}: entry {name} is no {impl!r} PRNG key ({type(err).__name__}: {err})"
            ) from None
    return raw
