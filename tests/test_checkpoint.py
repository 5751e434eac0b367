"""checkpoint.save / load: round trips, atomic writes, and refusal of unsafe or broken files."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnn import checkpoint
from tests.reliability_support import assert_trees_identical


def _tree():
    params = {"hidden": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}, "out": {}}
    params["out"] = {"w": jnp.ones((3, 1), jnp.bfloat16)}
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "step": 41,
        "lr": 0.25,
        "key": jax.random.key(7),
        "raw_key": jax.random.PRNGKey(3),
        "counts": np.arange(4, dtype=np.int64),
        "flag": np.bool_(True),
    }


def test_round_trip_restores_every_leaf_bit_for_bit(tmp_path):
    tree = _tree()
    path = checkpoint.save(tmp_path / "ck.npz", tree, meta={"epoch": 3, "loss": [1.5, 0.5]})
    back = checkpoint.load(path, like=tree)
    assert_trees_identical(back, tree)
    assert type(back["step"]) is int and back["step"] == 41
    assert type(back["lr"]) is float and back["lr"] == 0.25
    assert isinstance(back["counts"], np.ndarray)
    assert isinstance(back["params"]["hidden"]["w"], jax.Array)
    assert back["params"]["out"]["w"].dtype == jnp.bfloat16
    assert jnp.issubdtype(back["key"].dtype, jax.dtypes.prng_key)
    # the restored key draws the same numbers as the original
    assert (
        jax.random.normal(back["key"], (3,)).tolist()
        == jax.random.normal(tree["key"], (3,)).tolist()
    )
    assert checkpoint.load_meta(path) == {"epoch": 3, "loss": [1.5, 0.5]}


def test_file_is_a_plain_npz_keyed_by_pytree_paths(tmp_path):
    tree = _tree()
    path = checkpoint.save(tmp_path / "ck.npz", tree)
    with np.load(path, allow_pickle=False) as z:  # numpy alone can read it, without pickle
        names = set(z.files)
        np.testing.assert_array_equal(z["['params']['hidden']['w']"], np.arange(6.0).reshape(2, 3))
        assert z["['opt_state'][0].count"] == 0 and z["['step']"] == 41
        np.testing.assert_array_equal(z["['key']"], np.asarray(jax.random.key_data(tree["key"])))
    expected = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}
    assert names - {"__funcnn__"} == expected
    flat = checkpoint.load(path)
    assert set(flat) == expected


def test_like_may_be_shapes_only(tmp_path):
    tree = {"w": jnp.ones((2, 2)), "key": jax.random.key(0)}
    checkpoint.save(tmp_path / "a.npz", tree)
    back = checkpoint.load(tmp_path / "a.npz", like=jax.eval_shape(lambda: tree))
    assert_trees_identical(back, tree)


# --------------------------------------------------------------------------- atomicity


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("fail_in", ["replace", "fsync", "write_array"])
def test_interrupted_save_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch, fail_in):
    old = {"w": jnp.zeros((3, 3))}
    path = tmp_path / "ck.npz"
    checkpoint.save(path, old)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        if fail_in == "write_array":  # write part of the data first, as a crash would
            args[0].write(b"\x93NUMPY partial")
        raise OSError("simulated crash")

    target = np.lib.format if fail_in == "write_array" else os
    monkeypatch.setattr(target, fail_in, crash)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.save(path, {"w": jnp.ones((3, 3))})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_trees_identical(checkpoint.load(path, like=old), old)
    assert _files(tmp_path) == ["ck.npz"]  # the temporary file is gone too


def test_save_replaces_only_after_the_data_is_written(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    checkpoint.save(path, {"w": jnp.zeros(2)})
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src).parent == tmp_path, Path(src).stat().st_size > 0, Path(dst)))
        # the temporary file is complete before it takes the checkpoint's name
        assert checkpoint.load(src, like={"w": jnp.ones(2)})["w"].tolist() == [1.0, 1.0]
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    checkpoint.save(path, {"w": jnp.ones(2)})
    assert seen == [(True, True, path)]


# ----------------------------------------------------------------------- unsafe files


class _Payload:
    """Unpickling this runs code: it creates the sentinel file."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def _header() -> np.ndarray:
    return np.frombuffer(json.dumps({"format": 1, "keys": {}, "dtypes": {}}).encode(), np.uint8)


def test_the_payload_is_live(tmp_path):
    sentinel = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(sentinel)))  # what an unsafe loader would do
    assert sentinel.exists()


