"""Where a run's checkpoints are written: one file each, or Orbax's sharded folders.

:class:`~funcnn.train.state.Checkpoints` keeps the policy (when to save, what to keep, what
a resumed run must share) and hands the storage to one of two stores with the same methods,
``steps``, ``save``, ``save_best``, ``load_meta``, ``load`` and ``close``:

* :class:`FileStore`: ``step_<g>.npz`` and ``best.npz``, each written atomically by
  :func:`funcnn.checkpoint.save` from one process: a run on one process whose params and
  optimizer state are whole on every device (:func:`sharded_run` is false);
* :class:`ShardedFileStore`: ``step_<g>/`` and ``best/``, written by every process through
  :class:`funcnn.checkpoint.sharded.ShardedStore` (Orbax): a multi-process run, one whose
  params or optimizer state are split over a mesh (:func:`funcnn.distributed.shard_params`),
  or one on a folder that holds sharded checkpoints already (:func:`sharded_layout`).

Both raise :class:`funcnn.checkpoint.CheckpointError` for a damaged checkpoint, which the
policy skips for an older one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .. import checkpoint
from ..checkpoint import sharded

__all__ = ["FileStore", "ShardedFileStore", "sharded_run", "saved_kinds", "sharded_layout"]
__all__ += ["placed_as"]


def sharded_run(params: Any, opt_state: Any) -> bool:
    """Whether a run needs sharded checkpoints: it spans several processes, or a leaf of
    ``params`` or ``opt_state`` lies on a mesh without a whole copy on every device.

    >>> import jax.numpy as jnp
    >>> sharded_run({"w": jnp.ones(2)}, ())
    False
    """
    if jax.process_count() > 1:
        return True
    for leaf in jax.tree_util.tree_leaves((params, opt_state)):
        s = getattr(leaf, "sharding", None)
        if isinstance(s, NamedSharding) and not s.is_fully_replicated:
            return True
    return False


def saved_kinds(folder: Path) -> set[str]:
    """The kinds of step checkpoints in ``folder``: ``"file"`` for ``step_<g>.npz``,
    ``"sharded"`` for a finalized ``step_<g>/`` folder.

    >>> import tempfile
    >>> saved_kinds(Path(tempfile.mkdtemp()))
    set()
    """
    kinds = set()
    for path in folder.glob("step_*") if folder.is_dir() else ():
        if path.is_dir() and path.name[5:].isdigit():
            kinds.add("sharded")
        elif path.suffix == ".npz" and path.stem[5:].isdigit():
            kinds.add("file")
    return kinds


def sharded_layout(folder: Path, tree: Any, resume: bool) -> dict[str, Any] | None:
    """The :func:`~funcnn.checkpoint.sharded.layout` of a run's state ``tree`` as it starts
    when its checkpoints are sharded ones (the run is sharded, :func:`sharded_run`, or
    ``folder`` holds sharded checkpoints already); ``None`` when they are files.

    A sharded run cannot ``resume`` from file checkpoints: a ``ValueError``.

    >>> import tempfile, jax.numpy as jnp
    >>> print(sharded_layout(Path(tempfile.mkdtemp()), {"params": jnp.ones(2)}, False))
    None
    """
    kinds = saved_kinds(folder)
    if not (sharded_run(tree.get("params"), tree.get("opt_state")) or "sharded" in kinds):
        return None
    if resume and kinds == {"file"}:
        raise ValueError(
            f"fit: checkpoint_dir {str(folder)!r} holds the checkpoints of a run on one "
            "process with params whole on every device (step_<g>.npz); this run is sharded "
            "and resumes only from sharded ones (step_<g>/): give it another folder"
        )
    return sharded.layout(tree)


class FileStore:
    """A run's checkpoints as files: ``step_<g>.npz`` (the newest ``keep``) and ``best.npz``.

    Opening removes the temporary files of a save cut short (``.*.npz.*.tmp``): open it only
    with the folder's lock held.
    """

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep
        for stale in folder.glob(".*.npz.*.tmp"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)

    def path(self, g: int) -> Path:
        """The file of step ``g``."""
        return self.folder / f"step_{g:010d}.npz"

    def steps(self) -> list[int]:
        """The steps ``g`` saved, oldest first."""
        found = [f.stem[5:] for f in self.folder.glob("step_*.npz")]
        return sorted(int(g) for g in found if g.isdigit())

    def save(self, g: int, tree: Any, meta: dict[str, Any]) -> None:
        """Step ``g``; then the steps past the newest ``keep`` are removed."""
        checkpoint.save(self.path(g), tree, meta=meta)
        for old in self.steps()[: -self.keep]:
            self.path(old).unlink(missing_ok=True)

    def save_best(self, tree: Any, meta: dict[str, Any]) -> None:
        """``best.npz``, replaced atomically."""
        checkpoint.save(self.folder / "best.npz", tree, meta=meta)

    def load_meta(self, g: int) -> dict[str, Any]:
        """The meta of step ``g`` (its header alone)."""
        return checkpoint.load_meta(self.path(g))

    def load(self, g: int, like: Any, meta: dict[str, Any]) -> Any:
        """The arrays of step ``g``, checked against ``like``."""
        return checkpoint.load(self.path(g), like=like)

    def close(self) -> None:
        """Nothing to release: each save is done when it returns."""


class ShardedFileStore:
    """A run's checkpoints through :class:`~funcnn.checkpoint.sharded.ShardedStore`, every
    process taking part: ``step_<g>/`` (the newest ``keep``) and ``best/``.

    Each checkpoint's meta also records ``run_layout``, the run's :func:`~funcnn.checkpoint.
    sharded.layout` as it started (``layout``: its mesh and the placement of each leaf
    before the first step). A resumed run must start with the same one, else a
    :class:`~funcnn.checkpoint.sharded.LayoutError` naming both, unless ``reshard``: then each
    array is read onto this run's placement. With the same layout each array is read onto the
    placement it had when saved, so the run continues exactly as it would have.
    """

    def __init__(self, folder: Path, keep: int, layout: dict[str, Any], reshard: bool):
        self.folder, self.layout, self.reshard = folder, layout, reshard
        self.store = sharded.ShardedStore(folder, keep, who="fit: checkpoint_dir")

    def steps(self) -> list[int]:
        """The steps ``g`` saved (finalized ones only), oldest first."""
        return self.store.steps()

    def save(self, g: int, tree: Any, meta: dict[str, Any]) -> None:
        """Step ``g``, every process writing its shards; the oldest past ``keep`` go."""
        self.store.save(g, tree, {**meta, "run_layout": self.layout})

    def save_best(self, tree: Any, meta: dict[str, Any]) -> None:
        """The checkpoint named ``"best"``, replaced once the new one is whole."""
        self.store.save("best", tree, {**meta, "run_layout": self.layout})

    def load_meta(self, g: int) -> dict[str, Any]:
        """The meta of step ``g``."""
        return self.store.load_meta(g)

    def load(self, g: int, like: Any, meta: dict[str, Any]) -> Any:
        """The arrays of step ``g`` onto ``like``'s devices (see the class)."""
        saved = meta.get("run_layout")
        if not isinstance(saved, dict):
            saved = self.store.saved_layout(g)
        if saved != self.layout:
            if not self.reshard:
                where = f"fit: checkpoint_dir {str(self.folder)!r}: step {g}"
                sharded.check_layout(saved, self.layout, where)
            return self.store.restore(g, like, reshard=True)
        like = placed_as(like, self.store.saved_layout(g))
        return self.store.restore(g, like)

    def close(self) -> None:
        """Let Orbax's background work end."""
        self.store.close()


def placed_as(like: Any, layout: dict[str, Any]) -> Any:
    """``like`` as ``jax.ShapeDtypeStruct``\\ s placed as ``layout`` says, on the mesh of
    ``like``'s own leaves; a leaf ``layout`` does not place keeps its sharding.

    >>> import jax.numpy as jnp
    >>> from funcnn import distributed
    >>> w = distributed.replicate(jnp.ones(2), distributed.make_mesh())
    >>> placed_as({"w": w}, {"specs": {"['w']": ["data"]}})["w"].sharding.spec
    P('data',)
    """
    specs = layout.get("specs", {})

    def one(path, leaf):
        sharding = getattr(leaf, "sharding", None)
        spec = specs.get(jax.tree_util.keystr(path))
        if isinstance(sharding, NamedSharding) and spec is not None:
            entries = [e if e is None or isinstance(e, str) else tuple(e) for e in spec]
            sharding = NamedSharding(sharding.mesh, P(*entries))
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(one, like)
