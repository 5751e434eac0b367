"""A training script for tests/test_parallel.py, run in subprocesses.

``python tests/distributed_worker.py devices OUT``: one process with 4 CPU devices.
``python -m funcnn.distributed.launch -n 2 --cpu-devices 2 tests/distributed_worker.py
multi OUT``: two processes joined by ``jax.distributed``, each feeding its own rows.

Each writes ``OUT/params_<process>.npz`` (the trained params of ``train_step`` and of
``fit``) and ``OUT/info_<process>.json`` (the shardings it saw); the test compares them with
a single-device run of :func:`reference`.
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__" and sys.argv[1] == "devices":  # before jax starts its backend
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from funcnn import distributed, fit, models, train_step  # noqa: E402

BATCH, STEPS, N, EPOCHS = 8, 4, 48, 2


def problem():
    """The model, its initial params and the data, the same in every process."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=N)
    model = models.mlp([16, 3], dropout=0.1)
    _, params = model.init(jax.random.key(0), (-1, 4))
    return model, params, x, y


def reference(model, params, x, y, mesh=None, local=False, seen=None):
    """Train with ``train_step`` for STEPS batches, then with ``fit`` for EPOCHS epochs."""
    opt = optax.adam(1e-2)
    step = train_step(model, model.loss, opt, mesh=mesh)
    p, o = params, opt.init(params)
    if mesh is not None:
        p, o = distributed.replicate((p, o), mesh)
    for t in range(STEPS):
        batch = x[t * BATCH : (t + 1) * BATCH], y[t * BATCH : (t + 1) * BATCH]
        if mesh is not None and local:
            rows = distributed.local_rows(BATCH, mesh)
            batch = distributed.shard_local_batch((batch[0][rows], batch[1][rows]), mesh)
        elif mesh is not None:
            batch = distributed.shard_batch(batch, mesh)
        if seen is not None:
            seen["batch_spec"] = str(batch[0].sharding.spec)
            seen["shard_rows"] = sorted({s.data.shape[0] for s in batch[0].addressable_shards})
        p, o, _ = step(p, o, batch, jax.random.key(t))

    def record(out, target):
        if seen is not None:
            jax.debug.inspect_array_sharding(
                out, callback=lambda s: seen.setdefault("fit_batch_specs", []).append(str(s))
            )
        return jnp.mean(out)

    return p, fit_only(model, params, x, y, mesh, {"m": record})


def fit_only(model, params, x, y, mesh=None, metrics=None):
    """``fit`` with momentum SGD for EPOCHS epochs (dropout on, key 1)."""
    opt = optax.sgd(0.1, momentum=0.9)
    return fit(
        model,
        params,
        x,
        y,
        optimizer=opt,
        epochs=EPOCHS,
        batch_size=BATCH,
        metrics=metrics,
        mesh=mesh,
        key=1,
    ).params


def errors(model, params, x, y, mesh):
    """The messages of the batch sizes that do not split over 4 devices."""
    calls = {
        "shard_batch": lambda: distributed.shard_batch((x[:6], y[:6]), mesh),
        "fit_batch_size": lambda: fit(model, params, x, y, batch_size=6, epochs=1, mesh=mesh),
        "fit_last_batch": lambda: fit(model, params, x[:42], y[:42], batch_size=8, mesh=mesh),
    }
    messages = {}
    for name, call in calls.items():
        try:
            call()
            messages[name] = None
        except ValueError as e:
            messages[name] = str(e)
    return messages


def model_parallel(model, params, x, y, seen):
    """``fit`` on a 2 × 2 mesh with the dense weights split over the model axis."""
    mesh = distributed.make_mesh(2, 2)
    sharded = distributed.shard_params(params, mesh, min_size=1)
    seen["model_spec_before"] = str(sharded["hidden_0"]["w"].sharding.spec)
    trained = fit_only(model, sharded, x, y, mesh)
    seen["model_spec_after"] = str(trained["hidden_0"]["w"].sharding.spec)
    return trained


def _local(tree):
    """A host copy of a (replicated) global array, read from this process's devices."""
    return jax.tree.map(
        lambda a: np.asarray(a if a.is_fully_addressable else a.addressable_data(0)), tree
    )


def main(mode: str, out: str) -> None:
    """Train in ``mode`` (``"devices"`` or ``"multi"``) and write the results to ``out``."""
    if mode == "multi":
        distributed.initialize()
    mesh = distributed.make_mesh()
    seen = {"devices": jax.device_count(), "processes": jax.process_count()}
    model, params, x, y = problem()
    p_step, p_fit = reference(model, params, x, y, mesh, local=mode == "multi", seen=seen)
    seen["param_specs"] = sorted({str(a.sharding.spec) for a in jax.tree.leaves(p_fit)})
    trees = {"step": _local(p_step), "fit": _local(p_fit)}
    if mode == "devices":
        seen["errors"] = errors(model, params, x, y, mesh)
        trees["model"] = _local(model_parallel(model, params, x, y, seen))
    leaves = jax.tree_util.tree_flatten_with_path(trees)[0]
    arrays = {jax.tree_util.keystr(k): v for k, v in leaves}
    pid = jax.process_index()
    np.savez(os.path.join(out, f"params_{pid}.npz"), **arrays)
    with open(os.path.join(out, f"info_{pid}.json"), "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
