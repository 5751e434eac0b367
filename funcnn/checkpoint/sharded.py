"""Sharded checkpoints for many devices and processes, written by Orbax.

:class:`ShardedStore` keeps a folder of checkpoints of a pytree of ``jax.Array``\\ s that may
be split over the devices of a mesh, and over the processes of a ``jax.distributed`` run: each
process writes the shards it holds, and a restore reads onto the shardings of a template. It
needs the optional extra ``orbax-checkpoint`` (``pip install "funcnn[scale]"``), imported only
when a store is opened. The folder holds::

    step_<g>/         a step checkpoint: Orbax's items "arrays" (the pytree) and "meta" (JSON)
    best/step_<i>/    the one checkpoint saved under the name "best"

* **Collective.** Every process calls :meth:`~ShardedStore.save` and
  :meth:`~ShardedStore.restore` with the same arguments; the process with
  ``jax.process_index() == 0`` writes the JSON and the leaves that every process holds whole,
  and makes the deletions (Orbax's conventions).
* **Atomic.** Orbax writes a step to ``<name>.orbax-checkpoint-tmp-<time>`` and renames it
  when every process has finished: a folder of that form is never a step
  (:meth:`~ShardedStore.steps` skips it), and a store removes the ones a killed run left
  before its first save. The newest ``keep`` steps stay; a new "best" replaces the old one
  only once it is written whole.
* **Checked.** The meta records each leaf's shape and dtype and the layout it was written
  with (:func:`layout`: the mesh's axis names and sizes, each leaf's ``PartitionSpec``). A
  restore onto another template shape is a ``ValueError``; onto another layout a
  :class:`LayoutError` unless ``reshard=True`` (then Orbax reshards as it reads). A step whose
  files are damaged or missing raises :class:`~funcnn.checkpoint.CheckpointError`.
* **Any leaf.** Global arrays go to Orbax as they are; a leaf held whole by each process (an
  array on one device, a numpy array) is written once, by process 0; typed PRNG keys travel as
  their ``key_data`` and come back as keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import NamedSharding

from .. import checks
from .archive import CheckpointError
from .saving import flatten, is_key

__all__ = ["ShardedStore", "LayoutError", "layout", "describe_layout", "check_layout", "orbax"]

ITEMS = ("arrays", "meta")
BEST = "best"
FORMAT = 1


def orbax() -> Any:
    """The ``orbax.checkpoint`` module; an ImportError that says how to install it if missing.

    >>> orbax().__name__
    'orbax.checkpoint'
    """
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:
        raise ImportError(
            f"sharded checkpoints need orbax-checkpoint ({err}); "
            'install it with: pip install "funcnn[scale]"'
        ) from err
    return ocp


class LayoutError(ValueError):
    """A checkpoint written over another mesh layout than the template's: the message names
    both layouts (:func:`describe_layout`) and says to pass ``reshard=True``."""


def _spec(sharding: Any) -> list | None:
    """A ``NamedSharding``'s spec as JSON, trailing ``None``\\ s dropped (``P(None, 'model')``
    → ``[None, "model"]``, ``P(None)`` → ``[]``); ``None`` for any other sharding."""
    if not isinstance(sharding, NamedSharding):
        return None
    entries = [e if e is None or isinstance(e, str) else list(e) for e in sharding.spec]
    while entries and entries[-1] is None:
        entries.pop()
    return entries


def layout(tree: Any) -> dict[str, Any]:
    """``{"mesh": {axis: size}, "specs": {path: spec}}``: where ``tree``'s arrays lie.

    ``mesh`` is the first mesh a leaf is placed on (``{}`` without one); each leaf's spec is
    its ``PartitionSpec`` as a list, trailing ``None``\\ s dropped, or ``None`` for a leaf not
    placed on a mesh.

    >>> from funcnn import distributed
    >>> mesh = distributed.make_mesh()
    >>> layout({"w": distributed.replicate(jax.numpy.ones(2), mesh), "n": np.ones(1)})
    {'mesh': {'data': 1, 'model': 1}, 'specs': {"['n']": None, "['w']": []}}
    """
    mesh: dict[str, int] = {}
    specs = {}
    for name, leaf in flatten(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and not mesh:
            mesh = {str(k): int(v) for k, v in sharding.mesh.shape.items()}
        specs[name] = _spec(sharding)
    return {"mesh": mesh, "specs": specs}


def _spec_text(spec: list | None) -> str:
    if spec is None:
        return "unplaced"
    return "P(" + ", ".join(repr(e if not isinstance(e, list) else tuple(e)) for e in spec) + ")"


def describe_layout(layout: Mapping[str, Any], names: list[str] | None = None) -> str:
    """A layout in words: the mesh, then the spec of each leaf in ``names`` (default: each
    leaf placed on the mesh but not whole on every device).

    >>> describe_layout({"mesh": {"data": 2, "model": 2}, "specs": {"['w']": [None, "model"]}})
    "mesh {'data': 2, 'model': 2} with ['w'] as P(None, 'model')"
    """
    specs = layout.get("specs", {})
    if names is None:
        names = [name for name, spec in specs.items() if spec]
    mesh = layout.get("mesh") or "none"
    if not names:
        return f"mesh {mesh}, every leaf whole"
    leaves = ", ".join(f"{name} as {_spec_text(specs.get(name))}" for name in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"mesh {mesh} with {leaves}{more}"


def _differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str] | None:
    """``None`` when two layouts agree, else the leaves whose specs differ (maybe none, when
    only the mesh does)."""
    a, b = saved.get("specs", {}), now.get("specs", {})
    names = [name for name in b if a.get(name) != b[name]]
    if names or saved.get("mesh") != now.get("mesh"):
        return names
    return None


def _is_global(leaf: Any) -> bool:
    """A leaf Orbax writes shard by shard: on a mesh, and in a multi-process run spanning
    more than this process's devices."""
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return False
    return jax.process_count() == 1 or not sharding.is_fully_addressable


