"""Training a model with state (BatchNorm): train_step_with_state, fit in both modes,
early stopping, checkpoints and exact resume, evaluate, summary, and data parallelism."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import layers as L
from funcnn import models

ROOT = Path(__file__).resolve().parents[1]


def bn_model():
    net = fn.serial(
        fn.named("hidden", L.Dense(16)), fn.named("bn", L.BatchNorm()), L.Relu(), L.Dense(2)
    )
    return models.with_head(net, "softmax")


def problem(n=96):
    x, y = fn.data.moons(n, key=0)
    model = bn_model()
    _, params, state = model.init_with_state(jax.random.key(1), (-1, 2))
    return model, params, state, x, y


def trees_equal(a, b) -> bool:
    same = jax.tree_util.tree_map(lambda u, v: bool(np.array_equal(u, v)), a, b)
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        jax.tree_util.tree_leaves(same)
    )


def test_fit_equals_a_hand_written_loop_of_train_step_with_state():
    model, params, state, x, y = problem()
    opt = optax.sgd(0.1, momentum=0.9)
    result = fn.fit(
        model, params, x, y, optimizer=opt, epochs=3, batch_size=32, shuffle=False,
        state=state, progress=False,
    )  # fmt: skip
    step = fn.train_step_with_state(model, model.loss, opt)
    p, s, o = params, state, opt.init(params)
    for _ in range(3):
        for i in range(0, 96, 32):
            p, s, o, _ = step(p, s, o, (x[i : i + 32], y[i : i + 32]))
    np.testing.assert_allclose(result.params["hidden"]["w"], p["hidden"]["w"], rtol=1e-6)
    np.testing.assert_allclose(result.state["bn"]["mean"], s["bn"]["mean"], rtol=1e-6)
    np.testing.assert_allclose(result.state["bn"]["var"], s["bn"]["var"], rtol=1e-6)
    assert not np.allclose(result.state["bn"]["var"], state["bn"]["var"])  # it moved


def test_scan_and_loop_modes_agree_and_the_optimizer_never_sees_the_state():
    model, params, state, x, y = problem()
    runs = [
        fn.fit(
            model,
            params,
            x,
            y,
            optimizer=optax.adam(0.01),
            epochs=4,
            batch_size=16,
            state=state,
            scan=scan,
            progress=False,
            validation_data=(x[:32], y[:32]),
        )  # fmt: skip
        for scan in (False, True)
    ]
    for a, b in zip(jax.tree_util.tree_leaves(runs[0][:2] + (runs[0].state,)),
                    jax.tree_util.tree_leaves(runs[1][:2] + (runs[1].state,))):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    mu, nu = runs[0].opt_state[0].mu, runs[0].opt_state[0].nu  # adam's moments: params only
    assert jax.tree_util.tree_structure(mu) == jax.tree_util.tree_structure(params)
    assert "mean" not in str(jax.tree_util.tree_structure(nu))
    logs = fn.evaluate(model, runs[1].params, x[:32], y[:32], state=runs[1].state)
    assert logs["loss"] == pytest.approx(runs[1].history["val_loss"][-1], rel=1e-5)


def test_early_stopping_restores_the_best_params_with_their_state():
    model, params, state, x, y = problem()
    (xt, yt), (xv, yv) = fn.data.train_val_split(x, y, 0.3, key=2)
    kwargs = dict(optimizer=optax.adam(0.2), batch_size=16, state=state, progress=False,
                  validation_data=(xv, yv))  # fmt: skip
    stopped = fn.fit(model, params, xt, yt, epochs=40, patience=3, **kwargs)
    best = stopped.best_epoch
    assert best is not None and stopped.epochs_run > best + 1
    again = fn.fit(model, params, xt, yt, epochs=best + 1, **kwargs)  # the same run, cut there
    assert trees_equal(stopped.params, again.params)
    assert trees_equal(stopped.state, again.state)


@pytest.mark.parametrize("scan", [False, True])
def test_resume_brings_back_the_state_bit_for_bit(tmp_path, scan):
    model, params, state, x, y = problem()
    kwargs = dict(optimizer=optax.adam(0.01), batch_size=20, state=state, progress=False,
                  scan=scan, key=5)  # fmt: skip
    whole = fn.fit(model, params, x, y, epochs=5, **kwargs)
    fn.fit(model, params, x, y, epochs=2, checkpoint_dir=tmp_path, **kwargs)
    resumed = fn.fit(model, params, x, y, epochs=5, checkpoint_dir=tmp_path, resume=True, **kwargs)
    assert trees_equal(whole.params, resumed.params)
    assert trees_equal(whole.state, resumed.state)
    assert trees_equal(whole.opt_state, resumed.opt_state)


def test_a_stateful_model_without_its_state_is_a_clear_error():
    model, params, state, x, y = problem()
    with pytest.raises(ValueError, match=r"fit: bn: BatchNorm\(\) keeps state; pass state="):
        fn.fit(model, params, x, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"evaluate: bn: BatchNorm\(\) keeps state"):
        fn.evaluate(model, params, x, y)
    with pytest.raises(ValueError, match="train_step: bn: BatchNorm.*train_step_with_state"):
        fn.train_step(model, model.loss, optax.sgd(0.1))
    with pytest.raises(ValueError, match="keeps no state"):
        fn.evaluate(models.mlp([4, 2]), params, x, y, state=state)


def test_summary_counts_the_state_apart():
    s = fn.summary(models.resnet(), (-1, 8, 8, 1))
    plain = fn.summary(models.resnet(batch_norm=False), (-1, 8, 8, 1))
    model = models.resnet()
    _, params, state = jax.eval_shape(lambda k: model.init_with_state(k, (-1, 8, 8, 1)),
                                      jax.random.key(0))  # fmt: skip
    assert s.total == fn.param_count(params) and s.state == fn.param_count(state) > 0
    assert "State (not trained)" in str(s) and plain.state == 0
    # mean and var per BatchNorm channel: the stem's, two per block, one per projection
    bn_values = 2 * (16 * (1 + 4) + 32 * (4 + 1) + 64 * (4 + 1))
    assert s.state == bn_values


def test_resnet_variants_and_their_state():
    x = jnp.ones((2, 8, 8, 1))
    for kw, stateful in (({}, True), ({"shortcut": False}, True), ({"batch_norm": False}, False)):
        model = models.resnet(blocks=1, **kw)
        shape, params, state = model.init_with_state(jax.random.key(0), (-1, 8, 8, 1))
        assert shape == (-1, 10) and model.stateful == stateful and bool(state) == stateful
        y, new = model.apply_with_state(params, state, x, train=True)
        assert y.shape == (2, 10)
        has_projection = "shortcut" in str(jax.tree_util.tree_structure(params))
        assert has_projection == kw.get("shortcut", True)
        assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)


def test_data_parallel_batch_statistics_are_those_of_the_global_batch():
    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax, numpy as np, optax
        import funcnn as fn
        from funcnn import layers as L, models
        net = fn.serial(L.Dense(16), L.BatchNorm(), L.Relu(), L.Dense(2))
        model = models.with_head(net, "softmax")
        x, y = fn.data.moons(64, key=0)
        _, params, state = model.init_with_state(jax.random.key(1), (-1, 2))
        kw = dict(optimizer=optax.sgd(0.1), epochs=3, batch_size=16, state=state,
                  progress=False, shuffle=False)
        one = fn.fit(model, params, x, y, **kw)
        from funcnn import distributed
        mesh = distributed.make_mesh()
        assert mesh.shape["data"] == 4
        four = fn.fit(model, params, x, y, mesh=mesh, **kw)
        for a, b in zip(jax.tree_util.tree_leaves((one.params, one.state)),
                        jax.tree_util.tree_leaves((four.params, four.state))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_per_example_gradients_and_the_graph_of_a_stateful_model_in_eval_mode():
    model, params, state, x, y = problem(8)

    def loss(p, b):
        return model.loss(model.apply_with_state(p, state, b[0])[0], b[1])

    each = fn.gradients.per_example(loss, params, (x, y))
    mean = jax.grad(loss)(params, (x, y))
    for a, b in zip(jax.tree_util.tree_leaves(each), jax.tree_util.tree_leaves(mean)):
        np.testing.assert_allclose(np.mean(a, axis=0), b, rtol=1e-5, atol=1e-7)
    g = fn.graph.trace(lambda p: loss(p, (x, y)), params)
    assert "rsqrt" in [node.op for node in g.nodes]  # BatchNorm's 1/√(σ² + ε), eval mode
