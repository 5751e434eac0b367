"""Damaged checkpoints: every one is refused with CheckpointError, none loads wrong.

A fuzz flips bits and bytes of a real checkpoint (one ``fit`` writes) thousands of times; the
property tests generate each kind of hostile file — unknown compression methods, headers that
name unknown dtypes or missing entries, shapes of 10¹⁵ elements, deflate bombs, header dtypes
that disagree with the stored bytes — and check that it is refused before anything large is
allocated.
"""

from __future__ import annotations

import functools
import io
import os
import random
import struct
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcnn import checkpoint, models
from funcnn.checkpoint import CheckpointError
from funcnn.train.state import Checkpoints, RunState
from tests.checkpoint_forgery import (
    central_records,
    header_npy,
    npy_bytes,
    npy_declaring,
    patch_method,
    rebuild,
    take_apart,
    zip_entries,
)
from tests.reliability_support import assert_trees_identical

HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _run_state() -> RunState:
    """The state of a small run after two epochs, bfloat16 moments among its leaves."""
    model = models.mlp([8, 2], "tanh", dropout=0.1)
    params = model.init(jax.random.key(0), (-1, 2))[1]
    opt_state = optax.adam(0.01).init(params)
    opt_state = jax.tree_util.tree_map(lambda a: a + 0.125, opt_state)
    state = RunState(params, opt_state, jax.random.key(3), {"loss": [0.7, 0.5]}, {})
    state.best_params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    state.epoch, state.step, state.best_value, state.best_epoch = 2, 0, 0.5, 1
    return state


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``(bytes of a real checkpoint, its flat entries, its meta, its tree)``."""
    folder = tmp_path_factory.mktemp("run")
    state = _run_state()
    runs = Checkpoints(folder, keep=3, every=None, config={"n": 8, "batch_size": 4})
    runs.save(8, state)
    runs.close()
    (path,) = folder.glob("step_*.npz")
    return path.read_bytes(), checkpoint.load(path), checkpoint.load_meta(path), state.tree()


def _write(folder: Path, data: bytes, name: str = "bad.npz") -> Path:
    """``data`` as the file ``folder/name``, written over in place: truncating a file to
    zero and writing it again makes ext4 flush it to disk, a thousand times slower."""
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return path


def _same_flat(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        u, v = a[name], b[name]
        if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            assert jnp.issubdtype(v.dtype, jax.dtypes.prng_key)
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        u, v = np.asarray(u), np.asarray(v)
        assert (u.dtype, u.shape, u.tobytes()) == (v.dtype, v.shape, v.tobytes()), name


def _exact_or_refused(path: Path, flat: dict, meta: dict, like=None, tree=None) -> bool:
    """The file loads exactly (True) or is refused with CheckpointError (False)."""
    try:
        back_meta = checkpoint.load_meta(path)
        assert back_meta == meta  # the header reads exactly, or not at all
    except CheckpointError:
        back_meta = None
    try:
        back = checkpoint.load(path)
    except CheckpointError:
        return False
    _same_flat(back, flat)  # a load that succeeds returns exactly the saved entries
    assert back_meta == meta
    if like is not None:
        assert_trees_identical(checkpoint.load(path, like=like), tree)
    return True


# ------------------------------------------------------------------------------ the fuzz


def _structure(data: bytes) -> list[int]:
    """Offsets of the bytes that describe the archive: the zip's local headers and the start
    of each .npy (its header), and everything from the JSON header entry to the end."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    spots = []
    for info in infos:
        spots += range(info.header_offset, min(len(data), info.header_offset + 200))
    spots += range(max(i.header_offset for i in infos), len(data))
    return spots


