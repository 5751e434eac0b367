"""Forged checkpoints for the reliability tests: archives taken apart and put together
again with every zip CRC right, as a careful forger (or a buggy writer) would."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import numpy as np


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as the bytes of an ``.npy`` file."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def zip_entries(entries: dict[str, bytes], deflated: tuple[str, ...] = ()) -> bytes:
    """A zip of ``name.npy`` entries, stored (or deflated, those named in ``deflated``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, raw in entries.items():
            method = zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED
            zf.writestr(f"{name}.npy", raw, compress_type=method)
    return buf.getvalue()


def header_npy(header: dict) -> bytes:
    """A checkpoint header entry's bytes: the JSON text as a uint8 array."""
    return npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8))


def take_apart(data: bytes) -> tuple[dict[str, bytes], dict]:
    """The raw ``.npy`` bytes of each entry, and the header, of a checkpoint's bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        raw = {info.filename[:-4]: zf.read(info) for info in zf.infolist()}
    header = json.loads(np.load(io.BytesIO(raw.pop("__funcnn__"))).tobytes())
    return raw, header


def rebuild(raw: dict[str, bytes], header: dict, record: bool = True, **kw) -> bytes:
    """A consistent archive (each zip CRC right) of ``raw`` and ``header``; with ``record``
    the header's entries are recomputed from ``raw``, as a careful forger would."""
    if record:
        header = {**header, "entries": {}}
        for name, npy in raw.items():
            arr_header = np.lib.format.read_array_header_1_0(skip_magic(npy))
            shape, _, dtype = arr_header
            header["entries"][name] = {
                "crc32": zlib.crc32(npy),
                "size": len(npy),
                "shape": list(shape),
                "dtype": dtype.str,
            }
    return zip_entries({**raw, "__funcnn__": header_npy(header)}, **kw)


def skip_magic(npy: bytes) -> io.BytesIO:
    buf = io.BytesIO(npy)
    np.lib.format.read_magic(buf)
    return buf


def central_records(data: bytes) -> list[int]:
    """Offsets of the central directory's file records."""
    end = data.rindex(b"PK\x05\x06")
    start = struct.unpack("<I", data[end + 16 : end + 20])[0]
    offsets, at = [], start
    while data[at : at + 4] == b"PK\x01\x02":
        offsets.append(at)
        n, m, k = struct.unpack("<HHH", data[at + 28 : at + 34])
        at += 46 + n + m + k
    return offsets


def patch_method(data: bytes, index: int, method: int, flags: int | None = None) -> bytes:
    """``data`` with entry ``index``'s compression method (and flag bits) changed, in both
    its local header and its central directory record."""
    out = bytearray(data)
    record = central_records(data)[index]
    struct.pack_into("<H", out, record + 10, method)
    local = struct.unpack("<I", data[record + 42 : record + 46])[0]
    struct.pack_into("<H", out, local + 8, method)
    if flags is not None:
        struct.pack_into("<H", out, record + 8, flags)
        struct.pack_into("<H", out, local + 6, flags)
    return bytes(out)


def npy_declaring(shape: tuple[int, ...], dtype: str, payload: bytes) -> bytes:
    """An .npy entry whose header declares ``shape`` but which holds only ``payload``."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload
