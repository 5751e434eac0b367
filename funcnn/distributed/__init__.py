"""Data-parallel and multi-host training on JAX's own sharding machinery.

Data parallelism splits every batch of ``B`` examples over the ``D`` devices of a mesh's
``"data"`` axis: device ``d`` holds rows ``[d·B/D, (d+1)·B/D)``, the params and optimizer
state are replicated, and the gradient of the mean loss

``∇L = (1/B) Σ_i ∇l_i = (1/D) Σ_d ∇L_d``   (``L_d`` the mean over device ``d``'s rows)

is assembled by XLA's all-reduce. Nothing here is home-made: a mesh is a
:class:`jax.sharding.Mesh`, placements are :class:`jax.sharding.NamedSharding`, and the same
``jax.jit``-compiled step from :func:`funcnn.train.train_step` runs unchanged on sharded
inputs, with XLA inserting the collectives. Several processes (on one machine or many) join
with :func:`jax.distributed.initialize` (see :func:`initialize` and
``python -m funcnn.distributed.launch``); then a mesh spans the devices of all of them.

The mesh axes use :attr:`jax.sharding.AxisType.Auto`, so that jit propagates the batch's
sharding through the model on its own (``jax.make_mesh`` defaults to explicit axes in
current JAX).

This module is named ``distributed`` rather than ``parallel`` because
:func:`funcnn.parallel` is the layer combinator; a submodule of that name would replace it
on import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .. import checks

__all__ = [
    "DATA",
    "MODEL",
    "make_mesh",
    "axis_size",
    "check_divisible",
    "batch_sharding",
    "replicated",
    "shard_batch",
    "shard_local_batch",
    "local_rows",
    "replicate",
    "shard_params",
    "place",
    "data_parallel",
    "initialize",
]

DATA = "data"
MODEL = "model"


def _check_mesh(mesh, who: str) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{who}: mesh must be a jax.sharding.Mesh (see make_mesh), got {mesh!r}")
    return mesh


def make_mesh(
    data: int | None = None,
    model: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A ``data × model`` device mesh with axes ``("data", "model")`` of type ``Auto``.

    ``data · model`` must equal the number of devices; ``data`` defaults to
    ``len(devices) // model``. With ``model = 1`` (the default) it is pure data parallelism;
    ``model > 1`` leaves room to split large dense layers (:func:`shard_params`).

    Args:
      data: devices along the batch axis.
      model: devices along the parameter axis.
      devices: the devices to use; default ``jax.devices()`` (all processes' devices).

    >>> mesh = make_mesh()
    >>> mesh.axis_names
    ('data', 'model')
    """
    devices = list(jax.devices() if devices is None else devices)
    data = checks.positive_int(data, "make_mesh: data", allow_none=True)
    model = checks.positive_int(model, "make_mesh: model")
    if data is None:
        data = len(devices) // model
    if data * model != len(devices):
        raise ValueError(
            f"make_mesh: data × model = {data} × {model} must equal the number of devices, "
            f"{len(devices)}"
        )
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=auto, devices=devices)


def axis_size(mesh: Mesh, axis: str = DATA) -> int:
    """The number of devices along ``axis`` of ``mesh``.

    >>> axis_size(make_mesh(), "data") == jax.device_count()
    True
    """
    _check_mesh(mesh, "axis_size")
    if axis not in mesh.shape:
        raise ValueError(f"axis_size: axis must be one of {list(mesh.shape)}, got {axis!r}")
    return int(mesh.shape[axis])


def check_divisible(
    size: int, mesh: Mesh, *, axis: str = DATA, argument: str = "batch_size", who: str = "batch"
) -> None:
    """Raise a ``ValueError`` unless ``size`` splits evenly over ``axis``: ``size mod D = 0``.

    >>> check_divisible(2 * jax.device_count(), make_mesh())
    """
    d = axis_size(mesh, axis)
    if size % d:
        raise ValueError(
            f"{who}: {argument} = {size} is not divisible by the {d} devices of the mesh's "
            f"{axis!r} axis; use a multiple of {d}"
        )


def batch_sharding(mesh: Mesh, axis: str = DATA) -> NamedSharding:
    """Rows split over ``axis``, everything else whole: ``NamedSharding(mesh, P(axis))``.

    >>> batch_sharding(make_mesh()).spec
    P('data',)
    """
    axis_size(mesh, axis)
    return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """A whole copy on every device: ``NamedSharding(mesh, P())``.

    >>> replicated(make_mesh()).spec
    P()
    """
    return NamedSharding(_check_mesh(mesh, "replicated"), P())


def _host(leaf):
    """A leaf as something ``device_put`` may scatter to other processes' devices."""
    if jax.process_count() > 1 and isinstance(leaf, jax.Array):
        return np.asarray(leaf)
    return leaf


def _leaves_rows(batch, who: str) -> int:
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError(f"{who}: batch holds no arrays")
    rows = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in rows or len(rows) != 1:
        shapes = [np.shape(leaf) for leaf in leaves]
        raise ValueError(f"{who}: every array of batch needs the same leading size, got {shapes}")
    count = rows.pop()
    assert count is not None  # refused above
    return count


