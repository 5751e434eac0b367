"""Helpers shared by the reliability tests (checkpoints, resume, non-finite guard)."""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np

# Every fit call compiles its own step; a persistent compilation cache lets repeated calls
# (and the subprocesses of the kill test) reuse the executables instead of recompiling.
CACHE_DIR = os.path.join(tempfile.gettempdir(), "funcnn-test-jax-cache")
CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def use_compile_cache() -> None:
    jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _bits(leaf) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def assert_trees_identical(a, b) -> None:
    """Same structure, and every leaf has the same dtype, shape and bits."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(a)]
    for path, u, v in zip(paths, jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        u, v = _bits(u), _bits(v)
        assert u.dtype == v.dtype and u.shape == v.shape, path
        assert u.tobytes() == v.tobytes(), f"{path} differs"


def all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))
