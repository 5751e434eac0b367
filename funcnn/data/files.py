"""Datasets on disk, read with bounded memory: a training set larger than RAM.

Each is an :class:`ArrayDataset`: :class:`NpyDataset` reads ``.npy`` shards,
:class:`IdxDataset` uncompressed IDX files (MNIST's format); :class:`NpyWriter` (chunk by
chunk), :func:`write_npy_shards` and :func:`write_idx` write them, atomically. A read costs
memory in proportion to the rows it returns, never to the file: rows come through
``os.pread``, one call per run of consecutive rows. Nothing is memory-mapped, so the pages
a pass reads stay in the kernel's page cache, never in the process's resident memory.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from .. import checks
from .arrays import check_xy
from .images import IDX_TYPES, idx_header

__all__ = ["ArrayDataset", "NpyDataset", "IdxDataset", "NpyWriter", "write_npy_shards", "write_idx"]

Spec = tuple[tuple[int, ...], np.dtype]
Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
SAMPLE_ROWS = 64  # rows per file that a fingerprint reads, evenly spaced
CHUNK_BYTES = 16 << 20  # the most write_idx converts at once
GAP_BYTES = 4096  # a read takes in a gap this small between two rows it needs


@runtime_checkable
class ArrayDataset(Protocol):
    """What ``fit`` streams from: ``n`` examples read by index, never all at once.
    ``read(indices)`` returns ``(x[indices], y[indices])``, rows in the order of the 1-D int
    array ``indices`` (repeats allowed), as fresh arrays; ``ds[i]`` returns ``(x[i], y[i])``;
    ``x_spec`` / ``y_spec`` are ``(shape, dtype)`` of one example as ``read`` returns it;
    ``fingerprint()`` is a JSON-able list that changes when the data does."""

    x_spec: Spec
    y_spec: Spec

    def __len__(self) -> int: ...
    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]: ...
    def fingerprint(self) -> list: ...


class Shard(NamedTuple):
    """One file of a column: ``rows`` rows from byte ``offset`` on, ``size`` bytes in all."""

    path: Path
    offset: int
    rows: int
    size: int


def _read_rest(fd: int, part: bytes, size: int, offset: int, path: Path) -> bytes:
    """``part``, the first bytes of ``size`` at ``offset``, completed (a long read may come in
    parts; an early end of the file is an error)."""
    parts = [part]
    while (got := sum(map(len, parts))) < size:
        parts.append(os.pread(fd, size - got, offset + got))
        if not parts[-1]:
            raise ValueError(f"{path} ended at byte {offset + got}: was it cut short?")
    return b"".join(parts)


class Column:
    """The rows of one side (x or y): ``Σ rows`` rows of ``row_shape`` and ``file_dtype``
    (as stored, any byte order) in one or more files. It holds no open file (threads share
    it, worker processes take it pickled): a read opens the files it needs and closes them."""

    def __init__(self, shards: Sequence[Shard], row_shape: tuple[int, ...], file_dtype):
        self.shards = tuple(shards)
        self.row_shape, self.file_dtype = row_shape, np.dtype(file_dtype)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.row_bytes = math.prod(row_shape) * self.file_dtype.itemsize
        self.starts = np.cumsum([0] + [s.rows for s in self.shards])
        self.offsets = np.array([s.offset for s in self.shards], np.int64)
        self.n = int(self.starts[-1])

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (int64 in ``[0, n)``, any order, repeats allowed) in that order: a
        new array ``(len(rows), *row_shape)`` in the native byte order."""
        unique, inverse = np.unique(rows, return_inverse=True)
        raw, where = self._read_sorted(unique)
        stored = raw[where[inverse.reshape(-1)]].view(self.file_dtype)
        return stored.reshape(len(rows), *self.row_shape).astype(self.dtype, copy=False)

    def _read_sorted(self, unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``raw`` (uint8, one a row) holding rows ``unique`` (sorted, distinct) at
        ``where``: one read per run of them in a file, gaps of at most GAP_BYTES included."""
        if unique.size == 0:
            return np.zeros((0, self.row_bytes), np.uint8), unique
        shard = np.searchsorted(self.starts, unique, side="right") - 1
        gaps = (np.diff(unique) - 1) * self.row_bytes
        cut = np.flatnonzero((gaps > GAP_BYTES) | (np.diff(shard) != 0)) + 1
        first, last = np.concatenate(([0], cut)), np.concatenate((cut, [unique.size])) - 1
        s, span = shard[first], unique[last] - unique[first] + 1  # file and rows of each run
        at = self.offsets[s] + (unique[first] - self.starts[s]) * self.row_bytes
        data = self._read_runs(zip(s.tolist(), at.tolist(), (span * self.row_bytes).tolist()))
        run = np.repeat(np.arange(first.size), last - first + 1)
        where = np.cumsum(span)[run] - span[run] + unique - unique[first][run]
        return np.frombuffer(data, np.uint8).reshape(int(span.sum()), self.row_bytes), where

    def _read_runs(self, runs: Iterable[tuple[int, int, int]]) -> bytes:
        """The bytes of the runs ``(file, offset, size)``, joined; each file opened once."""
        fds: dict[int, int] = {}
        try:
            parts = []
            for i, at, size in runs:
                if i not in fds:
                    fds[i] = os.open(self.shards[i].path, os.O_RDONLY)
                part = os.pread(fds[i], size, at)
                if len(part) < size:
                    part = _read_rest(fds[i], part, size, at, self.shards[i].path)
                parts.append(part)
            return b"".join(parts)
        finally:
            for fd in fds.values():
                os.close(fd)

    def fingerprint(self) -> list:
        """``[name, bytes, CRC-32 of the header and up to SAMPLE_ROWS rows]`` of each file: a
        file whose every row is sampled (≤ 64 rows) changes its CRC whenever its data does."""
        out = []
        for i, shard in enumerate(self.shards):
            local = np.linspace(0, shard.rows - 1, min(shard.rows, SAMPLE_ROWS))
            rows = np.unique(local.round().astype(np.int64)) + self.starts[i]
            raw, where = self._read_sorted(rows)
            crc = zlib.crc32(raw[where].data, zlib.crc32(self._read_runs([(i, 0, shard.offset)])))
            out.append([shard.path.name, shard.size, crc])
        return out


def _rows(indices: Any, n: int, who: str) -> np.ndarray:
    """``indices`` as int64 rows in ``[0, n)``; ``i < 0`` counts from the end (``n + i``)."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise TypeError(f"{who}: indices must be a 1-D array of ints, got {idx.dtype}{idx.shape}")
    if idx.size and ((low := idx.min()) < -n or (high := idx.max()) >= n):
        raise IndexError(f"{who}: index {low if low < -n else high} out of range [-{n}, {n})")
    rows = idx.astype(np.int64)
    return np.where(rows < 0, rows + n, rows)


class FileDataset:
    """What :class:`NpyDataset` and :class:`IdxDataset` share: two columns of ``n > 0`` rows
    each, and an optional ``transform(x, y) -> (x, y)`` applied to each read."""

    def __init__(self, x: Column, y: Column, transform: Transform | None, who: str):
        if x.n != y.n or x.n == 0:
            raise ValueError(f"{who}: x has {x.n} rows and y {y.n}; expected n > 0 of each")
        self._x, self._y, self._who = x, y, who
        self.transform = checks.function(transform, f"{who}: transform", allow_none=True)
        self.x_spec, self.y_spec = (x.row_shape, x.dtype), (y.row_shape, y.dtype)
        if self.transform is not None:
            xs, ys = self.read(np.zeros(1, np.int64))
            self.x_spec, self.y_spec = (xs.shape[1:], xs.dtype), (ys.shape[1:], ys.dtype)

    def __len__(self) -> int:
        return self._x.n

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x[indices], y[indices])``, transformed: rows in the order given, repeats
        allowed, ``i < 0`` counting from the end. Raises ``IndexError`` for an index outside
        ``[-n, n)``, ``TypeError`` for indices that are not a 1-D array of ints."""
        rows = _rows(indices, len(self), f"{self._who}.read")
        x, y = self._x.read(rows), self._y.read(rows)
        if self.transform is None:
            return x, y
        tx, ty = map(np.asarray, self.transform(x, y))
        if tx.shape[:1] != (len(x),) or ty.shape[:1] != (len(x),):
            shapes = f"{tx.shape} and {ty.shape}"
            raise ValueError(f"{self._who}: transform must keep the {len(x)} rows, got {shapes}")
        return tx, ty

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x[i], y[i])``, one example, as ``read`` would give it without its batch axis."""
        if not checks.is_int(i):
            raise TypeError(f"{self._who}: an example's index must be an int, got {i!r}")
        x, y = self.read(np.array([i]))
        return x[0, ...], y[0, ...]

    def fingerprint(self) -> list:
        """``[kind, n, x_spec, y_spec, {"x": files, "y": files}]``, JSON-able; each file
        ``[name, bytes, CRC-32 of its header and a sample of rows]``. It reads a few
        kilobytes per file, so it can miss a change to an unsampled row of a file over 64
        rows; it ignores folders and times, so a copied dataset keeps its fingerprint."""
        specs = [[list(s), np.dtype(d).name] for s, d in (self.x_spec, self.y_spec)]
        columns = {"x": self._x.fingerprint(), "y": self._y.fingerprint()}
        return [type(self).__name__, len(self), *specs, columns]

    def __repr__(self) -> str:
        files = [str(s.path) for s in (*self._x.shards, *self._y.shards)]
        return f"{type(self).__name__}(n={len(self)}, files={files})"