def shard_batch(batch: Any, mesh: Mesh, *, axis: str = DATA) -> Any:
    """Place a global batch with its rows split over ``axis``.

    Each leaf of ``batch`` (an array or a pytree such as ``(x, y)``) of shape ``(B, ...)``
    becomes a global ``jax.Array`` whose device ``d`` holds rows ``[d·B/D, (d+1)·B/D)``.
    In a multi-process run every process must pass the same global batch; to feed only
    this process's rows, use :func:`shard_local_batch`.

    Args:
      batch: arrays with a common leading size ``B``, divisible by ``D = axis_size(mesh)``.
      mesh: the device mesh.
      axis: the mesh axis that splits the rows.

    >>> import numpy as np
    >>> x = shard_batch(np.zeros((2 * jax.device_count(), 3)), make_mesh())
    >>> x.sharding.spec
    P('data',)
    """
    check_divisible(_leaves_rows(batch, "shard_batch"), mesh, axis=axis, who="shard_batch")
    sharding = batch_sharding(mesh, axis)
    return jax.tree_util.tree_map(lambda a: jax.device_put(_host(a), sharding), batch)


def local_rows(batch_size: int, mesh: Mesh, *, axis: str = DATA) -> slice:
    """The rows ``[start, stop)`` of a global batch of ``batch_size`` this process feeds.

    They are the rows :func:`shard_batch` would place on this process's devices; a
    data loader reads only these and hands them to :func:`shard_local_batch`.

    >>> local_rows(8, make_mesh()) == slice(0, 8) or jax.process_count() > 1
    True
    """
    check_divisible(batch_size, mesh, axis=axis, who="local_rows")
    index = batch_sharding(mesh, axis).addressable_devices_indices_map((batch_size,))
    blocks = set()
    for s in index.values():
        assert s is not None  # None only where no global shape is given
        blocks.add((s[0].start or 0, batch_size if s[0].stop is None else s[0].stop))
    spans = sorted(blocks)
    start, stop = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in spans) != stop - start:
        raise ValueError(
            f"local_rows: this process's devices hold the non-contiguous rows {spans}; "
            "order the mesh's devices by process"
        )
    return slice(start, stop)


def _local_blocks(mesh: Mesh, axis: str) -> int:
    """How many distinct row blocks along ``axis`` this process's devices hold."""
    k = mesh.axis_names.index(axis)
    mine = {d.id for d in mesh.local_devices}
    coords = {i[k] for i, dev in np.ndenumerate(mesh.devices) if dev.id in mine}
    return len(coords)


