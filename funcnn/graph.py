"""The computational graph of a function, with its forward and backward pass made visible.

:func:`trace` reads the graph of any jittable function from its jaxpr: each node is an
input, a constant or one operation, with its forward value and the partial derivative
``∂f/∂node`` of the output with respect to it, the number the backward pass
(backpropagation) carries back to that node. Calls of jitted functions are inlined, so
their operations appear one by one; ``custom_jvp`` / ``custom_vjp`` functions (``relu``,
...) and control flow stay single nodes, differentiated by their own rules.

The partials come from one reverse-mode pass over the graph with a zero "probe" added to
every node's value: ``f(..., v_k + ε_k, ...)`` differentiated with respect to ``ε_k`` at
``ε = 0`` is exactly ``∂f/∂v_k``.

>>> import jax.numpy as jnp
>>> g = trace(lambda w, x: jnp.tanh(w * x), 0.5, 2.0)
>>> [n.op for n in g.nodes]
['input', 'input', 'mul', 'tanh']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

__all__ = ["Node", "Graph", "trace", "SYMBOLS"]

#: How the lecture writes the common operations in its pictures.
SYMBOLS = {
    "add": "+",
    "add_any": "+",
    "sub": "−",
    "mul": "×",
    "div": "÷",
    "neg": "−x",
    "exp": "exp",
    "log": "log",
    "log1p": "log1p",
    "logistic": "σ",
    "tanh": "tanh",
    "max": "max",
    "dot_general": "·",
    "reduce_sum": "Σ",
    "reduce_max": "max",
    "integer_pow": "xⁿ",
    "pow": "xʸ",
    "sqrt": "√",
    "square": "x²",
    "abs": "|x|",
}

_INLINE = {"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint"}


@dataclass
class Node:
    """One node of the graph.

    ``kind`` is ``"input"`` (an argument leaf), ``"const"`` (a literal or captured array)
    or ``"op"`` (one primitive); ``inputs`` are the ids of the nodes it reads. ``value`` is
    its forward value and ``grad`` is ``∂f/∂node`` (``None`` for integer or boolean nodes).
    ``id`` is its position in :attr:`Graph.nodes`, ``name`` a unique label (``x``,
    ``mul_0``), ``op`` the primitive's name (``"input"`` / ``"const"`` otherwise) and
    ``params`` the primitive's parameters.

    >>> node = trace(lambda x: x * x, 3.0).nodes[-1]  # f = x·x at x = 3
    >>> node.op, node.kind, node.inputs, float(node.value), float(node.grad)
    ('mul', 'op', (0, 0), 9.0, 1.0)
    """

    id: int
    name: str
    op: str
    kind: str
    inputs: tuple[int, ...] = ()
    value: Any = None
    grad: Any = None
    params: dict = field(default_factory=dict, repr=False)

    @property
    def symbol(self) -> str:
        """The label drawn in pictures: the input's name, the constant, or the op symbol."""
        if self.kind == "input":
            return self.name
        if self.kind == "const":
            return _short(self.value)
        return SYMBOLS.get(self.op, self.op)

    @property
    def value_label(self) -> str:
        """The value, short: ``0.73`` for a scalar, ``8×1 ‖2.31‖`` (shape and norm) otherwise."""
        return _short(self.value)

    @property
    def grad_label(self) -> str:
        """The partial ``∂f/∂node``, short as :attr:`value_label`; empty when there is none."""
        return "" if self.grad is None else _short(self.grad)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.value))


def _short(v: Any) -> str:
    a = np.asarray(v)
    if a.size == 1:
        x = a.reshape(())
        if a.dtype.kind in "iub":
            return str(x.item())
        return f"{float(x):.2f}"
    return "×".join(map(str, a.shape)) + f" ‖{np.linalg.norm(a.astype(np.float64)):.2f}‖"


def _long(v: Any) -> str:
    if v is None:
        return "—"
    a = np.asarray(v)
    if a.size == 1:
        x = a.reshape(())
        return str(x.item()) if a.dtype.kind in "iub" else f"{float(x):.4f}"
    return f"{a.shape} norm {np.linalg.norm(a.astype(np.float64)):.4f}"


@dataclass
class _Step:
    primitive: Any
    params: dict
    inputs: tuple[int, ...]
    outputs: tuple[int | None, ...]


