"""The layer record, its state, and the one place where a combinator runs its children.

:class:`Layer` is the ``(init, apply)`` pair with its name; :class:`Model` adds a head.
``init_child`` / ``apply_child`` are how every combinator initialises and applies a child:
its key, its params, its state and the path in its error messages are decided here alone.

State (BatchNorm's running statistics) is a second pytree beside params, named like params,
never differentiated and never seen by the optimizer:

* ``layer.init_with_state(key, shape) -> (out_shape, params, state)``;
* ``layer.apply_with_state(params, state, x, *, key=None, train=False) -> (y, state)``.

A stateless layer's state is ``{}`` and passes through, so its plain ``(init, apply)`` stay
as they are. A stateful layer (``layer.stateful``) keeps the pair it was built from in its
``with_state`` field; its plain ``init`` drops the state and its plain ``apply`` is an error
that names the layer and says to call ``apply_with_state``. Evaluation (``train=False``)
never changes the state.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax

from .. import checks

__all__ = ["Layer", "Model", "layer_scope"]

Shape = Any  # a tuple of ints (batch may be -1), or a tuple of such tuples
Params = Any  # a nested dict of arrays
State = Any  # a nested dict of arrays, named like params; {} for stateless layers
InitFn = Callable[[jax.Array, Shape], tuple[Shape, Params]]
ApplyFn = Callable[..., Any]
StatePair = tuple[Callable[..., tuple[Shape, Params, State]], Callable[..., tuple[Any, State]]]


@dataclasses.dataclass(frozen=True, repr=False)
class Layer:
    """An ``(init, apply)`` pair with a name: unpackable as ``init, apply = layer``.

    * ``init(key, input_shape) -> (output_shape, params)``: draws the weights for inputs
      of shape ``input_shape`` (batch possibly ``-1``).
    * ``apply(params, x, *, key=None, train=False) -> y``: the pure forward pass.

    Its fields, all explicit:

    * ``kind``: the stem of its automatic name inside a combinator (``"dense"`` gives
      ``dense_0``, ``dense_1``, ...);
    * ``name``: the user's name, given with :func:`named` (``None`` if none);
    * ``description``: the short text used in error messages and summaries (default
      ``kind``);
    * ``children``: for combinators, the ``(name, layer)`` pairs they apply;
    * ``with_state``: for a stateful layer, its ``(init_with_state, apply_with_state)``
      (``None`` for a stateless one; see :func:`stateful_layer`).

    Layers are immutable and compare by all of their fields: a layer named ``"hidden"`` is
    not equal to the same layer unnamed. :meth:`replace` returns a copy with some fields
    changed. Models add their head, loss and metric in :class:`Model`.

    A layer that doubles its input, ``y = 2x``:

    >>> import jax
    >>> from funcnn.core import named
    >>> double = Layer(lambda key, s: (s, {}), lambda p, x, **kw: 2 * x, kind="double")
    >>> init, apply = double
    >>> init(jax.random.key(0), (-1, 3)), apply({}, 1.5)
    (((-1, 3), {}), 3.0)
    >>> double, double.kind, double.name, named("twice", double) == double
    (<Layer double>, 'double', None, False)
    """

    init: InitFn
    apply: ApplyFn
    kind: str = "layer"
    name: str | None = None
    description: str = ""
    children: tuple[tuple[str, Layer], ...] = ()
    with_state: StatePair | None = None

    def __post_init__(self) -> None:
        if not callable(self.init) or not callable(self.apply):
            raise TypeError(
                f"Layer: init and apply must be callable, got {self.init!r} and {self.apply!r}"
            )
        object.__setattr__(self, "description", self.description or self.kind)
        object.__setattr__(self, "children", tuple((n, c) for n, c in self.children))

    def __iter__(self) -> Iterator[Callable]:
        return iter((self.init, self.apply))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Callable:
        return (self.init, self.apply)[i]

    def __repr__(self) -> str:
        label = f"{self.name}=" if self.name else ""
        return f"<Layer {label}{self.description}>"

    @property
    def stateful(self) -> bool:
        """Whether the layer (or one of its children) keeps state beside its params."""
        return self.with_state is not None

    def init_with_state(self, key: jax.Array, input_shape: Shape) -> tuple[Shape, Params, State]:
        """``(out_shape, params, state)``; the state is ``{}`` for a stateless layer."""
        if self.with_state is None:
            return (*self.init(key, input_shape), {})
        return self.with_state[0](key, input_shape)

    def apply_with_state(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        """``(y, state)``: the forward pass and the updated state (unchanged when
        ``train=False``); a stateless layer passes its ``{}`` state through."""
        if self.with_state is None:
            if state not in ({}, None):
                raise ValueError(
                    f"{self.description}: this layer has no state, got a state with keys "
                    f"{sorted(state) if isinstance(state, dict) else type(state).__name__}"
                )
            return self.apply(params, x, key=key, train=train), {}
        return self.with_state[1](params, state, x, key=key, train=train)

    def replace(self, **fields: Any) -> Layer:
        """A copy of this layer with some fields replaced, e.g. ``layer.replace(name="h")``."""
        return dataclasses.replace(self, **fields)

    with_attrs = replace  # the earlier name of replace


@dataclasses.dataclass(frozen=True, repr=False, kw_only=True)
class Model(Layer):
    """A network of the lecture with its head: a :class:`Layer` whose ``apply`` returns the
    pre-activation outputs ``z`` (logits for classification), plus what the head adds.

    * ``head``: ``"linear"``, ``"sigmoid"`` or ``"softmax"``;
    * ``loss``: the matching loss of ``(z, targets)``, the default of ``fit``;
    * ``metric``: the default metric of ``(z, targets)`` (``None`` for regression);
    * ``activation``: the head's ``a`` in ``y = a(z)``; :meth:`predict` applies it.

    >>> import jax, jax.numpy as jnp
    >>> from funcnn import layers, losses
    >>> net = layers.Dense(1)
    >>> model = Model(net.init, net.apply, kind="dense", head="sigmoid",
    ...               loss=losses.binary_cross_entropy, metric=losses.accuracy,
    ...               activation=jax.nn.sigmoid)
    >>> _, params = model.init(jax.random.key(0), (-1, 2))
    >>> float(model.predict(params, jnp.zeros((1, 2)))[0, 0])  # σ(0)
    0.5
    """

    head: str
    loss: Callable
    metric: Callable | None = None
    activation: Callable = lambda z: z

    def predict(self, params: Params, x: Any, state: State = None) -> Any:
        """The lecture's ``y = a(z)``: the head's activation of ``apply(params, x)``, in
        evaluation mode; a stateful model needs its ``state``."""
        if state is None:
            return self.activation(self.apply(params, x))
        return self.activation(self.apply_with_state(params, state, x)[0])


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


def child_key(key: jax.Array | None, i: int) -> jax.Array | None:
    return None if key is None else jax.random.fold_in(key, i)


def has_params(params: Params) -> bool:
    return bool(jax.tree_util.tree_leaves(params))


def assign_names(layers: Sequence[Layer], who: str) -> list[str]:
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            hint = " (did you forget the parentheses, e.g. Tanh()?)" if callable(layer) else ""
            raise TypeError(f"{who}: child {i} is not a Layer, got {layer!r}{hint}")
    user = [layer.name for layer in layers if layer.name]
    dup = {n for n in user if user.count(n) > 1}
    if dup:
        raise ValueError(f"{who}: layer names must be unique, repeated: {sorted(dup)}")
    taken, names = set(user), []
    counts: dict[str, int] = {}
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


def child_params(params: Params, name: str, names: Sequence[str], who: str) -> Params:
    """``params[name]`` (``{}`` for a child without parameters), after checking that
    ``params`` is a dict whose keys all name children."""
    return _child_tree(params, name, names, who, "params")


def child_state(state: State, name: str, names: Sequence[str], who: str) -> State:
    """``state[name]`` (``{}`` for a stateless child), checked as :func:`child_params`."""
    return _child_tree({} if state is None else state, name, names, who, "state")


def _child_tree(tree: Any, name: str, names: Sequence[str], who: str, what: str) -> Any:
    if not isinstance(tree, dict):
        raise TypeError(f"{who}: {what} must be a dict, got {type(tree).__name__}")
    extra = set(tree) - set(names)
    if extra:
        raise ValueError(
            f"{who}: {what} has keys {sorted(extra)} that match no child; children are "
            f"{list(names)}"
        )
    return tree.get(name, {})


def init_child(
    name: str | None,
    layer: Layer,
    key: jax.Array,
    index: int,
    shape: Shape,
    params: dict,
    state: dict,
) -> Shape:
    """Initialise one child with ``fold_in(key, index)``; store its params and state under
    ``name`` when it has any. Errors carry the child's name in their path."""
    key = checks.prng_key(key, "init: key")  # an int seed, as everywhere
    with layer_scope(name) if name else contextlib.nullcontext():
        out, p, st = layer.init_with_state(jax.random.fold_in(key, index), shape)
    if has_params(p):
        params[name] = p
    if has_params(st):
        state[name] = st
    return out