def shard_local_batch(local_batch: Any, mesh: Mesh, *, axis: str = DATA) -> Any:
    """Assemble a global batch from each process's own rows, without copying between them.

    Process ``p`` passes rows ``local_rows(B, mesh)`` of the global batch (``B/P`` rows
    when the ``P`` processes hold equal numbers of devices); the result is the same global
    array :func:`shard_batch` makes from the whole batch, built with
    :func:`jax.make_array_from_process_local_data`. In a single process it equals
    :func:`shard_batch`.

    >>> import numpy as np
    >>> shard_local_batch(np.zeros((jax.local_device_count(), 2)), make_mesh()).shape[1]
    2
    """
    rows = _leaves_rows(local_batch, "shard_local_batch")
    sharding = batch_sharding(mesh, axis)
    blocks = _local_blocks(mesh, axis)
    if rows % blocks:
        raise ValueError(
            f"shard_local_batch: this process's {rows} rows do not split into its {blocks} "
            f"blocks of the mesh's {axis!r} axis; pass a multiple of {blocks} rows"
        )
    batch_size = rows // blocks * axis_size(mesh, axis)

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_process_local_data(sharding, a, (batch_size, *a.shape[1:]))

    return jax.tree_util.tree_map(put, local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put a whole copy of every leaf of ``tree`` on every device of ``mesh``.

    >>> import jax.numpy as jnp
    >>> replicate({"w": jnp.ones(3)}, make_mesh())["w"].sharding.spec
    P()
    """
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda a: jax.device_put(_host(a), sharding), tree)


def _dense_spec(path, leaf, axis: str, d: int, min_size: int) -> P:
    name = getattr(path[-1], "key", None) if path else None
    shape = np.shape(leaf)
    if name == "w" and len(shape) == 2 and np.size(leaf) >= min_size and shape[1] % d == 0:
        return P(None, axis)
    return P()


def shard_params(params: Any, mesh: Mesh, *, axis: str = MODEL, min_size: int = 1 << 20) -> Any:
    """Replicate params, except large dense weights, which are split by output column.

    A dense weight ``W`` (key ``"w"``, shape ``(n_in, n_out)``) with at least ``min_size``
    entries and ``n_out`` divisible by ``M = axis_size(mesh, axis)`` gets
    ``P(None, axis)``: device ``m`` holds columns ``[m·n_out/M, (m+1)·n_out/M)``, so
    ``y = xW`` is computed column block by column block. Everything else is replicated.
    Pass the result to :func:`funcnn.fit` with the same ``mesh``; it keeps these placements.

    Args:
      params: a params pytree.
      mesh: a mesh with an axis named ``axis`` (``make_mesh(data, model)``).
      axis: the mesh axis that splits the columns.
      min_size: the smallest weight worth splitting.

    >>> import jax.numpy as jnp
    >>> p = shard_params({"w": jnp.ones((4, 8)), "b": jnp.ones(8)}, make_mesh(), min_size=1)
    >>> p["w"].sharding.spec
    P(None, 'model')
    """
    d = axis_size(mesh, axis)

    def put(path, leaf):
        spec = _dense_spec(path, leaf, axis, d, min_size)
        return jax.device_put(_host(leaf), NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(put, params)


def place(tree: Any, mesh: Mesh) -> Any:
    """Keep leaves already placed on ``mesh`` (e.g. by :func:`shard_params`); replicate the rest.

    >>> import jax.numpy as jnp
    >>> place({"w": jnp.ones(2)}, make_mesh())["w"].sharding.spec
    P()
    """
    _check_mesh(mesh, "place")
    sharding = replicated(mesh)

    def put(leaf):
        s = getattr(leaf, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh == mesh:
            return leaf
        return jax.device_put(_host(leaf), sharding)

    return jax.tree_util.tree_map(put, tree)


def data_parallel(
    step: Callable, mesh: Mesh, *, axis: str = DATA, batch_argnums: Sequence[int] = (2,)
) -> Callable:
    """Wrap ``step`` so that its batch arguments are split over ``axis`` inside ``jit``.

    The arguments at ``batch_argnums`` (default: the ``batch`` of
    ``step(params, opt_state, batch, key)``) get
    ``jax.lax.with_sharding_constraint(·, P(axis))``: each device computes the forward and
    backward pass of its ``B/D`` rows, and XLA all-reduces the gradients. The numbers are
    those of ``step`` on the whole batch, up to float summation order.

    >>> import jax.numpy as jnp
    >>> f = jax.jit(data_parallel(lambda p, o, b: (p * b).mean(), make_mesh()))
    >>> float(f(jnp.float32(2.0), None, jnp.ones(jax.device_count() * 2)))
    2.0
    """
    sharding = batch_sharding(mesh, axis)

    def wrapped(*args, **kwargs):
        args = list(args)
        for i in batch_argnums:
            args[i] = jax.tree_util.tree_map(
                lambda a: jax.lax.with_sharding_constraint(a, sharding), args[i]
            )
        return step(*args, **kwargs)

    return wrapped


ENV_COORDINATOR = "FUNCNN_COORDINATOR"
ENV_NUM_PROCESSES = "FUNCNN_NUM_PROCESSES"
ENV_PROCESS_ID = "FUNCNN_PROCESS_ID"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs: Any,
) -> None:
    """Join this process to a multi-process run with :func:`jax.distributed.initialize`.

    Arguments not given are read from ``FUNCNN_COORDINATOR`` (``host:port``),
    ``FUNCNN_NUM_PROCESSES`` and ``FUNCNN_PROCESS_ID``, which
    ``python -m funcnn.distributed.launch`` sets; when none of them is set either, JAX
    detects the cluster itself (SLURM, Open MPI, Cloud TPU). Call it first, before any JAX
    computation. On CPU the processes talk through gloo collectives.

    After it, ``jax.devices()`` lists the devices of all processes and
    ``jax.process_index()`` is this process's id. Started without the launcher and outside
    a cluster, with no argument, it does nothing: the script runs as one process, so the
    same script runs under ``python`` and under the launcher.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator service.
      num_processes: how many processes join.
      process_id: this process's id, in ``[0, num_processes)``.
      **kwargs: passed on to :func:`jax.distributed.initialize`.

    At the top of a script started by the launcher (not run here: it must come before
    any JAX computation, and it waits for the launcher's other processes to join):

    >>> from funcnn import distributed
    >>> distributed.initialize()  # doctest: +SKIP
    >>> mesh = distributed.make_mesh()  # the devices of every process
    >>> mesh.size == jax.device_count()
    True
    """
    env = os.environ
    if coordinator_address is None:
        coordinator_address = env.get(ENV_COORDINATOR)
    if num_processes is None and ENV_NUM_PROCESSES in env:
        num_processes = int(env[ENV_NUM_PROCESSES])
    if process_id is None and ENV_PROCESS_ID in env:
        process_id = int(env[ENV_PROCESS_ID])
    # a flag, made an attribute at runtime: the class declares none for it
    collectives = jax.config.jax_cpu_collectives_implementation  # type: ignore[attr-defined]
    if collectives in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    alone = coordinator_address is None and num_processes is None and process_id is None
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    except ValueError as err:
        if not alone or "coordinator_address" not in str(err):
            raise
        # no launcher, no cluster JAX detects: the script runs as the one process of its run