def _head(path: Path, who: str, limit: int = 1 << 16) -> tuple[bytes, int]:
    """The first ``limit`` bytes of ``path`` and its size."""
    try:
        with open(path, "rb") as f:
            return f.read(limit), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{who}: {path} does not exist") from None


def _numeric(dtype: np.dtype, where: str) -> np.dtype:
    if dtype.kind not in "biufc" or dtype.fields or dtype.subdtype or dtype.itemsize == 0:
        raise ValueError(f"{where}: expected a numeric dtype (bool, int, float), got {dtype}")
    return dtype


def _sized(path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int, size: int, who: str):
    """``path``'s shard, its file ``offset + Π shape · itemsize`` bytes long, as checked."""
    expected = offset + math.prod(shape) * dtype.itemsize
    if not shape or size != expected:
        what = "a 0-d array" if not shape else "truncated" if size < expected else "corrupt"
        raise ValueError(
            f"{who}: {path} is {what}: expected rows along axis 0, {expected} bytes for shape "
            f"{shape} of {dtype.name}; the file has {size}"
        )
    return Shard(path, offset, shape[0], size)


def _npy_shard(path: Path, who: str) -> tuple[Shard, tuple[int, ...], np.dtype]:
    """The shard, row shape and stored dtype of a ``.npy`` file, from its header."""
    head, size = _head(path, who)
    buf, fmt = io.BytesIO(head), np.lib.format
    try:
        one = fmt.read_magic(buf) == (1, 0)
        read = fmt.read_array_header_1_0 if one else fmt.read_array_header_2_0
        shape, fortran, dtype = read(buf)
    except (ValueError, EOFError, SyntaxError) as err:
        raise ValueError(f"{who}: {path} is not a .npy file: {err}") from None
    if fortran and len(shape) > 1:
        raise ValueError(f"{who}: {path} is in Fortran order; save np.ascontiguousarray(a)")
    dtype = _numeric(dtype, f"{who}: {path}")
    return _sized(path, shape, dtype, buf.tell(), size, who), tuple(shape[1:]), dtype


