"""The bundled 8×8 digits and the IDX (MNIST format) reader."""

from __future__ import annotations

import gzip
import struct
import sys

import numpy as np
import pytest

from funcnn import data


def test_digits_are_nhwc_floats_with_integer_labels():
    x, y = data.digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    assert sorted(set(y.tolist())) == list(range(10))
    # every class has between 174 and 183 images (UCI optdigits test set)
    counts = np.bincount(y)
    assert counts.min() >= 174 and counts.max() <= 183
    from sklearn.datasets import load_digits

    raw = load_digits()
    np.testing.assert_array_equal(x[..., 0] * 16, raw.images)
    np.testing.assert_array_equal(x.reshape(1797, 64) * 16, raw.data)


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn"):
        data.digits()


def write_idx(path, array: np.ndarray, code: int, compress: bool = False) -> None:
    """The IDX layout written out by hand: 0, 0, type code, rank, big-endian sizes, data."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    payload = header + big_endian.tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


CASES = [
    (0x08, np.uint8, (3, 4, 5)),
    (0x09, np.int8, (6,)),
    (0x0B, np.int16, (2, 3)),
    (0x0C, np.int32, (4, 1, 2)),
    (0x0D, np.float32, (3, 3)),
    (0x0E, np.float64, (2, 2, 2, 2)),
]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code, dtype, shape", CASES)
def test_idx_round_trip(tmp_path, code, dtype, shape, compress):
    rng = np.random.default_rng(code)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    path = tmp_path / ("file.idx.gz" if compress else "file.idx")
    write_idx(path, array, code, compress)
    got = data.load_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_idx_compression_is_found_by_content_not_name(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], np.uint8)
    write_idx(tmp_path / "labels", labels, 0x08, compress=True)
    np.testing.assert_array_equal(data.load_idx(tmp_path / "labels"), labels)
    write_idx(tmp_path / "plain.gz", labels, 0x08, compress=False)
    np.testing.assert_array_equal(data.load_idx(tmp_path / "plain.gz"), labels)


GOOD = bytes([0, 0, 8, 2]) + struct.pack(">2I", 2, 3) + bytes(range(6))
GZ = gzip.compress(GOOD)
BROKEN = {
    "wrong magic": (bytes([1, 0, 8, 2]) + GOOD[4:], "not an IDX file"),
    "unknown type": (bytes([0, 0, 0x0A, 2]) + GOOD[4:], "not an IDX file"),
    "empty": (b"", "not an IDX file"),
    "text": (b"hello, world", "not an IDX file"),
    "short header": (GOOD[:6], "truncated: its header needs 12 bytes"),
    "short data": (GOOD[:-1], r"truncated: shape \(2, 3\) of uint8 needs 18 bytes"),
    "trailing bytes": (GOOD + b"\x00", r"corrupt \(trailing bytes\)"),
    "cut gzip": (GZ[: len(GZ) // 2], "corrupt or truncated gzip"),
    "bad gzip": (GZ[:10] + b"\xff" * (len(GZ) - 10), "corrupt or truncated gzip"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_idx_rejects_broken_files_clearly(tmp_path, case):
    content, match = BROKEN[case]
    path = tmp_path / "broken.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        data.load_idx(path)
    assert str(info.value).startswith(f"load_idx: {path}")
    (tmp_path / "good.idx").write_bytes(GOOD)
    assert data.load_idx(tmp_path / "good.idx").tolist() == [[0, 1, 2], [3, 4, 5]]