class Graph:
    """A traced computational graph: nodes in topological order, the last computing ``f``.

    * ``graph.nodes``: every :class:`Node`; ``graph[name]`` finds one by name.
    * ``graph.value``: ``f(*args)``; ``graph.output``: its node.
    * ``graph.arg_grads``: the partials of the inputs, shaped like the args (they equal
      ``jax.grad(f, argnums=range(len(args)))(*args)``).
    * ``graph.table()``, ``graph.to_dot()``, ``graph.draw(path)``.

    >>> import jax.numpy as jnp
    >>> g = trace(lambda w, x: jnp.tanh(w * x), 0.5, 2.0)
    >>> len(g), g.output.op, round(float(g.value), 4)
    (4, 'tanh', 0.7616)
    >>> [round(float(d), 4) for d in g.arg_grads]  # x(1 − tanh²(wx)), w(1 − tanh²(wx))
    [0.8399, 0.21]
    """

    def __init__(self, nodes: list[Node], output: int, arg_treedef, input_ids: list[int]):
        self.nodes = nodes
        self.output_id = output
        self._arg_treedef = arg_treedef
        self._input_ids = input_ids

    @property
    def output(self) -> Node:
        return self.nodes[self.output_id]

    @property
    def value(self) -> Any:
        return self.output.value

    @property
    def inputs(self) -> list[Node]:
        return [self.nodes[i] for i in self._input_ids]

    @property
    def arg_grads(self) -> tuple:
        """``∂f/∂arg`` for every argument, as a tuple of pytrees shaped like the args."""
        grads = [self.nodes[i].grad for i in self._input_ids]
        return tuple(jax.tree_util.tree_unflatten(self._arg_treedef, grads))

    def __getitem__(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"graph has no node named {name!r}; names: {[n.name for n in self.nodes]}")

    def __len__(self) -> int:
        return len(self.nodes)

    def table(self) -> str:
        """The graph as text: one row per node, forward value and backward partial.

        >>> import jax.numpy as jnp
        >>> print(trace(lambda x: jnp.exp(x), 0.0).table().splitlines()[-1])
        exp_0  exp    x       1.0000    1.0000
        """
        rows = [("node", "op", "inputs", "value", "∂f/∂node")]
        for n in self.nodes:
            ins = ", ".join(self.nodes[i].name for i in n.inputs)
            rows.append((n.name, n.op, ins, _long(n.value), _long(n.grad)))
        widths = [max(len(r[k]) for r in rows) for k in range(5)]
        lines = []
        for r in rows:
            left = "  ".join(c.ljust(w) for c, w in zip(r[:3], widths))
            right = "  ".join(c.rjust(w) for c, w in zip(r[3:], widths[3:]))
            lines.append(f"{left}  {right}".rstrip())
        return "\n".join(lines)

    __str__ = table

    def __repr__(self) -> str:
        return f"<Graph: {len(self.nodes)} nodes, f = {_long(self.value)}>"

    def to_dot(self) -> str:
        """Graphviz source: values in green, partials in red, edges from inputs to ops.

        Render with ``dot -Tpng`` if Graphviz is installed; :meth:`draw` needs no binary.
        """
        lines = [
            "digraph computational_graph {",
            "  rankdir=LR;",
            '  node [shape=box, style=rounded, fontname="Helvetica"];',
        ]
        for n in self.nodes:
            label = _html(n.symbol)
            label += f'<br/><font color="darkgreen">{_html(_short(n.value))}</font>'
            if n.grad is not None:
                label += f'<br/><font color="red">{_html(_short(n.grad))}</font>'
            shape = ", shape=ellipse" if n.kind != "op" else ""
            lines.append(f"  n{n.id} [label=<{label}>{shape}];")
        for n in self.nodes:
            for i in n.inputs:
                lines.append(f"  n{i} -> n{n.id};")
        lines.append("}")
        return "\n".join(lines)

    def draw(self, path: str | Path | None = None, *, title: str = "", ax=None):
        """Draw the graph with matplotlib: values in green, partials in red.

        ``path`` ending in ``.svg`` saves an SVG, otherwise a PNG; returns the path (or the
        axes when ``ax`` is given). Needs matplotlib, imported only here.
        """
        from . import plot

        return plot.computational_graph(self, path, title=title, ax=ax)


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _arg_names(f: Callable, n: int) -> list[str]:
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        p = params[i] if i < len(params) else None
        ok = p is not None and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        names.append(p.name if ok and p is not None else f"arg{i}")
    return names


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.floating)


def _bind(primitive, params: dict, values: list) -> list:
    bind_params = primitive.get_bind_params(params)
    if isinstance(bind_params, tuple):  # older jax: (subfuns, params)
        subfuns, bind_params = bind_params
        out = primitive.bind(*subfuns, *values, **bind_params)
    else:
        out = primitive.bind(*values, **bind_params)
    return list(out) if primitive.multiple_results else [out]


