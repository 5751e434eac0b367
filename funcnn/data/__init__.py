"""Data helpers: checks, train/validation split, minibatches, the 2-D toy sets, images.

Images: :func:`digits` (the 8×8 digits bundled with scikit-learn) and :func:`load_idx`
(MNIST-format IDX files).

Files: :class:`NpyDataset` (``.npy`` shards) and :class:`IdxDataset` (uncompressed IDX
files) read a dataset on disk row by row, with bounded memory (the :class:`ArrayDataset`
protocol); :class:`NpyWriter`, :func:`write_npy_shards` and :func:`write_idx` write them.

Every toy set is deterministic given its key (a ``jax.random`` key or an int seed) and
returns ``(x, y)`` with ``x`` float32 of shape ``(n, 2)`` and ``y`` int32 class labels of
shape ``(n,)``, balanced between the classes.
"""

from .arrays import as_key, batches, check_xy, shuffle, train_val_split
from .files import ArrayDataset, IdxDataset, NpyDataset, NpyWriter, write_idx, write_npy_shards
from .images import IDX_TYPES, digits, load_idx
from .toys import TOY_SETS, blobs, circles, delayed_recall, moons, spirals, xor

__all__ = [
    "check_xy",
    "train_val_split",
    "batches",
    "as_key",
    "shuffle",
    "spirals",
    "circles",
    "moons",
    "xor",
    "blobs",
    "TOY_SETS",
    "delayed_recall",
    "digits",
    "load_idx",
    "IDX_TYPES",
    "ArrayDataset",
    "NpyDataset",
    "IdxDataset",
    "NpyWriter",
    "write_npy_shards",
    "write_idx",
]