def test_object_array_in_npz_is_refused_without_running_it(tmp_path):
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(sentinel)
    np.savez(path, **{"__funcnn__": _header(), "['w']": evil})
    with pytest.raises(ValueError, match=r"\['w'\].*Python objects"):
        checkpoint.load(path, like={"w": jnp.zeros(1)})
    with pytest.raises(ValueError, match="Python objects"):
        checkpoint.load(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("kind", ["pickle", "npy_object"])
def test_a_pickle_posing_as_a_checkpoint_is_refused(tmp_path, kind):
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"w": _Payload(sentinel)}))
    else:
        with open(path, "wb") as f:
            np.save(f, np.array([_Payload(sentinel)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not an .npz archive"):
        checkpoint.load(path, like={"w": jnp.zeros(1)})
    assert not sentinel.exists()


# ---------------------------------------------------------------------- broken files


def test_zero_length_file_is_refused(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        checkpoint.load(path, like={"w": jnp.zeros(1)})


def test_every_truncation_is_refused_with_a_clear_error(tmp_path):
    tree = {"w": jnp.arange(64.0), "b": jnp.ones(3)}
    data = checkpoint.save(tmp_path / "ck.npz", tree).read_bytes()
    cut = tmp_path / "cut.npz"
    for size in sorted({4, 10, 30, 100, len(data) // 3, len(data) // 2, len(data) - 1}):
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            checkpoint.load(cut, like=tree)


def test_flipped_bytes_are_caught_by_the_checksum(tmp_path):
    tree = {"w": jnp.arange(64.0)}
    data = bytearray(checkpoint.save(tmp_path / "ck.npz", tree).read_bytes())
    offset = data.index(np.arange(64.0, dtype=np.float32)[10:12].tobytes())
    data[offset] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        checkpoint.load(bad, like=tree)


def test_an_npz_without_the_header_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.zeros(2))
    with pytest.raises(ValueError, match="not a funcnn checkpoint"):
        checkpoint.load(path, like={"w": np.zeros(2)})


def test_a_zip_with_other_members_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("script.py", "print('hi')")
    with pytest.raises(ValueError, match="unexpected entry 'script.py'"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    ("like", "message"),
    [
        ({"w": jnp.zeros((2, 4)), "b": jnp.zeros(3)}, r"\['w'\] has shape \(2, 3\).*\(2, 4\)"),
        ({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3, jnp.int32)}, r"\['b'\] has dtype float32"),
        ({"w": jnp.zeros((2, 3))}, r"holds \['b'\], which like does not have"),
        ({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3), "c": 1}, r"no entry \['c'\]"),
        ({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3), "k": jax.random.key(0)}, r"no entry"),
        ([jnp.zeros((2, 3)), jnp.zeros(3)], r"no entry \[0\]"),
    ],
)
def test_wrong_structure_names_the_first_differing_path(tmp_path, like, message):
    path = checkpoint.save(tmp_path / "ck.npz", {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})
    with pytest.raises(ValueError, match=message):
        checkpoint.load(path, like=like)


def test_a_raw_key_does_not_pass_for_a_typed_key(tmp_path):
    path = checkpoint.save(tmp_path / "ck.npz", {"key": jax.random.PRNGKey(0)})
    with pytest.raises(ValueError, match=r"\['key'\]"):
        checkpoint.load(path, like={"key": jax.random.key(0)})


def test_unsaveable_leaves_leave_no_file(tmp_path):
    with pytest.raises(TypeError, match=r"leaf \['name'\] is a str"):
        checkpoint.save(tmp_path / "ck.npz", {"name": "mlp", "w": jnp.ones(2)})
    with pytest.raises(TypeError, match=r"leaf \['o'\] has dtype object"):
        checkpoint.save(tmp_path / "ck.npz", {"o": np.array([{}], dtype=object)})
    assert _files(tmp_path) == []


def test_meta_round_trips_non_finite_floats(tmp_path):
    meta = {"history": {"loss": [float("nan"), float("inf"), 0.1 + 0.2]}}
    path = checkpoint.save(tmp_path / "ck.npz", {}, meta=meta)
    back = checkpoint.load_meta(path)["history"]["loss"]
    assert np.isnan(back[0]) and back[1] == float("inf") and back[2] == 0.1 + 0.2
    assert checkpoint.load(path, like={}) == {}


def test_load_reads_from_a_file_not_a_buffer():
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        checkpoint.load(io.BytesIO(b""))