def _mutate(data: bytes, rng: random.Random, spots: list[int]) -> bytes:
    out = bytearray(data)
    kind = rng.choice(["bit", "bit", "bit", "byte", "bits", "cut", "insert", "delete", "span"])
    at = rng.choice(spots) if rng.random() < 0.6 else rng.randrange(len(out))
    if kind == "bit":
        out[at] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        out[at] = (out[at] + rng.randrange(1, 256)) % 256
    elif kind == "bits":
        for _ in range(rng.randrange(2, 9)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "cut":
        del out[at:]
    elif kind == "insert":
        out[at:at] = bytes([rng.randrange(256)])
    elif kind == "delete":
        del out[at]
    else:
        out[at : at + rng.randrange(1, 64)] = bytes(rng.randrange(256) for _ in range(8))
    return bytes(out)


def test_fuzz_flipped_bits_and_bytes_never_load_wrong(saved, tmp_path):
    data, flat, meta, tree = saved
    rng = random.Random(20240611)
    spots = _structure(data)
    outcomes = {True: 0, False: 0}
    for case in range(3000):
        bad = _mutate(data, rng, spots)
        path = _write(tmp_path, bad)
        like = tree if case % 50 == 0 else None  # some through the template path too
        outcomes[_exact_or_refused(path, flat, meta, like, tree)] += 1
    # most damage is refused; what loads (a flip in a field no reader uses) loads exactly
    assert outcomes[False] > 2500, outcomes


def test_the_fuzz_sees_a_reader_that_skips_the_checksums(saved, tmp_path, monkeypatch):
    """Without zipfile's CRC-32 check, damaged data loads: the fuzz above would see it."""
    data, flat, meta, _ = saved
    monkeypatch.setattr(zipfile.ZipExtFile, "_update_crc", lambda self, newdata: None)
    rng = random.Random(1)
    spots = _structure(data)
    wrong = 0
    for _ in range(300):
        try:
            _exact_or_refused(_write(tmp_path, _mutate(data, rng, spots)), flat, meta)
        except AssertionError:
            wrong += 1
    assert wrong > 0


@HYPOTHESIS
@given(at=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_every_single_bit_flip_is_refused_or_harmless(saved, tmp_path, at, bit):
    data, flat, meta, _ = saved
    bad = bytearray(data)
    bad[at % len(bad)] ^= 1 << bit
    _exact_or_refused(_write(tmp_path, bytes(bad)), flat, meta)


def test_every_truncation_of_the_header_region_is_refused(saved, tmp_path):
    data, flat, meta, _ = saved
    for size in range(len(data) - 400, len(data)):
        assert not _exact_or_refused(_write(tmp_path, data[:size]), flat, meta)


# ------------------------------------------------------------------- building hostile files


@functools.cache
def _small_bytes() -> bytes:
    tree = {"w": np.arange(3, dtype=np.float32), "h": jnp.ones(2, jnp.bfloat16)}
    tree["key"] = jax.random.key(0)
    with tempfile.TemporaryDirectory() as folder:
        return checkpoint.save(Path(folder) / "s.npz", tree, meta={"epoch": 1}).read_bytes()


def _small() -> tuple[dict[str, bytes], dict]:
    """A checkpoint of ``{"w": float32[3], "h": bfloat16[2], "key": key}``, taken apart."""
    return take_apart(_small_bytes())


def _v1(header: dict) -> dict:
    """The header as format 1 wrote it: no record of the entries."""
    return {k: v for k, v in header.items() if k != "entries"} | {"format": 1}


def _refused(tmp_path: Path, data: bytes, match: str | None = None, meta_too: bool = False) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(path)
    if meta_too:
        with pytest.raises(CheckpointError, match=match):
            checkpoint.load_meta(path)


def test_the_builders_make_a_good_checkpoint(tmp_path):
    raw, header = _small()
    back = checkpoint.load(_write(tmp_path, rebuild(raw, header)))
    assert back["['h']"].dtype == jnp.bfloat16 and back["['w']"].tolist() == [0.0, 1.0, 2.0]


# ------------------------------------------------------------ unknown compression methods


@HYPOTHESIS
@given(method=st.integers(0, 65535).filter(lambda m: m not in (0, 8)), index=st.integers(0, 3))
def test_unknown_compression_methods_are_refused(tmp_path, method, index):
    raw, header = _small()
    bad = patch_method(rebuild(raw, header), index, method)
    _refused(tmp_path, bad, "compression method", meta_too=True)


@pytest.mark.parametrize(
    ("method", "flags", "match"),
    [
        (12, None, "compression method 12"),  # bzip2: zipfile could, a checkpoint never does
        (14, None, "compression method 14"),  # lzma
        (99, None, "compression method 99"),  # AES: zipfile raises NotImplementedError
        (0, 0x1, "encrypted"),  # zipfile would ask for a password (RuntimeError)
        (0, 0x20, "truncated or corrupt"),  # 'compressed patched data': NotImplementedError
        (0, 0x40, "truncated or corrupt"),  # strong encryption: NotImplementedError
    ],
)
def test_what_zipfile_cannot_read_is_a_checkpoint_error(tmp_path, method, flags, match):
    raw, header = _small()
    _refused(tmp_path, patch_method(rebuild(raw, header), 0, method, flags), match)


# --------------------------------------------- headers naming unknown dtypes, missing entries

names = st.text(st.characters(codec="utf-8"), max_size=12)


@HYPOTHESIS
@given(dtype=names.filter(lambda s: checkpoint.archive.extended_dtype(s) is None))
def test_a_header_naming_an_unknown_dtype_is_refused(tmp_path, dtype):
    raw, header = _small()
    header["dtypes"]["['h']"] = dtype
    _refused(tmp_path, rebuild(raw, header), "no extended dtype known", meta_too=True)


@HYPOTHESIS
@given(
    field=st.sampled_from(["dtypes", "keys", "entries", "drop"]),
    name=names.filter(lambda s: s not in ("['w']", "['h']", "['key']")),
)
def test_a_header_naming_a_missing_entry_is_refused(tmp_path, field, name):
    raw, header = _small()
    if field == "drop":  # the archive lacks an entry the header records
        bad = rebuild({k: v for k, v in raw.items() if k != "['w']"}, header, record=False)
    else:
        data = rebuild(raw, header)
        raw, header = take_apart(data)
        value = {"dtypes": "bfloat16", "keys": "threefry2x32"}.get(field)
        entry = {"crc32": 0, "size": 0, "shape": [], "dtype": "<f4"}
        header[field][name] = entry if field == "entries" else value
        bad = rebuild(raw, header, record=False)
    _refused(tmp_path, bad, meta_too=True)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.pop("entries"),  # a format-2 header without its records
        lambda h: h.update(format=3),
        lambda h: h.update(format="2"),
        lambda h: h.update(meta=[1]),
        lambda h: h.update(dtypes={"['h']": 7}),
        lambda h: h["entries"]["['w']"].update(shape=[-3]),
        lambda h: h["entries"]["['w']"].update(crc32=h["entries"]["['w']"]["crc32"] ^ 1),
        lambda h: h["entries"]["['w']"].update(size=h["entries"]["['w']"]["size"] + 8),
    ],
)
def test_a_malformed_header_is_refused(tmp_path, change):
    raw, header = take_apart(rebuild(*_small()))
    change(header)
    _refused(tmp_path, rebuild(raw, header, record=False), meta_too=True)