def _physical(tree: Any) -> tuple[Any, dict[str, str]]:
    """``tree`` as Orbax writes it: typed keys as their ``key_data``, leaves that are not
    global as numpy arrays; and ``{path: key implementation}``."""
    keys: dict[str, str] = {}

    def one(path, leaf):
        if is_key(leaf):
            keys[jax.tree_util.keystr(path)] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array) and _is_global(leaf):
            return leaf
        return np.asarray(leaf)

    return jax.tree_util.tree_map_with_path(one, tree), keys


def _shape_of(leaf: Any) -> Any:
    """A template leaf as a ``jax.ShapeDtypeStruct`` of its stored form, sharding kept."""
    sharding = getattr(leaf, "sharding", None)
    if is_key(leaf):
        struct = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
        return jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=sharding)
    dtype = np.asarray(leaf).dtype if not hasattr(leaf, "dtype") else leaf.dtype
    return jax.ShapeDtypeStruct(np.shape(leaf), dtype, sharding=sharding)


def _target(struct: jax.ShapeDtypeStruct) -> Any:
    """What Orbax restores a leaf onto: the struct itself for a global leaf (read shard by
    shard onto its sharding), a numpy array of its shape for one held whole."""
    if _is_global(struct):
        return struct
    return np.zeros(struct.shape, struct.dtype)


def _leaves(tree: Any) -> dict[str, list]:
    return {name: [list(np.shape(a)), np.dtype(a.dtype).name] for name, a in flatten(tree)}


def check_layout(saved: Mapping[str, Any], now: Mapping[str, Any], where: str) -> None:
    """Raise a :class:`LayoutError` naming both layouts unless they agree.

    >>> a = {"mesh": {"data": 2, "model": 2}, "specs": {"['w']": [None, "model"]}}
    >>> check_layout(a, a, "restore")
    >>> try:
    ...     check_layout(a, {"mesh": {"data": 4, "model": 1}, "specs": a["specs"]}, "restore")
    ... except LayoutError as err:
    ...     print(err)  # doctest: +NORMALIZE_WHITESPACE
    restore: written over mesh {'data': 2, 'model': 2} with ['w'] as P(None, 'model'), but
    this layout is mesh {'data': 4, 'model': 1} with ['w'] as P(None, 'model'); pass
    reshard=True to restore it onto this layout (each array resharded as it loads)
    """
    names = _differences(saved, now)
    if names is None:
        return
    shown = names or None
    raise LayoutError(
        f"{where}: written over {describe_layout(saved, shown)}, but this layout is "
        f"{describe_layout(now, shown)}; pass reshard=True to restore it onto this layout "
        "(each array resharded as it loads)"
    )


