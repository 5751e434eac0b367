"""Datasets on disk (funcnn.data.files): every read against the array in memory, indexed the
same way; the writers against NumPy's own reader and a hand-written IDX layout; every bad
input a clear error; and the memory a full shuffled pass costs, measured."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcnn import data
from funcnn.data import ArrayDataset, IdxDataset, NpyDataset, NpyWriter, write_idx, write_npy_shards
from funcnn.data.files import GAP_BYTES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_shards(folder, name, array, cuts):
    """``array`` split at rows ``cuts`` into ``name-<i>.npy`` files, with ``np.save``."""
    paths = []
    for i, part in enumerate(np.split(array, cuts)):
        paths.append(folder / f"{name}-{i}.npy")
        np.save(paths[-1], part)
    return paths


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """The IDX layout written out by hand: 0, 0, type code, rank, big-endian sizes, data."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def check_reads(ds, x, y, indices):
    """``ds.read(indices)`` is ``(x[indices], y[indices])`` in the native byte order."""
    for got, want in zip(ds.read(indices), (x[indices], y[indices])):
        assert got.dtype == want.dtype.newbyteorder("=") and got.dtype.isnative
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------- reads equal memory

ROWS = {
    "uint8 pixels": ((3, 2), np.uint8),
    "float32 vector": ((5,), np.float32),
    "big-endian float64 rows wider than a gap": ((GAP_BYTES // 8 + 3,), np.dtype(">f8")),
    "int16 scalars": ((), np.int16),
    "bool": ((2,), np.bool_),
    "zero-width rows": ((3, 0), np.float32),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(ROWS)),
    n=st.integers(1, 40),
    x_cuts=st.lists(st.integers(0, 40), max_size=4),
    y_cuts=st.lists(st.integers(0, 40), max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_npy_reads_equal_the_arrays_indexed_alike(tmp_path_factory, kind, n, x_cuts, y_cuts, seed):
    rng = np.random.default_rng(seed)
    shape, dtype = ROWS[kind]
    x = (rng.standard_normal((n, *shape)) * 50).astype(dtype)
    y = rng.integers(-1000, 1000, n).astype(np.int32)
    folder = tmp_path_factory.mktemp("npy")
    ds = NpyDataset(
        save_shards(folder, "x", x, sorted(c % (n + 1) for c in x_cuts)),
        save_shards(folder, "y", y, sorted(c % (n + 1) for c in y_cuts)),
    )
    assert len(ds) == n
    assert ds.x_spec == (shape, np.dtype(dtype).newbyteorder("=")) and ds.y_spec == ((), np.int32)
    for size in (1, n, 2 * n + 3):  # one row, a permutation's length, repeats
        indices = rng.integers(-n, n, size)
        check_reads(ds, x, y, indices)
    check_reads(ds, x, y, np.arange(n))  # one long run, across every shard boundary
    check_reads(ds, x, y, np.arange(n)[::-1])
    check_reads(ds, x, y, np.zeros(0, np.int64))
    i = int(rng.integers(-n, n))
    xi, yi = ds[i]
    np.testing.assert_array_equal(xi, x[i])
    assert isinstance(xi, np.ndarray) and isinstance(yi, np.ndarray) and yi == y[i]


def test_reads_are_fresh_writable_arrays(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    ds = write_npy_shards(x, np.arange(10), tmp_path, rows_per_shard=4)
    a, _ = ds.read(np.arange(10))
    b, _ = ds.read(np.arange(10))
    a[:] = -1  # changing one read changes neither the next nor the file
    np.testing.assert_array_equal(b, x)
    np.testing.assert_array_equal(ds.read(np.arange(10))[0], x)
    assert a.flags.writeable and a.flags.c_contiguous


def test_rows_near_and_far_apart_across_shards(tmp_path):
    """Rows whose gaps are under and over GAP_BYTES, in runs that cross shard ends."""
    n = 5000
    x = np.arange(n * 3, dtype=np.int32).reshape(n, 3)  # 12-byte rows: 341 rows a gap
    y = np.arange(n, dtype=np.int64) * 7
    ds = write_npy_shards(x, y, tmp_path, rows_per_shard=777)
    rng = np.random.default_rng(0)
    for indices in (
        np.array([0, 300, 341, 342, 343 + 341 + 1, 4999, 776, 777, 778]),
        rng.permutation(n)[:256],
        rng.integers(0, n, 1000),
        np.concatenate([np.arange(700, 900), np.arange(100, 50, -1), [4999, 0]]),
    ):
        check_reads(ds, x, y, indices)


IDX_CASES = [
    (0x08, np.uint8, (5, 4, 3)),
    (0x09, np.int8, (6,)),
    (0x0B, np.int16, (4, 3)),
    (0x0C, np.int32, (3, 1, 2)),
    (0x0D, np.float32, (7, 3)),
    (0x0E, np.float64, (2, 2, 2, 2)),
]


@pytest.mark.parametrize("code, dtype, shape", IDX_CASES)
def test_idx_reads_equal_the_arrays_and_write_idx_matches_the_layout(tmp_path, code, dtype, shape):
    rng = np.random.default_rng(code)
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    y = rng.integers(0, 10, shape[0]).astype(np.uint8)
    (tmp_path / "x.idx").write_bytes(idx_bytes(x, code))
    (tmp_path / "y.idx").write_bytes(idx_bytes(y, 0x08))
    ds = IdxDataset(tmp_path / "x.idx", str(tmp_path / "y.idx"))
    assert len(ds) == shape[0] and ds.x_spec == (shape[1:], np.dtype(dtype))
    for indices in (np.arange(shape[0]), rng.integers(-shape[0], shape[0], 9), [1, 1, 0]):
        check_reads(ds, x, y, np.asarray(indices))
    assert ds.read(np.arange(shape[0]))[0].dtype.isnative
    # write_idx writes the same bytes, which load_idx reads back
    written = write_idx(tmp_path / "w.idx", x)
    assert written.read_bytes() == idx_bytes(x, code)
    np.testing.assert_array_equal(data.load_idx(written), x)


def test_write_idx_of_a_large_non_contiguous_array(tmp_path, monkeypatch):
    monkeypatch.setattr("funcnn.data.files.CHUNK_BYTES", 64)  # many chunks
    x = np.arange(600, dtype=np.float32).reshape(20, 30)[:, ::2]
    path = write_idx(tmp_path / "x", x)
    assert path.read_bytes() == idx_bytes(x, 0x0D)
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary file left


# ------------------------------------------------------------------- transform, specs, protocol


def test_transform_applies_to_each_read_and_sets_the_specs(tmp_path):
    x = np.arange(24, dtype=np.uint8).reshape(6, 2, 2)
    y = np.arange(6, dtype=np.uint8)
    calls = []

    def scale(xb, yb):
        calls.append(len(xb))
        return xb[..., None].astype(np.float32) / 255, yb.astype(np.int32)

    plain = write_npy_shards(x, y, tmp_path / "a", rows_per_shard=4)
    assert plain.x_spec == ((2, 2), np.uint8) and plain.transform is None
    ds = NpyDataset(
        [tmp_path / "a" / "x-00000.npy", tmp_path / "a" / "x-00001.npy"],
        [tmp_path / "a" / "y-00000.npy", tmp_path / "a" / "y-00001.npy"],
        transform=scale,
    )
    assert ds.x_spec == ((2, 2, 1), np.float32) and ds.y_spec == ((), np.int32)
    xb, yb = ds.read(np.array([5, 0]))
    np.testing.assert_array_equal(xb, x[[5, 0]][..., None].astype(np.float32) / 255)
    assert yb.dtype == np.int32 and yb.tolist() == [5, 0]
    assert calls[-1] == 2
    xi, yi = ds[-1]
    assert xi.shape == (2, 2, 1) and int(yi) == 5
    assert ds.read([])[0].shape == (0, 2, 2, 1)


def test_a_transform_that_drops_rows_is_an_error(tmp_path):
    x, y = np.zeros((4, 2)), np.zeros(4)
    write_npy_shards(x, y, tmp_path, rows_per_shard=4)
    with pytest.raises(ValueError, match="transform must keep the 1 rows"):
        NpyDataset(
            tmp_path / "x-00000.npy", tmp_path / "y-00000.npy", transform=lambda a, b: (a[:0], b)
        )
    with pytest.raises(TypeError, match="transform must be callable"):
        NpyDataset(tmp_path / "x-00000.npy", tmp_path / "y-00000.npy", transform="scale")


def test_datasets_meet_the_protocol_and_pickle(tmp_path):
    x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    ds = write_npy_shards(x, y, tmp_path, rows_per_shard=2)
    (tmp_path / "i.idx").write_bytes(idx_bytes(x.astype(np.float32), 0x0D))
    (tmp_path / "l.idx").write_bytes(idx_bytes(y.astype(np.uint8), 0x08))
    for d in (ds, IdxDataset(tmp_path / "i.idx", tmp_path / "l.idx")):
        assert isinstance(d, ArrayDataset)
        copy = pickle.loads(pickle.dumps(d))
        np.testing.assert_array_equal(copy.read([4, 0])[0], x[[4, 0]])
        assert copy.fingerprint() == d.fingerprint()
        assert repr(d).startswith(f"{type(d).__name__}(n=5, files=[")
    assert not isinstance(np.zeros(3), ArrayDataset)


def test_threads_share_a_dataset(tmp_path):
    x = np.arange(30000, dtype=np.int32).reshape(3000, 10)
    y = np.arange(3000)
    ds = write_npy_shards(x, y, tmp_path, rows_per_shard=1000)
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(30):
            i = rng.integers(0, 3000, 64)
            xb, yb = ds.read(i)
            if not (np.array_equal(xb, x[i]) and np.array_equal(yb, y[i])):
                errors.append(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ------------------------------------------------------------------- fingerprint


def test_fingerprint_is_json_stable_and_follows_the_data(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20, dtype=np.int64)
    ds = write_npy_shards(x, y, tmp_path / "a", rows_per_shard=8)
    fp = ds.fingerprint()
    assert json.loads(json.dumps(fp)) == fp
    again = NpyDataset(
        sorted((tmp_path / "a").glob("x-*.npy")), sorted((tmp_path / "a").glob("y-*.npy"))
    )
    assert again.fingerprint() == fp
    os.utime(tmp_path / "a" / "x-00001.npy", (1, 1))  # a new time, the same bytes
    assert again.fingerprint() == fp
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # a copy elsewhere
    moved = NpyDataset(
        sorted((tmp_path / "b").glob("x-*.npy")), sorted((tmp_path / "b").glob("y-*.npy"))
    )
    assert moved.fingerprint() == fp

    changed = x.copy()
    changed[9, 1] += 1  # one value, in the second shard
    other = write_npy_shards(changed, y, tmp_path / "c", rows_per_shard=8)
    assert other.fingerprint() != fp
    assert write_npy_shards(x, y + 1, tmp_path / "d", rows_per_shard=8).fingerprint() != fp
    assert write_npy_shards(x[:19], y[:19], tmp_path / "e", rows_per_shard=8).fingerprint() != fp
    resharded = write_npy_shards(x, y, tmp_path / "f", rows_per_shard=10)
    assert resharded.fingerprint() != fp  # other files, though the same rows
    halved = NpyDataset(
        sorted((tmp_path / "a").glob("x-*.npy")),
        sorted((tmp_path / "a").glob("y-*.npy")),
        transform=lambda a, b: (a.astype(np.float16), b),
    )
    assert halved.fingerprint() != fp  # the transform changed the dtype


def test_fingerprint_reads_a_sample_of_a_large_file(tmp_path, monkeypatch):
    n = 100_000
    ds = write_npy_shards(
        np.zeros((n, 4), np.float32), np.zeros(n, np.int8), tmp_path, rows_per_shard=n
    )
    reads = []
    real = os.pread

    def counting(fd, size, offset):
        reads.append(size)
        return real(fd, size, offset)

    monkeypatch.setattr(os, "pread", counting)
    ds.fingerprint()
    assert sum(reads) < 2 * 64 * GAP_BYTES  # a sample of rows, not the 1.6 MB of data


# ------------------------------------------------------------------- writers


def test_npy_writer_round_trip_in_chunks_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((103, 3, 2)).astype(np.float32)
    y = rng.integers(0, 10, 103).astype(np.int64)
    with NpyWriter(tmp_path, ((3, 2), np.float32), ((), np.int64), rows_per_shard=25) as w:
        for start in (0, 1, 7, 40, 41, 90):
            stop = {0: 1, 1: 7, 7: 40, 40: 41, 41: 90, 90: 103}[start]
            w.append(x[start:stop], y[start:stop])
        assert w.n == 90 + 13
    ds = w.close()
    assert w.close() is ds
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{s}-{i:05d}.npy" for s in "xy" for i in range(5)]  # no temporary files
    parts = [np.load(tmp_path / f"x-{i:05d}.npy") for i in range(5)]
    assert [len(p) for p in parts] == [25, 25, 25, 25, 3]
    np.testing.assert_array_equal(np.concatenate(parts), x)  # NumPy reads every shard
    np.testing.assert_array_equal(np.concatenate([np.load(p) for p in w.paths["y"]]), y)
    check_reads(ds, x, y, rng.permutation(103))


def test_npy_writer_casts_safely_and_refuses_the_rest(tmp_path):
    w = NpyWriter(tmp_path, ((2,), np.float64), ((), np.int64), rows_per_shard=3)
    w.append(np.ones((2, 2), np.float32), np.array([1, 2], np.int8))  # safe casts
    with pytest.raises(ValueError, match=r"x has rows of shape \(3,\).*expected shape \(2,\)"):
        w.append(np.ones((2, 3)), np.ones(2, np.int64))
    with pytest.raises(ValueError, match="y has rows of shape.*dtype float64"):
        w.append(np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="x and y must have the same length"):
        w.append(np.ones((2, 2)), np.ones(3, np.int64))
    ds = w.close()
    assert ds.x_spec == ((2,), np.float64) and ds.read([1])[1].tolist() == [2]
    with pytest.raises(ValueError, match="the writer is closed"):
        w.append(np.ones((1, 2)), np.ones(1, np.int64))


def test_npy_writer_refuses_bad_arguments_and_a_used_folder(tmp_path):
    with pytest.raises(ValueError, match="rows_per_shard must be a positive int, got 0"):
        NpyWriter(tmp_path, ((2,), np.float32), ((), np.int32), rows_per_shard=0)
    with pytest.raises(ValueError, match=r"x_spec: shape\[0\] must be a positive int, got -1"):
        NpyWriter(tmp_path, ((-1,), np.float32), ((), np.int32), rows_per_shard=2)
    with pytest.raises(TypeError, match="y_spec must be a pair"):
        NpyWriter(tmp_path, ((2,), np.float32), np.int32, rows_per_shard=2)
    with pytest.raises(ValueError, match="expected a numeric dtype"):
        NpyWriter(tmp_path, ((2,), object), ((), np.int32), rows_per_shard=2)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        NpyWriter(b"bytes", ((2,), np.float32), ((), np.int32), rows_per_shard=2)
    write_npy_shards(np.ones((2, 2)), np.ones(2), tmp_path, rows_per_shard=2)
    with pytest.raises(FileExistsError, match="holds shards already"):
        write_npy_shards(np.ones((2, 2)), np.ones(2), tmp_path, rows_per_shard=2)
    with pytest.raises(ValueError, match="no rows were appended"):
        NpyWriter(tmp_path / "empty", ((2,), np.float32), ((), np.int32), rows_per_shard=2).close()


def test_an_error_while_writing_leaves_no_shard(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        with NpyWriter(tmp_path, ((2,), np.float32), ((), np.int32), rows_per_shard=2) as w:
            w.append(np.ones((5, 2), np.float32), np.ones(5, np.int32))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_write_idx_refuses_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="dtype one of.*got shape \\(2,\\) and dtype int64"):
        write_idx(tmp_path / "a", np.array([1, 2]))
    with pytest.raises(ValueError, match="dtype bool"):
        write_idx(tmp_path / "a", np.array([True]))
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        write_idx(3, np.zeros(2, np.uint8))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- bad inputs


@pytest.fixture
def good(tmp_path):
    """Shards x-0, x-1 (3 + 2 rows of 2 float32) and y-0 (5 int64)."""
    x = save_shards(tmp_path, "x", np.arange(10, dtype=np.float32).reshape(5, 2), [3])
    y = save_shards(tmp_path, "y", np.arange(5), [])
    return tmp_path, x, y


def test_missing_files_and_bad_paths(good):
    folder, x, y = good
    with pytest.raises(FileNotFoundError, match=f"NpyDataset: {folder / 'nope.npy'} does not"):
        NpyDataset([x[0], folder / "nope.npy"], y)
    with pytest.raises(FileNotFoundError, match="IdxDataset: .*nope does not exist"):
        IdxDataset(folder / "nope", folder / "nope")
    with pytest.raises(TypeError, match=r"NpyDataset: x_paths: path must be a str or os.PathLike"):
        NpyDataset((p for p in x), y)
    with pytest.raises(TypeError, match="NpyDataset: y_paths: path must be"):
        NpyDataset(x, [])
    with pytest.raises(TypeError, match="NpyDataset: x_paths: path must be"):
        NpyDataset(42, y)


def test_shards_must_agree(good):
    folder, x, y = good
    np.save(folder / "x-wide.npy", np.zeros((2, 3), np.float32))
    np.save(folder / "x-f64.npy", np.zeros((2, 2), np.float64))
    with pytest.raises(
        ValueError,
        match=r"x shard .*x-wide.npy has rows of shape \(3,\) and dtype "
        r"float32; expected shape \(2,\) and dtype float32, as in .*x-0.npy",
    ):
        NpyDataset([*x, folder / "x-wide.npy"], y)
    with pytest.raises(
        ValueError,
        match=r"x-f64.npy has rows of shape \(2,\) and dtype float64; "
        r"expected shape \(2,\) and dtype float32",
    ):
        NpyDataset([*x, folder / "x-f64.npy"], y)
    with pytest.raises(
        ValueError, match="NpyDataset: x has 3 rows and y 5; expected n > 0 of each"
    ):
        NpyDataset(x[0], y)
    np.save(folder / "x-none.npy", np.zeros((0, 2), np.float32))
    np.save(folder / "y-none.npy", np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="x has 0 rows and y 0; expected n > 0"):
        NpyDataset(folder / "x-none.npy", folder / "y-none.npy")
    ds = NpyDataset([folder / "x-none.npy", *x], [y[0], folder / "y-none.npy"])  # empty shards pass
    np.testing.assert_array_equal(ds.read([4, 0])[0], [[8, 9], [0, 1]])
    assert len(ds.fingerprint()[-1]["x"]) == 3


BAD_NPY = {
    "truncated": (lambda a: a[:-1], r"is truncated: expected rows along axis 0, \d+ bytes"),
    "trailing bytes": (lambda a: a + b"\0", "is corrupt"),
    "not npy": (lambda a: b"hello, world", "is not a .npy file"),
    "empty": (lambda a: b"", "is not a .npy file"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPY))
def test_broken_npy_files_are_named(good, case):
    folder, x, y = good
    cut, match = BAD_NPY[case]
    x[1].write_bytes(cut(x[1].read_bytes()))
    with pytest.raises(ValueError, match=match) as info:
        NpyDataset(x, y)
    assert str(info.value).startswith(f"NpyDataset: {x[1]}")


def test_npy_contents_that_are_not_rows(tmp_path):
    y = save_shards(tmp_path, "y", np.arange(3), [])
    np.save(tmp_path / "obj.npy", np.array([{}, 1, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "scalar.npy", np.float32(3))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.ones((3, 2))))
    np.save(tmp_path / "record.npy", np.zeros(3, [("a", "f4")]))
    for name, match in [
        ("obj", "expected a numeric dtype"),
        ("scalar", "is a 0-d array"),
        ("fortran", "Fortran order"),
        ("record", "expected a numeric dtype"),
    ]:
        with pytest.raises(ValueError, match=match):
            NpyDataset(tmp_path / f"{name}.npy", y)


def test_idx_files_that_cannot_be_read_at_random(tmp_path):
    images, labels = np.zeros((3, 2, 2), np.uint8), np.arange(3, dtype=np.uint8)
    (tmp_path / "x").write_bytes(idx_bytes(images, 0x08))
    (tmp_path / "y.gz").write_bytes(gzip.compress(idx_bytes(labels, 0x08)))
    with pytest.raises(
        ValueError,
        match=r"y.gz is gzip-compressed, so cannot be read at random: "
        r"gunzip it first .*load_idx",
    ):
        IdxDataset(tmp_path / "x", tmp_path / "y.gz")
    (tmp_path / "y").write_bytes(idx_bytes(labels, 0x08)[:-1])
    with pytest.raises(ValueError, match=r"IdxDataset: .*y is truncated"):
        IdxDataset(tmp_path / "x", tmp_path / "y")
    (tmp_path / "y").write_bytes(idx_bytes(labels[:2], 0x08))
    with pytest.raises(ValueError, match="x has 3 rows and y 2"):
        IdxDataset(tmp_path / "x", tmp_path / "y")
    (tmp_path / "y").write_bytes(bytes([0, 0, 8, 0, 7]))  # rank 0: one value, no rows
    with pytest.raises(ValueError, match="is a 0-d array"):
        IdxDataset(tmp_path / "x", tmp_path / "y")
    (tmp_path / "y").write_bytes(b"\x00\x01\x08\x01")
    with pytest.raises(ValueError, match="is not an IDX file"):
        IdxDataset(tmp_path / "x", tmp_path / "y")


def test_bad_indices(good):
    ds = NpyDataset(good[1], good[2])
    for bad in (5, -6, 10**12):
        with pytest.raises(
            IndexError, match=rf"NpyDataset.read: index {bad} out of range \[-5, 5\)"
        ):
            ds.read(np.array([0, bad, 1]))
        with pytest.raises(IndexError, match=r"out of range \[-5, 5\)"):
            ds[bad]
    with pytest.raises(IndexError, match="index 18446744073709551615 out of range"):
        ds.read(np.array([2**64 - 1], np.uint64))
    with pytest.raises(TypeError, match=r"indices must be a 1-D array of ints, got float64\(2,\)"):
        ds.read(np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"1-D array of ints, got int64\(1, 2\)"):
        ds.read(np.array([[0, 1]]))
    with pytest.raises(TypeError, match="1-D array of ints, got bool"):
        ds.read(np.array([True, False]))
    with pytest.raises(TypeError, match="an example's index must be an int, got 1.0"):
        ds[1.0]  # type: ignore[index]
    assert ds.read(np.array([4], np.uint8))[1].tolist() == [4]
    assert [int(y) for _, y in ds] == [0, 1, 2, 3, 4]  # iteration stops at the IndexError


def test_a_file_cut_short_after_opening_is_an_error_on_read(good):
    folder, x, y = good
    ds = NpyDataset(x, y)
    x[1].write_bytes(x[1].read_bytes()[:-4])
    np.testing.assert_array_equal(ds.read([0, 2])[0], [[0, 1], [4, 5]])  # the first shard
    with pytest.raises(ValueError, match=r"x-1.npy ended at byte \d+: was it cut short"):
        ds.read([4])


# ------------------------------------------------------------------- Grain


def test_grain_map_dataset_reads_the_rows(tmp_path):
    grain = pytest.importorskip("grain")
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    y = np.arange(10, dtype=np.int32) * 3
    ds = write_npy_shards(x, y, tmp_path, rows_per_shard=4)
    batches = list(grain.MapDataset.source(ds).batch(4))
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    shuffled = grain.MapDataset.source(ds).shuffle(seed=3).batch(5)
    xb, yb = shuffled[1]
    np.testing.assert_array_equal(xb, x[yb // 3])
    assert sorted(np.concatenate([b[1] for b in shuffled]).tolist()) == y.tolist()


# ------------------------------------------------------------------- bounded memory

MEMORY_PROBE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from funcnn.data import NpyWriter

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # MiB

    def reset_peak():  # VmHWM := VmRSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    folder, n, chunk = sys.argv[1], 520_000, 10_000  # 28 x 28 uint8: 408 MB
    reset_peak()
    before = status("VmHWM")
    rng = np.random.default_rng(0)
    with NpyWriter(folder, ((28, 28), np.uint8), ((), np.int32), rows_per_shard=200_000) as w:
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            labels = np.arange(i, i + m, dtype=np.int32)
            w.append(rng.integers(0, 256, (m, 28, 28), np.uint8), labels)
    ds = w.close()
    write_growth = status("VmHWM") - before
    perm = rng.permutation(n)
    ds.read(perm[:256])  # warm
    reset_peak()
    before, start, seen = status("VmHWM"), time.perf_counter(), 0
    for i in range(0, n, 256):
        x, y = ds.read(perm[i : i + 256])
        seen += int((y == perm[i : i + 256]).sum())
    seconds = time.perf_counter() - start
    read_growth = status("VmHWM") - before
    reset_peak()
    before = status("VmHWM")
    mapped = np.load(w.paths["x"][0], mmap_mode="r")
    for i in range(0, len(mapped), 256):
        np.array(mapped[np.sort(perm[i : i + 256] % len(mapped))])
    mmap_growth = status("VmHWM") - before
    growth = [round(write_growth), round(read_growth), round(mmap_growth)]
    print(seen, *growth, n * 784 / seconds / 1e6)
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
def test_a_shuffled_pass_over_400_mb_keeps_memory_flat(tmp_path):
    """The peak resident memory of a process that writes 408 MB chunk by chunk, then reads
    it all in shuffled batches of 256 rows, grows by less than 100 MB in each phase; a
    memory-mapped pass over one 157 MB shard, the control, grows by most of the shard."""
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "big")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    seen, write_growth, read_growth, mmap_growth, mb_per_s = out.stdout.split()
    assert int(seen) == 520_000  # every label came back where it belongs
    assert int(write_growth) < 100, out.stdout
    assert int(read_growth) < 100, out.stdout
    assert int(mmap_growth) > 100, out.stdout  # the measurement sees a memory map's pages
