"""Save and load pytrees of arrays safely: no code runs on load, and a crash never corrupts.

A checkpoint is a numpy ``.npz`` archive (a zip of ``.npy`` arrays) with one entry per
leaf, named by the leaf's pytree path as :func:`jax.tree_util.keystr` writes it
(``"['hidden_0']['w']"``, ``"[0].mu['output']['b']"``), plus one header entry holding a
small JSON document. Loading reads it with ``allow_pickle=False`` and refuses object
arrays, so a checkpoint from a stranger cannot execute code.

* **Atomic.** :func:`save` writes a temporary file beside the target, flushes and
  ``fsync``\\ s it, then renames it over the target (``os.replace``), so a crash at any
  moment leaves either the old checkpoint or the new one, whole.
* **Checked.** :func:`load` with ``like=template`` checks structure, shapes and dtypes
  against the template and names the first path that differs.
* **Exact or refused.** The header records each entry's CRC-32, size, shape and dtype; a
  load that succeeds returns exactly the saved bytes, and any damaged, truncated, tampered or
  hostile file raises one error, :class:`CheckpointError` (a ``ValueError``), before
  anything beyond what the file can hold is allocated (:mod:`funcnn.checkpoint.archive`).
* **Any leaf.** Arrays (numpy or jax, including ``bfloat16``), Python and numpy scalars,
  and typed PRNG keys from ``jax.random.key`` (stored as ``jax.random.key_data`` and
  restored with ``jax.random.wrap_key_data``).
* **One writer per folder.** :class:`FolderLock` keeps a second run out of a folder that
  a run writes to (``fit`` takes it on its ``checkpoint_dir``).
* **Sharded, many processes.** :class:`ShardedStore` (:mod:`funcnn.checkpoint.sharded`)
  keeps checkpoints of arrays split over a mesh and over processes, written by Orbax (the
  optional extra ``pip install "funcnn[scale]"``), with the same atomicity and one error for
  damage; a restore onto another mesh layout is a :class:`LayoutError` unless asked to
  reshard.

Files of format 1 (before the header recorded each entry) still load, checked by the zip's
own CRC-32s.
"""

from .archive import FORMAT_VERSION, CheckpointError
from .loading import load, load_meta
from .lock import FolderLock, FolderLockedError
from .saving import save
from .sharded import LayoutError, ShardedStore

__all__ = [
    "save",
    "load",
    "load_meta",
    "CheckpointError",
    "FolderLock",
    "FolderLockedError",
    "FORMAT_VERSION",
    "ShardedStore",
    "LayoutError",
]
