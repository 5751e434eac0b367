"""The layer pair and the combinators that build networks out of layers.

A layer is a pair ``(init, apply)``:

* ``init(key, input_shape) -> (output_shape, params)`` draws the weights; the batch
  dimension of ``input_shape`` may be ``-1``.
* ``apply(params, x, *, key=None, train=False) -> y`` is pure; ``key`` feeds dropout.

Combinators (``serial``, ``parallel``, ``residual``, ...) are layers themselves. They key
their children's params by name: a user's name given with :func:`named`, or a stable
automatic name ``<kind>_<i>`` counted per kind (``dense_0``, ``tanh_0``, ``dense_1``).
Children without parameters add no key.

Two type aliases name what flows through ``init``:

* ``Shape``: a tuple of ints, the batch (first) dimension possibly ``-1`` for "any",
  e.g. ``(-1, 28, 28, 1)``; for layers with several inputs or outputs (``parallel``,
  ``fanout``), a tuple of such tuples.
* ``Params``: a layer's parameters, a nested dict of arrays such as
  ``{"hidden": {"w": (2, 3), "b": (3,)}}``; ``{}`` for a layer without parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Layer",
    "Shape",
    "Params",
    "serial",
    "parallel",
    "fanout",
    "fanin_sum",
    "fanin_concat",
    "residual",
    "named",
    "layer_scope",
    "check_input_shape",
    "shapes_match",
]

Shape = Any  # a tuple of ints (batch may be -1), or a tuple of such tuples
Params = Any  # a nested dict of arrays
InitFn = Callable[[jax.Array, Shape], tuple[Shape, Params]]
ApplyFn = Callable[..., Any]


class _Pair(NamedTuple):
    init: InitFn
    apply: ApplyFn


class Layer(_Pair):
    """An ``(init, apply)`` pair, unpackable as ``init, apply = layer``.

    * ``init(key, input_shape) -> (output_shape, params)``: draws the weights for inputs
      of shape ``input_shape`` (batch possibly ``-1``).
    * ``apply(params, x, *, key=None, train=False) -> y``: the pure forward pass.

    Besides the two functions a layer carries a ``kind`` (the stem of its automatic
    name, e.g. ``"dense"``), an optional user ``name`` and a short ``description`` used
    in error messages and summaries. Models may attach more attributes (``loss``,
    ``metric``, ``predict``); combinators attach ``children``, a list of
    ``(name, layer)``.

    The constructor takes ``Layer(init, apply, *, kind="layer", name=None,
    description=None, **extras)``: ``description`` defaults to ``kind``, and ``extras``
    become attributes.

    A layer that doubles its input, ``y = 2x``:

    >>> import jax
    >>> double = Layer(lambda key, s: (s, {}), lambda p, x, **kw: 2 * x, kind="double")
    >>> init, apply = double
    >>> init(jax.random.key(0), (-1, 3)), apply({}, 1.5)
    (((-1, 3), {}), 3.0)
    >>> double, double.kind, double.name
    (<Layer double>, 'double', None)
    """

    def __new__(
        cls,
        init: InitFn,
        apply: ApplyFn,
        *,
        kind: str = "layer",
        name: str | None = None,
        description: str | None = None,
        **extras: Any,
    ) -> Layer:
        self = super().__new__(cls, init, apply)
        self.kind = kind
        self.name = name
        self.description = description or kind
        self.__dict__.update(extras)
        return self

    def __repr__(self) -> str:
        label = f"{self.name}=" if self.name else ""
        return f"<Layer {label}{self.description}>"

    def with_attrs(self, **attrs: Any) -> Layer:
        """A copy of this layer with some attributes replaced or added."""
        fields = dict(self.__dict__)
        fields.update(attrs)
        return Layer(self.init, self.apply, **fields)


# ----------------------------------------------------------------------------- helpers


_PATH_ATTR = "_funcnn_path"


@contextlib.contextmanager
def layer_scope(name: str) -> Iterator[None]:
    """Prefix a ValueError or TypeError raised inside with the layer's path.

    Nested scopes build paths such as ``mlp/hidden_0: Dense(16) expected ...``: the error
    is raised again as the same type with the message ``"<name>/<inner path>: <message>"``.
    Subclasses of ValueError / TypeError pass through unchanged.

    Args:
      name: the layer's name, the path's next component (outermost first).

    >>> try:
    ...     with layer_scope("mlp"), layer_scope("hidden_0"):
    ...         raise ValueError("Dense(16) expected inputs of width 3")
    ... except ValueError as err:
    ...     print(err)
    mlp/hidden_0: Dense(16) expected inputs of width 3
    """
    try:
        yield
    except (ValueError, TypeError) as err:
        if type(err) not in (ValueError, TypeError):
            raise
        path, message = getattr(err, _PATH_ATTR, ((), str(err)))
        new = type(err)(f"{'/'.join((name, *path))}: {message}")
        setattr(new, _PATH_ATTR, ((name, *path), message))
        raise new from err


def _is_dim(d: Any) -> bool:
    return d is None or (isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1))


def check_input_shape(
    input_shape: Any, who: str, *, min_rank: int = 1, rank: int | None = None
) -> tuple:
    """Validate a single input shape given to ``init`` and return it as a tuple.

    Every dimension must be a positive int, or ``-1`` / ``None`` for an unknown size
    (``None`` becomes ``-1``).

    Args:
      input_shape: the shape ``init`` received, e.g. ``(-1, 28, 28, 1)``.
      who: the layer's description, used in the error messages.
      min_rank: the smallest accepted rank.
      rank: the exact rank required, if any.

    Returns:
      the shape as a tuple of ints.

    Raises:
      TypeError: ``input_shape`` is not a tuple of valid dimensions.
      ValueError: its rank is not ``rank`` or is below ``min_rank``.

    >>> check_input_shape([None, 3], "Dense(4)")
    (-1, 3)
    >>> check_input_shape((-1, 3), "Conv(6, 5)", rank=4)
    Traceback (most recent call last):
    ...
    ValueError: Conv(6, 5): expected an input of rank 4, got shape (-1, 3)
    """
    if not isinstance(input_shape, (tuple, list)) or not all(_is_dim(d) for d in input_shape):
        raise TypeError(
            f"{who}: input_shape must be a tuple of positive ints (the batch may be -1), "
            f"got {input_shape!r}"
        )
    shape = tuple(-1 if d is None else d for d in input_shape)
    if rank is not None and len(shape) != rank:
        raise ValueError(f"{who}: expected an input of rank {rank}, got shape {shape}")
    if len(shape) < min_rank:
        raise ValueError(f"{who}: expected an input of rank >= {min_rank}, got shape {shape}")
    return shape


def shapes_match(a: Sequence[int], b: Sequence[int]) -> bool:
    """Shapes are equal, where ``-1`` (an unknown batch) matches any size.

    ``a ~ b`` when ``len(a) == len(b)`` and ``a_i = b_i`` or ``-1 ∈ {a_i, b_i}`` for every
    ``i``.

    Args:
      a: a shape, e.g. ``(-1, 3)``.
      b: another shape.

    >>> shapes_match((-1, 3), (32, 3)), shapes_match((2, 3), (2, 4)), shapes_match((3,), (3, 1))
    (True, False, False)
    """
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def _child_key(key: jax.Array | None, i: int) -> jax.Array | None:
    return None if key is None else jax.random.fold_in(key, i)


def _has_params(params: Params) -> bool:
    return bool(jax.tree_util.tree_leaves(params))


def _assign_names(layers: Sequence[Layer], who: str) -> list[str]:
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            hint = " (did you forget the parentheses, e.g. Tanh()?)" if callable(layer) else ""
            raise TypeError(f"{who}: child {i} is not a Layer, got {layer!r}{hint}")
    user = [layer.name for layer in layers if layer.name]
    dup = {n for n in user if user.count(n) > 1}
    if dup:
        raise ValueError(f"{who}: layer names must be unique, repeated: {sorted(dup)}")
    taken, counts, names = set(user), {}, []
    for layer in layers:
        if layer.name:
            names.append(layer.name)
            continue
        while True:
            i = counts.get(layer.kind, 0)
            counts[layer.kind] = i + 1
            candidate = f"{layer.kind}_{i}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    return names


def _child_params(params: Params, name: str, who: str) -> Params:
    if not isinstance(params, dict):
        raise TypeError(f"{who}: params must be a dict, got {type(params).__name__}")
    return params.get(name, {})


def _check_param_keys(params: Params, names: Sequence[str], who: str) -> None:
    extra = set(params) - set(names) if isinstance(params, dict) else set()
    if extra:
        raise ValueError(
            f"{who}: params has keys {sorted(extra)} that match no child; children are {names}"
        )


# ------------------------------------------------------------------------- combinators


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
    names = _assign_names(layers, "serial")

    def init(key, input_shape):
        shape, params = input_shape, {}
        for i, (name, layer) in enumerate(zip(names, layers)):
            with layer_scope(name):
                shape, p = layer.init(jax.random.fold_in(key, i), shape)
            if _has_params(p):
                params[name] = p
        return shape, params

    def apply(params, x, *, key=None, train=False):
        _check_param_keys(params, names, "serial")
        for i, (name, layer) in enumerate(zip(names, layers)):
            with layer_scope(name):
                p = _child_params(params, name, "serial")
                x = layer.apply(p, x, key=_child_key(key, i), train=train)
        return x

    desc = "serial(" + ", ".join(layer.description for layer in layers) + ")"
    return Layer(init, apply, kind="serial", description=desc, children=list(zip(names, layers)))


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
    names = _assign_names(layers, "parallel")

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
        shapes, params = [], {}
        for i, (name, layer, s) in enumerate(zip(names, layers, input_shape)):
            with layer_scope(name):
                out, p = layer.init(jax.random.fold_in(key, i), s)
            shapes.append(out)
            if _has_params(p):
                params[name] = p
        return tuple(shapes), params

    def apply(params, xs, *, key=None, train=False):
        _check_tuple(xs, "inputs")
        _check_param_keys(params, names, "parallel")
        out = []
        for i, (name, layer, x) in enumerate(zip(names, layers, xs)):
            with layer_scope(name):
                p = _child_params(params, name, "parallel")
                out.append(layer.apply(p, x, key=_child_key(key, i), train=train))
        return tuple(out)

    desc = "parallel(" + ", ".join(layer.description for layer in layers) + ")"
    return Layer(init, apply, kind="parallel", description=desc, children=list(zip(names, layers)))


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
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"fanout: n must be a positive int, got {n!r}")

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
        out, params = body.init(jax.random.fold_in(key, 0), input_shape)
        skip_shape = input_shape
        if shortcut is not None:
            with layer_scope("shortcut"):
                skip_shape, sp = shortcut.init(jax.random.fold_in(key, 1), input_shape)
            if _has_params(sp):
                params = dict(params) if isinstance(params, dict) else {"body": params}
                params["shortcut"] = sp
        if not shapes_match(out, skip_shape):
            raise ValueError(
                f"residual: x + f(x) needs f to keep the shape, but f maps {tuple(input_shape)} "
                f"to {tuple(out)}; give a projection with residual(..., shortcut=Dense(n))"
            )
        return out, params

    def apply(params, x, *, key=None, train=False):
        body_params = params
        skip = x
        if shortcut is not None:
            body_params = {k: v for k, v in params.items() if k != "shortcut"}
            with layer_scope("shortcut"):
                skip = shortcut.apply(
                    params.get("shortcut", {}), x, key=_child_key(key, 1), train=train
                )
        return skip + body.apply(body_params, x, key=_child_key(key, 0), train=train)

    return Layer(
        init,
        apply,
        kind="residual",
        description=f"residual({body.description})",
        children=[("body", body)],
    )


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
    return layer.with_attrs(name=name)
