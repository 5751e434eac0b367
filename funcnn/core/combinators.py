"""Combinators: layers made of layers, ``serial``, ``parallel``, ``fanout``, ``fanin_sum``,
``fanin_concat``, ``residual``, and ``named`` to give a child its params key.

Each is written once, with state threaded through its children, and runs them through
:func:`funcnn.core.layer.apply_child`, the one place that decides a child's key, params,
state and error path; :func:`funcnn.core.layer.combinator` derives the plain
``(init, apply)`` pair when no child keeps state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import checks
from ..checks import input_shape as check_input_shape
from ..checks import shapes_match
from .layer import (
    Layer,
    apply_child,
    assign_names,
    child_params,
    child_state,
    combinator,
    init_child,
)

__all__ = ["serial", "parallel", "fanout", "fanin_sum", "fanin_concat", "residual", "named"]


def serial(*layers: Layer) -> Layer:
    """Compose layers: ``y = f_k(... f_2(f_1(x)))``.

    Params are ``{child_name: child_params}`` for children that have parameters.

    >>> from funcnn.layers import Dense, Tanh
    >>> import jax
    >>> init, apply = serial(Dense(4), Tanh(), Dense(1))
    >>> shape, params = init(jax.random.key(0), (-1, 2))
    >>> shape, sorted(params)
    ((-1, 1), ['dense_0', 'dense_1'])
    """
    names = assign_names(layers, "serial")

    def init(key, input_shape):
        shape, params, state = input_shape, {}, {}
        for i, (name, layer) in enumerate(zip(names, layers)):
            shape = init_child(name, layer, key, i, shape, params, state)
        return shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        new_state = {}
        for i, (name, layer) in enumerate(zip(names, layers)):
            p = child_params(params, name, names, "serial")
            st = child_state(state, name, names, "serial")
            x, st = apply_child(name, layer, p, st, x, key=key, index=i, train=train)
            if st:
                new_state[name] = st
        return x, new_state

    desc = "serial(" + ", ".join(layer.description for layer in layers) + ")"
    children = tuple(zip(names, layers))
    return combinator(init, apply, kind="serial", description=desc, children=children)


def parallel(*layers: Layer) -> Layer:
    """Apply the i-th layer to the i-th input: ``(x_1, ..., x_k) -> (f_1(x_1), ..., f_k(x_k))``.

    Use with :func:`fanout` and :func:`fanin_sum` / :func:`fanin_concat` for branches.
    ``init`` takes a tuple of ``k`` input shapes and returns a tuple of ``k`` output
    shapes; params are ``{child_name: child_params}`` as in :func:`serial`.

    Args:
      *layers: the ``k`` branches ``f_1 ... f_k``.

    >>> import jax, jax.numpy as jnp
    >>> from funcnn.layers import Dense, Tanh
    >>> init, apply = parallel(Dense(3), Tanh())
    >>> shapes, params = init(jax.random.key(0), ((-1, 2), (-1, 4)))
    >>> shapes, sorted(params)
    (((-1, 3), (-1, 4)), ['dense_0'])
    >>> [y.shape for y in apply(params, (jnp.ones((5, 2)), jnp.zeros((5, 4))))]
    [(5, 3), (5, 4)]
    """
    names = assign_names(layers, "parallel")

    def _check_tuple(value, what):
        if not isinstance(value, (tuple, list)) or len(value) != len(layers):
            raise ValueError(
                f"parallel: expected a tuple of {len(layers)} {what}, got {value!r:.80}"
            )

    def init(key, input_shape):
        _check_tuple(input_shape, "input shapes")
        if not all(isinstance(s, (tuple, list)) for s in input_shape):
            raise ValueError(
                f"parallel: input_shape must be a tuple of {len(layers)} input shapes, one "
                f"per branch, got {input_shape!r:.80}"
            )
        params, state = {}, {}
        shapes = [
            init_child(name, layer, key, i, s, params, state)
            for i, (name, layer, s) in enumerate(zip(names, layers, input_shape))
        ]
        return tuple(shapes), params, state

    def apply(params, state, xs, *, key=None, train=False):
        _check_tuple(xs, "inputs")
        out, new_state = [], {}
        for i, (name, layer, x) in enumerate(zip(names, layers, xs)):
            p = child_params(params, name, names, "parallel")
            st = child_state(state, name, names, "parallel")
            y, st = apply_child(name, layer, p, st, x, key=key, index=i, train=train)
            out.append(y)
            if st:
                new_state[name] = st
        return tuple(out), new_state

    desc = "parallel(" + ", ".join(layer.description for layer in layers) + ")"
    children = tuple(zip(names, layers))
    return combinator(init, apply, kind="parallel", description=desc, children=children)


def fanout(n: int) -> Layer:
    """Copy the input ``n`` times: ``x -> (x, ..., x)``.

    Args:
      n: the number of copies, a positive int; the output is a tuple of ``n`` arrays of
        the input's shape.

    >>> import jax
    >>> fanout(2).init(jax.random.key(0), (-1, 3))[0]
    ((-1, 3), (-1, 3))
    >>> fanout(3).apply({}, 1.0)
    (1.0, 1.0, 1.0)
    """
    n = checks.positive_int(n, "fanout: n")

    def init(key, input_shape):
        return (input_shape,) * n, {}

    def apply(params, x, *, key=None, train=False):
        return (x,) * n

    return Layer(init, apply, kind="fanout", description=f"fanout({n})")


def fanin_sum() -> Layer:
    """Sum a tuple of equally shaped inputs: ``(x_1, ..., x_k) -> Σ x_i``.

    ``init`` takes a tuple of ``k`` equal shapes (``-1`` matching any size) and returns
    that shape.

    >>> import jax, jax.numpy as jnp
    >>> fanin_sum().init(jax.random.key(0), ((-1, 2), (-1, 2)))[0]
    (-1, 2)
    >>> fanin_sum().apply({}, (jnp.ones(2), jnp.full(2, 2.0))).tolist()
    [3.0, 3.0]
    """

    def init(key, input_shape):
        shapes = [check_input_shape(s, "fanin_sum", min_rank=0) for s in input_shape]
        if not all(shapes_match(shapes[0], s) for s in shapes):
            raise ValueError(f"fanin_sum: all inputs must have the same shape, got {shapes}")
        return shapes[0], {}

    def apply(params, xs, *, key=None, train=False):
        shapes = [jnp.shape(x) for x in xs]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"fanin_sum: all inputs must have the same shape, got {shapes}")
        return sum(xs[1:], xs[0])

    return Layer(init, apply, kind="fanin_sum", description="fanin_sum()")


def fanin_concat(axis: int = -1) -> Layer:
    """Concatenate a tuple of inputs along ``axis`` (the last by default).

    Inputs of shapes ``(n, ..., d_i, ...)`` that agree on every other axis give
    ``(n, ..., Σ d_i, ...)``; the batch axis 0 cannot be concatenated.

    Args:
      axis: the axis to concatenate along.

    >>> import jax, jax.numpy as jnp
    >>> fanin_concat().init(jax.random.key(0), ((-1, 2), (-1, 3)))[0]
    (-1, 5)
    >>> fanin_concat().apply({}, (jnp.ones((4, 2)), jnp.zeros((4, 3)))).shape
    (4, 5)
    """

    def init(key, input_shape):
        shapes = [check_input_shape(s, "fanin_concat") for s in input_shape]
        rank = len(shapes[0])
        ax = axis % rank
        rest = [tuple(d for j, d in enumerate(s) if j != ax) for s in shapes]
        if any(len(s) != rank for s in shapes) or not all(shapes_match(rest[0], r) for r in rest):
            raise ValueError(
                f"fanin_concat: inputs must agree on every axis but {axis}, got {shapes}"
            )
        if ax == 0:
            raise ValueError("fanin_concat: cannot concatenate along the batch axis")
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return tuple(out), {}

    def apply(params, xs, *, key=None, train=False):
        return jnp.concatenate(xs, axis=axis)

    return Layer(init, apply, kind="fanin_concat", description=f"fanin_concat(axis={axis})")


def residual(*layers: Layer, shortcut: Layer | None = None) -> Layer:
    """The lecture's skip connection: ``y = x + f(x)``, with ``f = serial(*layers)``.

    With ``shortcut`` (e.g. a projection ``Dense``), ``y = shortcut(x) + f(x)``. The body's
    params are the residual's own params (no extra nesting); a shortcut's go under
    ``"shortcut"``. ``init`` raises a clear error when ``f(x)`` and ``x`` differ in shape.

    Args:
      *layers: the body ``f``, applied in order; it must keep the shape ``(n, ..., d)``
        unless a ``shortcut`` maps ``x`` to ``f(x)``'s shape.
      shortcut: a layer for the skip path, e.g. ``Dense(n)``; ``None`` is the identity.

    >>> import jax, jax.numpy as jnp
    >>> from funcnn.layers import Dense, Tanh
    >>> block = residual(Dense(4), Tanh())
    >>> shape, params = block.init(jax.random.key(0), (-1, 4))
    >>> shape, sorted(params)
    ((-1, 4), ['dense_0'])
    >>> x = jnp.ones((2, 4))
    >>> f = serial(Dense(4), Tanh())  # the same body: y = x + f(x)
    >>> bool(jnp.allclose(block.apply(params, x), x + f.apply(params, x)))
    True
    >>> shape, params = residual(Dense(3), shortcut=Dense(3)).init(jax.random.key(0), (-1, 2))
    >>> shape, sorted(params)
    ((-1, 3), ['b', 'shortcut', 'w'])
    """
    if not layers:
        raise ValueError("residual: needs at least one layer for its body f")
    body = layers[0] if len(layers) == 1 else serial(*layers)

    def init(key, input_shape):
        key = checks.prng_key(key, "residual: key")
        out, params, state = body.init_with_state(jax.random.fold_in(key, 0), input_shape)
        skip_shape, skip_params, skip_state = input_shape, {}, {}
        if shortcut is not None:
            skip_shape = init_child(
                "shortcut", shortcut, key, 1, input_shape, skip_params, skip_state
            )
        params, state = _with_shortcut(params, skip_params), _with_shortcut(state, skip_state)
        if not shapes_match(out, skip_shape):
            raise ValueError(
                f"residual: x + f(x) needs f to keep the shape, but f maps {tuple(input_shape)} "
                f"to {tuple(out)}; give a projection with residual(..., shortcut=Dense(n))"
            )
        return out, params, state

    def apply(params, state, x, *, key=None, train=False):
        body_params, skip = params, x
        body_state, new_state = state or {}, {}
        if shortcut is not None:
            body_params = {k: v for k, v in params.items() if k != "shortcut"}
            body_state = {k: v for k, v in body_state.items() if k != "shortcut"}
            skip_params = params.get("shortcut", {})
            skip_state = (state or {}).get("shortcut", {})
            skip, skip_state = apply_child(
                "shortcut", shortcut, skip_params, skip_state, x, key=key, index=1, train=train
            )
            new_state = {"shortcut": skip_state} if skip_state else {}
        fx, body_state = apply_child(
            None, body, body_params, body_state, x, key=key, index=0, train=train
        )
        if jnp.shape(fx) != jnp.shape(skip):
            raise ValueError(
                f"residual: x + f(x) needs equal shapes, got {jnp.shape(skip)} and {jnp.shape(fx)}"
            )
        return skip + fx, {**body_state, **new_state}

    return combinator(
        init,
        apply,
        kind="residual",
        description=f"residual({body.description})",
        children=(("body", body),),
    )


def _with_shortcut(tree: dict, shortcut_tree: dict) -> dict:
    """The body's params (or state) with the shortcut's beside them, under "shortcut"."""
    if not shortcut_tree:
        return tree
    tree = dict(tree) if isinstance(tree, dict) else {"body": tree}
    tree.update(shortcut_tree)
    return tree


def named(name: str, layer: Layer) -> Layer:
    """Give a layer a name, used as its params key inside a combinator.

    >>> from funcnn.layers import Dense
    >>> import jax
    >>> _, params = serial(named("hidden", Dense(3)), Dense(1)).init(jax.random.key(0), (-1, 2))
    >>> sorted(params)
    ['dense_0', 'hidden']
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"named: name must be a non-empty str without '/', got {name!r}")
    if not isinstance(layer, Layer):
        raise TypeError(f"named({name!r}): expected a Layer, got {layer!r}")
    return layer.replace(name=name)