def _npy_column(paths: Any, side: str, who: str) -> Column:
    """The shards of one side, a path or a list of them, agreeing on row shape and dtype."""
    paths = paths if isinstance(paths, (list, tuple)) and paths else [paths]
    parsed = [_npy_shard(checks.path(p, f"{who}: {side}_paths"), who) for p in paths]
    (first, shape, dtype), *_ = parsed
    for shard, *spec in parsed:
        if tuple(spec) != (shape, dtype):
            raise ValueError(
                f"{who}: {side} shard {shard.path} has rows of shape {spec[0]} and dtype "
                f"{spec[1]}; expected shape {shape} and dtype {dtype}, as in {first.path}"
            )
    return Column([shard for shard, *_ in parsed], shape, dtype)


class NpyDataset(FileDataset):
    """``(x, y)`` stored as ``.npy`` files: each side one file or a list of shards, joined
    along axis 0 in the order given (``x`` and ``y`` may be split at different rows).

    The headers are checked on construction: a side's shards share row shape and dtype, ``x``
    and ``y`` have the same total ``n > 0``, each file is as long as its header says. Fields:
    ``x_spec``, ``y_spec`` (``(shape, dtype)`` of one example after ``transform``) and
    ``transform`` (``f(x, y) -> (x, y)`` on NumPy batches, or ``None``).

    >>> import numpy as np, tempfile, os
    >>> x, y = (os.path.join(tempfile.mkdtemp(), f) for f in ("x.npy", "y.npy"))
    >>> np.save(x, np.arange(12, dtype=np.uint8).reshape(6, 2)); np.save(y, np.arange(6))
    >>> ds = NpyDataset(x, [y], transform=lambda x, y: (x / np.float32(255), y))
    >>> xs, ys = ds.read(np.array([5, 0, 5]))
    >>> (xs * 255).round().tolist(), ys.tolist(), ds.x_spec
    ([[10.0, 11.0], [0.0, 1.0], [10.0, 11.0]], [5, 0, 5], ((2,), dtype('float32')))
    """

    def __init__(self, x_paths: Any, y_paths: Any, *, transform: Transform | None = None):
        x = _npy_column(x_paths, "x", "NpyDataset")
        super().__init__(x, _npy_column(y_paths, "y", "NpyDataset"), transform, "NpyDataset")