def _check_leaves(saved: Mapping[str, list], now: Mapping[str, list], where: str) -> None:
    """The template has the checkpoint's leaves, each of the saved shape and dtype."""
    for name, (shape, dtype) in now.items():
        if name not in saved:
            raise ValueError(f"{where}: the checkpoint has no leaf {name} that like expects")
        if saved[name] != [shape, dtype]:
            was = f"{saved[name][1]}{tuple(saved[name][0])}"
            raise ValueError(
                f"{where}: {name} is {was} there, but like expects {dtype}{tuple(shape)}"
            )
    extra = sorted(set(saved) - set(now))
    if extra:
        raise ValueError(f"{where}: the checkpoint holds {extra[0]}, which like does not have")


def _rebuild(restored: Any, like: Any, keys: Mapping[str, str]) -> Any:
    """Orbax's leaves back in ``like``'s structure and kinds: numpy leaves put on the
    template's mesh (or, off a mesh, on the default device), key data wrapped back into keys."""
    values = dict(flatten(restored))

    def one(path, leaf):
        name = jax.tree_util.keystr(path)
        value = values[name]
        sharding = getattr(leaf, "sharding", None)
        if isinstance(value, np.ndarray) and not isinstance(leaf, np.ndarray | np.generic):
            # on the template's mesh; else on the default device, uncommitted like a new array
            if isinstance(sharding, NamedSharding):
                value = jax.device_put(value, sharding)
            else:
                value = jax.numpy.asarray(value)
        if name in keys:
            value = jax.random.wrap_key_data(value, impl=keys[name])
        return value

    return jax.tree_util.tree_map_with_path(one, like)