def apply_child(
    name: str | None,
    layer: Layer,
    params: Params,
    state: State,
    x: Any,
    *,
    key: jax.Array | None,
    index: int,
    train: bool,
) -> tuple[Any, State]:
    """The one place where a combinator runs a child:
    ``layer.apply_with_state(params, state, x)`` with the key ``fold_in(key, index)``,
    errors prefixed with the child's ``name`` (none if ``None``). Returns ``(y, state)``."""
    with layer_scope(name) if name else contextlib.nullcontext():
        return layer.apply_with_state(params, state, x, key=child_key(key, index), train=train)


def stateful_path(layer: Layer, path: str = "") -> str | None:
    """The path of the first stateful layer without children inside ``layer``:
    ``"block_0/bn_0: BatchNorm()"``, or ``None`` when nothing keeps state."""
    if not layer.stateful:
        return None
    for name, child in layer.children:
        found = stateful_path(child, f"{path}{name}/")
        if found is not None:
            return found
    return f"{path.rstrip('/') or layer.kind}: {layer.description}"


def stateful_layer(
    init_with_state: Callable[..., tuple[Shape, Params, State]],
    apply_with_state: Callable[..., tuple[Any, State]],
    *,
    kind: str,
    description: str = "",
    children: tuple[tuple[str, Layer], ...] = (),
) -> Layer:
    """A layer that keeps state: its ``with_state`` pair is the one given; its plain
    ``init`` drops the state and its plain ``apply`` raises an error naming the stateful
    layer and what to call instead."""

    def init(key, input_shape):
        out, params, _ = init_with_state(key, input_shape)
        return out, params

    layer: Layer

    def apply(params, x, *, key=None, train=False):
        raise ValueError(
            f"{stateful_path(layer)} keeps state (running statistics), so apply(params, x) "
            "cannot run it: call apply_with_state(params, state, x, train=...), with the "
            "state from init_with_state, and keep the state it returns"
        )

    layer = Layer(
        init,
        apply,
        kind=kind,
        description=description,
        children=children,
        with_state=(init_with_state, apply_with_state),
    )
    return layer


def combinator(
    init_with_state: Callable[..., tuple[Shape, Params, State]],
    apply_with_state: Callable[..., tuple[Any, State]],
    *,
    kind: str,
    description: str,
    children: tuple[tuple[str, Layer], ...],
) -> Layer:
    """A layer made of ``children``, written once with state threaded through them: it is
    stateful when a child is; otherwise its plain pair is ``init_with_state`` without the
    (empty) state and ``apply_with_state(params, {}, x)`` without it."""
    if any(child.stateful for _, child in children):
        return stateful_layer(
            init_with_state,
            apply_with_state,
            kind=kind,
            description=description,
            children=children,
        )

    def init(key, input_shape):
        out, params, _ = init_with_state(key, input_shape)
        return out, params

    def apply(params, x, *, key=None, train=False):
        return apply_with_state(params, {}, x, key=key, train=train)[0]

    return Layer(init, apply, kind=kind, description=description, children=children)