def _idx_column(path: Any, argument: str, who: str) -> Column:
    path = checks.path(path, argument)
    head, size = _head(path, who, 4 + 4 * 255)
    if head[:2] == b"\x1f\x8b":
        hint = "gunzip it first (gunzip -k FILE), or read it into memory with data.load_idx"
        raise ValueError(f"{who}: {path} is gzip-compressed, so cannot be read at random: {hint}")
    dtype, shape, offset = idx_header(head, size, path, who)
    return Column([_sized(path, shape, dtype, offset, size, who)], shape[1:], dtype)


class IdxDataset(FileDataset):
    """``(x, y)`` stored as two uncompressed IDX files (MNIST's format, as
    :func:`~funcnn.data.load_idx` reads): rows along axis 0, big-endian values read as native
    ones. Fields: ``x_spec``, ``y_spec`` (``(shape, dtype)`` of one example after
    ``transform``) and ``transform``. A gzip file cannot be read at random: gunzip it first.

    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> x = write_idx(os.path.join(d, "x"), np.arange(24, dtype=np.uint8).reshape(3, 2, 4))
    >>> y = write_idx(os.path.join(d, "y"), np.array([7, 2, 1], np.uint8))
    >>> ds = IdxDataset(x, y, transform=lambda x, y: (x[..., None] / np.float32(255), y))
    >>> len(ds), ds.x_spec, ds[2][1]
    (3, ((2, 4, 1), dtype('float32')), array(1, dtype=uint8))
    """

    def __init__(self, images_path: Any, labels_path: Any, *, transform: Transform | None = None):
        x = _idx_column(images_path, "IdxDataset: images_path", "IdxDataset")
        y = _idx_column(labels_path, "IdxDataset: labels_path", "IdxDataset")
        super().__init__(x, y, transform, "IdxDataset")


