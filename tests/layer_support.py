"""Helpers the tests of the newer layers share: the shape a layer's ``init`` promises,
checked against what ``apply`` returns eagerly, under ``jax.jit`` and under ``jax.vmap``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import checks


def _is_shape(s) -> bool:
    return isinstance(s, tuple) and all(isinstance(d, int) for d in s)


def _leaf_shapes(tree):
    """The shapes of a nested tuple of shapes, or of arrays, as a flat list."""
    if _is_shape(tree):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [s for t in tree for s in _leaf_shapes(t)]
    return [tuple(jnp.shape(tree))]


def assert_shape_promise(layer, input_shape, x, *, params=None, vmap=True, **kw):
    """``init(key, input_shape)``'s output shape matches ``apply(params, x)`` eagerly, jitted
    and (with ``vmap``) vmapped over a leading axis of two copies of ``x``."""
    out_shape, drawn = layer.init(jax.random.key(0), input_shape)
    params = drawn if params is None else params
    promised = _leaf_shapes(out_shape)

    def run(x):
        return layer.apply(params, x, **kw)

    for y in (run(x), jax.jit(run)(x)):
        got = _leaf_shapes(y)
        assert len(got) == len(promised), (got, promised)
        for g, p in zip(got, promised):
            assert checks.shapes_match(g, p), (g, p)
    if vmap:
        xs = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), x)
        ys = jax.vmap(run)(xs)
        for g, p in zip(_leaf_shapes(ys), promised):
            assert checks.shapes_match(g[1:], p) and g[0] == 2, (g, p)
    return out_shape, params


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