@pytest.mark.parametrize("text", [b"[" * 100_000, b"\xff\xfe", b'{"format": 2', b"null"])
def test_a_header_that_is_no_json_object_is_refused(tmp_path, text):
    raw, _ = _small()
    bad = zip_entries({**raw, "__funcnn__": npy_bytes(np.frombuffer(text, np.uint8))})
    _refused(tmp_path, bad, "unreadable checkpoint header", meta_too=True)


def test_an_unknown_key_implementation_is_refused(tmp_path):
    raw, header = _small()
    header["keys"]["['key']"] = "threefry9x9"
    _refused(tmp_path, rebuild(raw, header), r"entry \['key'\] is no 'threefry9x9' PRNG key")
    assert checkpoint.load_meta(_write(tmp_path, rebuild(raw, header))) == {"epoch": 1}


# ---------------------------------------------------------- declared sizes beyond the file


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


huge_shapes = st.lists(st.integers(1, 10**8), min_size=1, max_size=4).filter(
    lambda s: np.prod(s, dtype=object) >= 10**9
)


@HYPOTHESIS
@given(shape=huge_shapes, dtype=st.sampled_from(["<f4", "<f8", "|u1", "<i8", "<c16"]))
def test_a_declared_shape_beyond_the_file_is_refused_before_allocating(tmp_path, shape, dtype):
    raw, header = _small()
    raw["['w']"] = npy_declaring(tuple(shape), dtype, b"\0" * 64)
    for record in (True, False):  # a forger who records the entry, and a format-1 file
        bad = rebuild(raw, header if record else _v1(header), record=record)
        path = _write(tmp_path, bad)

        def load(path=path):
            with pytest.raises(CheckpointError):
                checkpoint.load(path)

        assert _peak_bytes(load) < 2**20


