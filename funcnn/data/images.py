"""Images: the 8×8 digits bundled with scikit-learn, and MNIST-format IDX files."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

__all__ = ["digits", "load_idx", "IDX_TYPES"]


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8×8 handwritten digits that scikit-learn ships (1,797 images, no download).

    Pixel values ``0 … 16`` are scaled to ``x = v / 16 ∈ [0, 1]``.

    Returns:
      ``(x, y)``: ``x`` float32 NHWC images of shape ``(1797, 8, 8, 1)``, ``y`` int32
      labels ``0 … 9`` of shape ``(1797,)``.

    >>> x, y = digits()
    >>> x.shape, y.shape, int(y.max())
    ((1797, 8, 8, 1), (1797,), 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "data.digits needs scikit-learn, which ships the 8×8 digits: "
            "pip install scikit-learn (or 'funcnn[examples]')"
        ) from err
    bunch = load_digits()
    x = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
    return x, np.asarray(bunch.target, np.int32)


# IDX type codes (http://yann.lecun.com/exdb/mnist/): big-endian element types.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path) -> np.ndarray:
    """Read an IDX file, the MNIST format, gzip-compressed or not.

    The layout: two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B``
    int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions
    ``d``; then ``d`` big-endian uint32 sizes; then ``Π sizes`` big-endian elements.
    Compression is recognized by gzip's magic bytes, whatever the file's name.

    Args:
      path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
      an array of the stored shape in the native byte order, e.g. uint8
      ``(60000, 28, 28)`` for MNIST's training images; ``x[..., None] / 255`` makes NHWC
      images.

    Raises:
      ValueError: a wrong magic number, an unknown type code, a truncated file, trailing
        bytes or a corrupt gzip stream, naming the file.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "labels.idx"
    >>> _ = f.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> load_idx(f).tolist()
    [7, 2, 1]
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"load_idx: {path} is a corrupt or truncated gzip file: {err}"
            ) from None
    dtype, shape, header = idx_header(raw, len(raw), path, "load_idx")
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def idx_header(head: bytes, size: int, path, who: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """The element type, the shape and the data offset of an IDX file, from its first bytes.

    ``head`` holds the file's first ``min(size, 1024)`` bytes or more (the longest header,
    ``4 + 4 · 255``), ``size`` its length in bytes, which must be exactly
    ``offset + Π shape · itemsize``. The element type is big-endian, as stored.

    Raises:
      ValueError: a wrong magic number, an unknown type code, a truncated file or trailing
        bytes, the message starting ``"{who}: {path}"``.

    >>> idx_header(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]), 11, "labels.idx", "load_idx")
    (dtype('uint8'), (3,), 8)
    """
    if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in IDX_TYPES:
        raise ValueError(
            f"{who}: {path} is not an IDX file: expected the magic bytes 00 00, a type code "
            f"in {[hex(c) for c in IDX_TYPES]} and a rank, got {head[:4].hex(' ') or 'nothing'}"
        )
    dtype, rank = np.dtype(IDX_TYPES[head[2]]), head[3]
    header = 4 + 4 * rank
    if size < header:
        raise ValueError(
            f"{who}: {path} is truncated: its header needs {header} bytes for {rank} "
            f"dimensions, the file has {size}"
        )
    shape = tuple(int(d) for d in np.frombuffer(head, ">u4", rank, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "corrupt (trailing bytes)"
        raise ValueError(
            f"{who}: {path} is {what}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"the file has {size}"
        )
    return dtype, shape, header