def _temp_file(path: Path):
    """A new temporary file beside ``path``, open for writing: ``(file, its path)``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    return os.fdopen(fd, "w+b"), Path(tmp)


def _commit(f, tmp: Path, path: Path) -> None:
    """Flush, ``fsync`` and close ``f``, then rename ``tmp`` over ``path``."""
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(tmp, path)


def _spec(value: Any, argument: str) -> Spec:
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not isinstance(value[0], tuple):
        raise TypeError(f"{argument} must be a pair (shape tuple, dtype), got {value!r}")
    shape, dtype = value
    shape = tuple(checks.positive_int(d, f"{argument}: shape[{i}]") for i, d in enumerate(shape))
    return shape, _numeric(np.dtype(dtype), argument)


class NpyWriter:
    """Writes ``(x, y)`` chunk by chunk into ``.npy`` shards, for data larger than memory:
    ``folder/x-00000.npy``, ``folder/y-00000.npy``, ``x-00001.npy``, ... of ``rows_per_shard``
    rows (the last may hold fewer). A shard goes to a temporary file, ``fsync``\\ ed and
    renamed into place once full or at :meth:`close`; memory holds only the chunk appended.
    An error inside a ``with`` block removes every shard written. Fields: ``folder``,
    ``specs`` (``{"x": (shape, dtype), "y": ...}`` of one example), ``rows_per_shard``,
    ``n`` (rows so far), ``paths`` (``{"x": [...], "y": [...]}``, the shards finished).

    >>> import numpy as np, tempfile
    >>> with NpyWriter(tempfile.mkdtemp(), ((2,), np.float32), ((), np.int32),
    ...                rows_per_shard=3) as w:
    ...     for k in range(2):
    ...         w.append(np.full((2, 2), k, np.float32), np.array([k, k], np.int32))
    >>> ds = w.close()
    >>> len(ds), ds.read(np.arange(4))[1].tolist(), [p.name for p in w.paths["x"]]
    (4, [0, 0, 1, 1], ['x-00000.npy', 'x-00001.npy'])
    """

    def __init__(self, folder: Any, x_spec: Spec, y_spec: Spec, *, rows_per_shard: int):
        who = "NpyWriter"
        self.folder = checks.path(folder, f"{who}: folder")
        self.specs = {"x": _spec(x_spec, f"{who}: x_spec"), "y": _spec(y_spec, f"{who}: y_spec")}
        self.rows_per_shard = checks.positive_int(rows_per_shard, f"{who}: rows_per_shard")
        self.folder.mkdir(parents=True, exist_ok=True)
        if any(self.folder.glob("[xy]-*.npy")):
            raise FileExistsError(f"{who}: {self.folder} holds shards already; use a new folder")
        self.n = self._rows = 0  # rows written; rows in the shard being written
        self.paths: dict[str, list[Path]] = {"x": [], "y": []}  # the shards finished
        self._files: dict[str, tuple[Any, Path]] = {}  # the shard being written, per side
        self._dataset: NpyDataset | None = None  # once closed

    def append(self, x: Any, y: Any) -> None:
        """Write the rows of ``x`` and ``y`` (``(m, *x_shape)``, ``(m, *y_shape)``, dtypes
        that cast safely to the specs') after those already written."""
        x, y = check_xy(x, y, "NpyWriter.append")
        if self._dataset is not None:
            raise ValueError("NpyWriter.append: the writer is closed")
        chunk = {"x": self._cast(x, "x"), "y": self._cast(y, "y")}
        done = 0
        while done < len(x):
            take = min(len(x) - done, self.rows_per_shard - self._rows)
            for side, a in chunk.items():
                self._file(side).write(np.ascontiguousarray(a[done : done + take]).data)
            done, self._rows, self.n = done + take, self._rows + take, self.n + take
            if self._rows == self.rows_per_shard:
                self._finish_shard()

    def _cast(self, a: np.ndarray, side: str) -> np.ndarray:
        shape, dtype = self.specs[side]
        if a.shape[1:] != shape or not np.can_cast(a.dtype, dtype, "safe"):
            raise ValueError(
                f"NpyWriter.append: {side} has rows of shape {a.shape[1:]} and dtype "
                f"{a.dtype}; expected shape {shape} and dtype {dtype} (or one that casts to it)"
            )
        return a.astype(dtype, copy=False)

    def _file(self, side: str):
        """The open temporary file of the current shard, started on first use."""
        if side not in self._files:
            f, _ = self._files[side] = _temp_file(self._path(side))
            self._header(f, side)
        return self._files[side][0]

    def _path(self, side: str) -> Path:
        return self.folder / f"{side}-{len(self.paths[side]):05d}.npy"

    def _header(self, f, side: str) -> None:
        """The shard's header for its rows so far, at its start (NumPy pads it to a length
        that does not depend on the row count: the final one overwrites the first)."""
        shape, dtype = self.specs[side]
        f.seek(0)
        descr = np.lib.format.dtype_to_descr(dtype)
        header = {"descr": descr, "fortran_order": False, "shape": (self._rows, *shape)}
        np.lib.format.write_array_header_1_0(f, header)

    def _finish_shard(self) -> None:
        for side, (f, tmp) in self._files.items():
            self._header(f, side)
            _commit(f, tmp, self._path(side))
            self.paths[side].append(self._path(side))
        self._files, self._rows = {}, 0

    def close(self) -> NpyDataset:
        """Finish the last shard and return the dataset (the same one on a second call)."""
        if self._dataset is None:
            if self._files:
                self._finish_shard()
            if self.n == 0:
                raise ValueError("NpyWriter.close: no rows were appended; a dataset needs n > 0")
            self._dataset = NpyDataset(self.paths["x"], self.paths["y"])
        return self._dataset

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """:meth:`close`; after an error, remove every shard written, finished or not."""
        if kind is None:
            self.close()
            return
        for f, tmp in self._files.values():
            f.close()
            tmp.unlink(missing_ok=True)
        for path in (*self.paths["x"], *self.paths["y"]):
            path.unlink(missing_ok=True)
        self._files, self.paths = {}, {"x": [], "y": []}


def write_npy_shards(x: Any, y: Any, folder: Any, *, rows_per_shard: int) -> NpyDataset:
    """Write ``(x, y)`` into ``folder`` as ``.npy`` shards of ``rows_per_shard`` rows
    (with :class:`NpyWriter`) and return them as an :class:`NpyDataset`.

    >>> import numpy as np, tempfile
    >>> ds = write_npy_shards(np.arange(10).reshape(5, 2), np.arange(5) % 2,
    ...                       tempfile.mkdtemp(), rows_per_shard=2)
    >>> len(ds), ds.read(np.array([4, 1]))[0].tolist()
    (5, [[8, 9], [2, 3]])
    """
    x, y = check_xy(x, y, "write_npy_shards")
    specs = (x.shape[1:], x.dtype), (y.shape[1:], y.dtype)
    with NpyWriter(folder, *specs, rows_per_shard=rows_per_shard) as writer:
        writer.append(x, y)
    return writer.close()


def write_idx(path: Any, array: Any) -> Path:
    """Write ``array`` to ``path`` as an uncompressed IDX file (the MNIST format read by
    :func:`~funcnn.data.load_idx` and :class:`IdxDataset`), atomically; return the path.

    The layout: ``00 00``, the dtype's type code, the rank, the sizes, then the values, all
    big-endian; the dtype is one of uint8, int8, int16, int32, float32, float64.

    >>> import numpy as np, tempfile, os
    >>> from funcnn.data import load_idx
    >>> f = write_idx(os.path.join(tempfile.mkdtemp(), "labels"), np.array([7, 2, 1], np.uint8))
    >>> f.read_bytes().hex(" "), load_idx(f).tolist()
    ('00 00 08 01 00 00 00 03 07 02 01', [7, 2, 1])
    """
    path = checks.path(path, "write_idx")
    a = np.asarray(array)
    codes = {np.dtype(t).name: code for code, t in IDX_TYPES.items()}
    if a.dtype.name not in codes or a.ndim > 255 or any(d >= 1 << 32 for d in a.shape):
        raise ValueError(
            f"write_idx: IDX holds arrays of rank <= 255, sizes < 2**32 and dtype one of "
            f"{list(codes)}; got shape {a.shape} and dtype {a.dtype}"
        )
    flat, step = np.ascontiguousarray(a).reshape(-1), CHUNK_BYTES // a.itemsize
    f, tmp = _temp_file(path)
    try:
        f.write(bytes([0, 0, codes[a.dtype.name], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape))
        for i in range(0, flat.size, step):
            f.write(flat[i : i + step].astype(a.dtype.newbyteorder(">")).data)
        _commit(f, tmp, path)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    return path