class ShardedStore:
    """A folder of sharded checkpoints: steps ``g`` (the newest ``keep`` of them) and one
    under the name ``"best"``, each a pytree of arrays with a JSON ``meta`` (see the module).

    Every process of a run opens the store and calls its methods together. ``who`` names the
    store in error messages. The temporary folders of a save cut short are removed before
    the first save; :meth:`close` ends Orbax's background work.

    >>> import tempfile, jax.numpy as jnp
    >>> store = ShardedStore(tempfile.mkdtemp(), keep=2)
    >>> for g in (1, 2, 3):
    ...     store.save(g, {"w": jnp.full(2, g)}, meta={"epoch": g})
    >>> store.save("best", {"w": jnp.zeros(2)})
    >>> store.steps(), store.load_meta(3)
    ([2, 3], {'epoch': 3})
    >>> store.restore(3, like={"w": jnp.zeros(2, jnp.int32)})["w"]
    Array([3, 3], dtype=int32)
    >>> store.close()
    """

    def __init__(self, folder: str | os.PathLike, keep: int = 3, *, who: str = "ShardedStore"):
        # Orbax takes absolute paths only
        self.folder = checks.path(folder, f"{who}: folder").absolute()
        self.keep = checks.positive_int(keep, f"{who}: keep")
        self.who = who
        self._ocp = orbax()
        self._managers = {"steps": self._manager(self.folder)}

    def _manager(self, folder: Path) -> Any:
        options = self._ocp.CheckpointManagerOptions(
            step_prefix="step",
            step_format_fixed_length=10,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        return self._ocp.CheckpointManager(folder, item_names=ITEMS, options=options)

    def _best(self) -> Any:
        if BEST not in self._managers:
            self._managers[BEST] = self._manager(self.folder / BEST)
        return self._managers[BEST]

    def steps(self) -> list[int]:
        """The step checkpoints there, finalized ones only, oldest first."""
        return sorted(int(g) for g in self._managers["steps"].all_steps())

    def _find(self, step: int | Literal["best"]) -> tuple[Any, int, str]:
        """The manager and Orbax step of ``step``, and its name for messages."""
        if step == BEST:
            manager = self._best()
            number = manager.latest_step()
        else:
            manager, number = self._managers["steps"], int(step)
            number = number if number in self.steps() else None
        name = "'best'" if step == BEST else f"step {step}"
        where = f"{self.who} {str(self.folder)!r}: {name}"
        if number is None:
            raise FileNotFoundError(f"{where}: there is no such checkpoint")
        return manager, number, where

    def save(
        self, step: int | Literal["best"], tree: Any, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Write ``tree`` and ``meta`` as step ``step`` (an int ``>= 0``) or as ``"best"``,
        replacing a checkpoint of that name; then drop the steps past the newest ``keep``."""
        document = {"format": FORMAT, "meta": _json(meta, self.who), "layout": layout(tree)}
        physical, document["keys"] = _physical(tree)
        document["leaves"] = _leaves(physical)
        if step == BEST:
            manager, keep = self._best(), 1
            number = (manager.latest_step() or 0) + 1
        else:
            manager, keep = self._managers["steps"], self.keep
            number = checks.positive_int(step, f"{self.who}: step", minimum=0)
            if number in manager.all_steps():
                manager.delete(number)  # written again: a resumed run redoing this step
        args = self._ocp.args.Composite(
            arrays=self._ocp.args.StandardSave(physical), meta=self._ocp.args.JsonSave(document)
        )
        manager.save(number, args=args, force=True)
        manager.wait_until_finished()
        for old in sorted(manager.all_steps())[:-keep]:
            manager.delete(old)

    def _document(self, manager: Any, number: int, where: str) -> dict[str, Any]:
        try:
            args = self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())
            document = manager.restore(number, args=args)["meta"]
        except Exception as err:  # whatever a damaged or partial checkpoint provokes
            raise CheckpointError(f"{where}: unreadable ({_brief(err)})") from None
        fields = {"meta": dict, "layout": dict, "keys": dict, "leaves": dict}
        if not isinstance(document, dict) or any(
            not isinstance(document.get(k), kind) for k, kind in fields.items()
        ):
            raise CheckpointError(
                f"{where}: not a checkpoint of ShardedStore (its meta is garbled)"
            )
        return document

    def load_meta(self, step: int | Literal["best"]) -> dict[str, Any]:
        """The ``meta`` saved with ``step``; a :class:`CheckpointError` if it is damaged."""
        manager, number, where = self._find(step)
        return self._document(manager, number, where)["meta"]

    def saved_layout(self, step: int | Literal["best"]) -> dict[str, Any]:
        """The :func:`layout` the arrays of ``step`` had when saved."""
        manager, number, where = self._find(step)
        return self._document(manager, number, where)["layout"]

    def restore(self, step: int | Literal["best"], like: Any, *, reshard: bool = False) -> Any:
        """The pytree saved as ``step``, read onto ``like``'s structure and shardings.

        ``like``'s leaves are arrays or ``jax.ShapeDtypeStruct``\\ s with a ``sharding``
        (``jax.eval_shape`` output with shardings added); each must have the saved shape and
        dtype (else a ``ValueError``). A checkpoint saved with another :func:`layout` is a
        :class:`LayoutError`, unless ``reshard``: then each array is read onto ``like``'s
        sharding. Damaged or missing files raise :class:`CheckpointError`.
        """
        manager, number, where = self._find(step)
        document = self._document(manager, number, where)
        structs = jax.tree_util.tree_map(_shape_of, like)
        _check_leaves(document["leaves"], _leaves(structs), where)
        if not reshard:
            check_layout(document["layout"], layout(like), where)
        targets = jax.tree_util.tree_map(_target, structs)
        try:
            args = self._ocp.args.Composite(arrays=self._ocp.args.StandardRestore(targets))
            restored = manager.restore(number, args=args)["arrays"]
        except Exception as err:  # whatever damaged or missing array files provoke
            raise CheckpointError(f"{where}: unreadable ({_brief(err)})") from None
        return _rebuild(restored, like, document["keys"])

    def close(self) -> None:
        """Wait for Orbax's background work and release it; a second call does nothing."""
        for manager in self._managers.values():
            manager.close()
        self._managers = {}


def _json(meta: Mapping[str, Any] | None, who: str) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"{who}: meta must be a mapping, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(dict(meta)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{who}: meta must be JSON-serializable: {err}") from None


def _brief(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:300]