class _Builder:
    def __init__(self):
        self.nodes: list[Node] = []
        self.steps: list[_Step] = []
        self.avals: list[Any] = []
        self.counts: dict[str, int] = {}

    def add(self, name, op, kind, aval, inputs=(), value=None) -> int:
        node = Node(id=len(self.nodes), name=name, op=op, kind=kind, inputs=inputs, value=value)
        self.nodes.append(node)
        self.avals.append(aval)
        return node.id

    def const(self, value, aval) -> int:
        k = self.counts.get("const", 0)
        self.counts["const"] = k + 1
        return self.add(f"const_{k}", "const", "const", aval, value=value)

    def read(self, atom, env) -> int:
        if isinstance(atom, jcore.Literal):
            return self.const(atom.val, atom.aval)
        return env[atom]

    def inline(self, jaxpr, consts, in_ids, env=None) -> list[int]:
        env = {} if env is None else env
        for var, value in zip(jaxpr.constvars, consts):
            env[var] = self.const(value, var.aval)
        for var, i in zip(jaxpr.invars, in_ids):
            env[var] = i
        for eqn in jaxpr.eqns:
            ins = [self.read(a, env) for a in eqn.invars]
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                outs = self.inline(sub[0], sub[1], ins)
                for var, i in zip(eqn.outvars, outs):
                    if not isinstance(var, jcore.DropVar):
                        env[var] = i
                continue
            op = _op_name(eqn)
            out_ids: list[int | None] = []
            for var in eqn.outvars:
                k = self.counts.get(op, 0)
                self.counts[op] = k + 1
                i = self.add(f"{op}_{k}", op, "op", var.aval, tuple(ins))
                self.nodes[i].params = dict(eqn.params)
                out_ids.append(i)
                if not isinstance(var, jcore.DropVar):
                    env[var] = i
            self.steps.append(_Step(eqn.primitive, eqn.params, tuple(ins), tuple(out_ids)))
        return [self.read(a, env) for a in jaxpr.outvars]


def _op_name(eqn) -> str:
    """The primitive's name; for ``custom_jvp`` / ``custom_vjp`` calls, the function's."""
    name = eqn.primitive.name
    if name.startswith("custom_"):
        for key in ("call_jaxpr", "fun_jaxpr"):
            sub = eqn.params.get(key)
            info = getattr(getattr(sub, "jaxpr", sub), "debug_info", None)
            func = getattr(info, "func_name", None)
            if isinstance(func, str) and func.isidentifier():
                return func
    return name


def _sub_jaxpr(eqn):
    if eqn.primitive.name not in _INLINE:
        return None
    for key in ("jaxpr", "call_jaxpr"):
        sub = eqn.params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr):
            return sub.jaxpr, sub.consts
        if isinstance(sub, jcore.Jaxpr):
            return sub, ()
    return None


def trace(f: Callable[..., Any], *args: Any) -> Graph:
    """The computational graph of ``f(*args)``: every node's value and ``∂f/∂node``.

    ``f`` must be jittable and return one array; when that array is not a scalar the
    partials are those of the sum of its elements (the backward pass seeded with ones).
    Inputs are named after ``f``'s parameters (``w0``, ``x0``, ...), with the pytree path
    for structured arguments (``params['w']``).

    Args:
      f: the function.
      *args: its arguments (arrays, numbers or pytrees of them).

    Returns:
      a :class:`Graph`.

    The lecture's classic example, ``f = σ(w0·x0 + w1·x1 + b)``:

    >>> import jax.numpy as jnp
    >>> f = lambda w0, x0, w1, x1, b: 1 / (1 + jnp.exp(-(w0 * x0 + w1 * x1 + b)))
    >>> g = trace(f, 2.0, -1.0, -3.0, -2.0, -3.0)
    >>> round(float(g.value), 2), round(float(g["w0"].grad), 2), round(float(g["x0"].grad), 2)
    (0.73, -0.2, 0.39)
    """
    closed = jax.make_jaxpr(f)(*args)
    leaves_paths, treedef = jax.tree_util.tree_flatten_with_path(args)
    names = _arg_names(f, len(args))
    b = _Builder()
    input_ids = []
    for (path, leaf), var in zip(leaves_paths, closed.jaxpr.invars):
        name = names[path[0].idx] + jax.tree_util.keystr(tuple(path[1:]))
        input_ids.append(b.add(name, "input", "input", var.aval, value=jnp.asarray(leaf)))
    outs = b.inline(closed.jaxpr, closed.consts, input_ids)
    if len(outs) != 1:
        raise ValueError(f"trace: f must return a single array, it returned {len(outs)} outputs")
    out_id = outs[0]

    base = {n.id: n.value for n in b.nodes if n.kind != "op"}
    probed = [i for i, aval in enumerate(b.avals) if _is_float(aval)]

    def forward(probes: dict[int, jax.Array]):
        values = {}
        for i, v in base.items():
            values[i] = v + probes[i] if i in probes else v
        for step in b.steps:
            outs = _bind(step.primitive, step.params, [values[i] for i in step.inputs])
            for j, o in zip(step.outputs, outs):
                if j is not None:  # an output nobody reads has no node
                    values[j] = o + probes[j] if j in probes else o
        y = values[out_id]
        return jnp.sum(y), values

    zeros = {i: jnp.zeros(b.avals[i].shape, b.avals[i].dtype) for i in probed}
    if out_id in zeros:
        (_, values), grads = jax.value_and_grad(forward, has_aux=True)(zeros)
    else:  # the output does not depend on anything differentiable
        _, values = forward(zeros)
        grads = {}
    for n in b.nodes:
        n.value = values[n.id]
        n.grad = grads.get(n.id)
    return Graph(b.nodes, out_id, treedef, input_ids)