def test_ten_to_the_fifteen_elements_are_refused_at_once(tmp_path):
    raw, header = _small()
    raw["['w']"] = npy_declaring((10**15,), "<f4", b"\0" * 16)
    path = _write(tmp_path, rebuild(raw, header))
    with pytest.raises(CheckpointError, match=r"needs 4000000000000000 bytes, the entry holds 16"):
        checkpoint.load(path)


@HYPOTHESIS
@given(declared=st.integers(0, 2**32 - 1), index=st.integers(0, 3), v1=st.booleans())
def test_a_zip_size_other_than_the_stored_bytes_is_refused(tmp_path, declared, index, v1):
    raw, header = _small()
    data = bytearray(rebuild(raw, _v1(header) if v1 else header, record=not v1))
    record = central_records(bytes(data))[index]
    if struct.unpack_from("<I", data, record + 24)[0] == declared:
        return
    struct.pack_into("<I", data, record + 24, declared)
    _refused(tmp_path, bytes(data))


def test_overlapping_entries_are_refused(tmp_path):
    """A second directory record pointing into the first entry's bytes, as zip bombs that
    reuse one compressed stream many times do."""
    data = rebuild(*_small())
    record = central_records(data)[0]
    n, m, k = struct.unpack("<HHH", data[record + 28 : record + 34])
    twin = bytearray(data[record : record + 46 + n + m + k])
    twin[46 : 46 + n] = twin[46 : 46 + n].replace(b"w", b"v")  # another name, same bytes
    end = data.rindex(b"PK\x05\x06")
    eocd = bytearray(data[end:])
    count, cd_size = struct.unpack("<H", eocd[10:12])[0], struct.unpack("<I", eocd[12:16])[0]
    struct.pack_into("<HHI", eocd, 8, count + 1, count + 1, cd_size + len(twin))
    bad = data[:record] + bytes(twin) + data[record:end] + bytes(eocd)
    _refused(tmp_path, bad, "overlap", meta_too=True)


# ------------------------------------------------------------------------- deflate bombs


def _bomb(size: int, declared: int) -> bytes:
    """A format-1 checkpoint with a deflated ``.npy`` entry of ``size`` zero bytes whose
    header (and zip record) declare only ``declared`` of them."""
    npy = npy_declaring((declared,), "|u1", b"")
    raw, header = _small()
    entries = {**raw, "bomb": npy + b"\0" * size, "__funcnn__": header_npy(_v1(header))}
    data = bytearray(zip_entries(entries, deflated=("bomb",)))
    record = central_records(bytes(data))[3]
    assert data[record + 46 : record + 46 + 8] == b"bomb.npy"
    struct.pack_into("<I", data, record + 24, len(npy) + declared)
    return bytes(data)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(2**22, 2**25), declared=st.integers(0, 4096))
def test_a_deflate_bomb_is_refused_before_inflating_past_its_declared_size(
    tmp_path, size, declared
):
    path = _write(tmp_path, _bomb(size, declared))

    def load():
        with pytest.raises(CheckpointError, match="Bad CRC-32"):
            checkpoint.load(path)

    assert _peak_bytes(load) < 2**20  # the bomb holds 4 to 32 MiB of zeros


def test_a_deflated_entry_declaring_more_than_deflate_can_hold_is_refused(tmp_path):
    data = bytearray(_bomb(2**20, 0))
    record = central_records(bytes(data))[3]
    struct.pack_into("<I", data, record + 24, 2**31)  # 1 KiB of deflate cannot hold 2 GiB
    path = _write(tmp_path, bytes(data))
    with pytest.raises(CheckpointError, match="more than its .* stored bytes can hold"):
        checkpoint.load_meta(path)


def test_an_honest_deflated_checkpoint_still_loads(tmp_path):
    """``np.savez_compressed`` archives with a funcnn header are read, bounded by deflate's
    ratio."""
    raw, header = _small()
    data = rebuild(raw, header, deflated=tuple(raw) + ("__funcnn__",))
    assert checkpoint.load(_write(tmp_path, data))["['w']"].tolist() == [0.0, 1.0, 2.0]


# --------------------------------------------- header dtypes that disagree with the bytes

EXTENDED = ["bfloat16", "float8_e4m3fn", "float8_e5m2", "int4", "uint4", "float4_e2m1fn"]
STORED = ["<f4", "<f2", "<i2", "|i1", "<u4", "|b1", "<c8", "<u8"]


@HYPOTHESIS
@given(name=st.sampled_from(EXTENDED), stored=st.sampled_from(STORED + ["<u2", "|u1"]))
def test_a_header_dtype_that_disagrees_with_the_stored_bytes_is_refused(tmp_path, name, stored):
    wanted = checkpoint.archive.extended_dtype(name)
    stored_dtype = np.dtype(stored)
    if stored_dtype.kind == "u" and stored_dtype.itemsize == wanted.itemsize:
        return  # the raw bits of this dtype: a good file
    raw, header = _small()
    raw["['h']"] = npy_bytes(np.zeros(4, stored_dtype))
    header["dtypes"]["['h']"] = name
    _refused(tmp_path, rebuild(raw, header), r"not the raw bits of the header's dtype")


@HYPOTHESIS
@given(recorded=st.sampled_from(STORED), shape=st.lists(st.integers(0, 4), max_size=2))
def test_an_entry_that_disagrees_with_its_record_is_refused(tmp_path, recorded, shape):
    raw, header = _small()
    data = rebuild(raw, header)
    raw, header = take_apart(data)
    entry = header["entries"]["['w']"]
    if (recorded, shape) == (entry["dtype"], entry["shape"]):
        return
    entry.update(dtype=recorded, shape=shape)
    _refused(tmp_path, rebuild(raw, header, record=False), "the header recorded")


@pytest.mark.parametrize(
    "arr",
    [
        np.array(["text"]),
        np.zeros(2, "V8"),
        np.zeros(2, [("a", "<f4")]),
        np.zeros(2, "M8[s]"),
        np.zeros((2, 2), ">f4"),
    ],
    ids=["unicode", "void", "structured", "datetime", "big-endian-recorded-other"],
)
def test_entries_of_non_numeric_or_unrecorded_dtypes_are_refused(tmp_path, arr):
    raw, header = _small()
    data = rebuild(raw, header)
    raw, header = take_apart(data)
    raw["['w']"] = npy_bytes(arr)  # the header still records float32[3]
    _refused(tmp_path, rebuild(raw, header, record=False))


def test_a_format_one_checkpoint_still_loads(tmp_path):
    """Files written before the header recorded each entry are checked by the zip's CRCs."""
    raw, header = _small()
    header = {k: v for k, v in header.items() if k != "entries"} | {"format": 1}
    back = checkpoint.load(_write(tmp_path, rebuild(raw, header, record=False)))
    assert back["['w']"].tolist() == [0.0, 1.0, 2.0] and back["['h']"].dtype == jnp.bfloat16
