"""Mixed precision: bfloat16 trains as well as float32, float16's loss scaling skips an
overflow and recovers, and precision=None compiles the very same step as before."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnn import core, data, layers, losses, models
from funcnn.train import Precision, fit, train_step, train_step_with_state
from funcnn.train.precision import LossScaleState


def _leaves_dtypes(tree):
    return {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)}


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def test_bfloat16_lenet_matches_the_float32_validation_accuracy():
    x, y = data.digits()
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    train, val = (x[:1300], y[:1300]), (x[1300:], y[1300:])
    model = models.lenet5(padding="SAME", activation="relu")
    _, params = model.init(jax.random.key(0), (-1, 8, 8, 1))
    runs = {
        p: fit(
            model,
            params,
            *train,
            optimizer=optax.adam(2e-3),
            epochs=15,
            batch_size=32,
            key=1,
            validation_data=val,
            precision=p,
        )
        for p in (None, "bfloat16")
    }
    acc = {p: r.history["val_accuracy"] for p, r in runs.items()}
    assert acc[None][-1] > 0.93
    assert abs(acc["bfloat16"][-1] - acc[None][-1]) <= 0.01
    assert abs(max(acc["bfloat16"]) - max(acc[None])) <= 0.01
    assert _leaves_dtypes(runs["bfloat16"].params) == {"float32"}
    assert _leaves_dtypes(runs["bfloat16"].opt_state) <= {"float32", "int32"}


def _mlp_setup():
    x, y = data.digits()
    x = x.reshape(len(x), -1)[:256]
    model = models.mlp([32, 10])
    _, params = model.init(jax.random.key(0), (-1, 64))
    return model, params, jnp.asarray(x), jnp.asarray(y[:256])


def test_float16_skips_an_overflow_halves_the_scale_and_grows_it_back():
    model, params, x, y = _mlp_setup()
    opt = optax.adam(1e-2)
    policy = Precision("float16", loss_scale=2.0**10, growth_interval=3)
    step = train_step(model.apply, losses.softmax_cross_entropy, opt, precision=policy)
    opt_state = opt.init(params)
    losses_seen = []
    for _ in range(2):
        params, opt_state, logs = step(params, opt_state, (x[:64], y[:64]))
        losses_seen.append(float(logs["loss"]))
    assert isinstance(opt_state, LossScaleState)
    assert (float(opt_state.scale), int(opt_state.good_steps)) == (2.0**10, 2)
    # an overflow: inputs of 1e5 are inf in float16
    before = (params, opt_state.inner)
    params, opt_state, _ = step(params, opt_state, (x[:64] * 1e5, y[:64]))
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(
            lambda a, b: bool(jnp.array_equal(a, b)), before, (params, opt_state.inner)
        )
    )
    assert (float(opt_state.scale), int(opt_state.good_steps)) == (2.0**9, 0)
    for _ in range(3):  # three finite steps in a row: the scale doubles back
        params, opt_state, logs = step(params, opt_state, (x[64:], y[64:]))
        losses_seen.append(float(logs["loss"]))
    assert (float(opt_state.scale), int(opt_state.good_steps)) == (2.0**10, 0)
    assert _all_finite((params, opt_state)) and np.isfinite(losses_seen).all()
    assert _leaves_dtypes(params) == {"float32"}
    assert losses_seen[-1] < losses_seen[0]


def test_float16_fit_skips_overflowing_steps_without_raising():
    model, params, x, y = _mlp_setup()
    # a first scale of 2^40 overflows float16 in the backward pass until it has halved enough
    policy = Precision("float16", loss_scale=2.0**40, growth_interval=10_000)
    result = fit(
        model, params, x, y, optimizer=optax.adam(1e-2), epochs=4, batch_size=32,
        precision=policy, on_nonfinite="raise",
    )  # fmt: skip
    scale = float(result.opt_state.scale)
    assert 1.0 <= scale < 2.0**40
    assert _all_finite((result.params, result.opt_state))
    assert np.isfinite(result.history["loss"]).all()
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_bfloat16_with_state_keeps_the_state_and_params_float32():
    model = core.serial(layers.Dense(8), layers.BatchNorm(), layers.Dense(2))
    _, params, state = model.init_with_state(jax.random.key(0), (-1, 3))
    opt = optax.sgd(0.1)
    step = train_step_with_state(model, losses.softmax_cross_entropy, opt, precision="bfloat16")
    x, y = jnp.ones((4, 3)), jnp.array([0, 1, 0, 1])
    params, state, _, logs = step(params, state, opt.init(params), (x, y))
    assert _leaves_dtypes((params, state)) == {"float32"}
    assert logs["loss"].dtype == jnp.float32


def test_no_precision_compiles_the_same_step_as_before():
    model, params, x, y = _mlp_setup()
    opt = optax.adam(1e-3)
    args = (params, opt.init(params), (x[:8], y[:8]), None)
    plain = train_step(model.apply, losses.softmax_cross_entropy, opt)
    none = train_step(model.apply, losses.softmax_cross_entropy, opt, precision=None)
    assert none.lower(*args).as_text() == plain.lower(*args).as_text()
    mixed = train_step(model.apply, losses.softmax_cross_entropy, opt, precision="bfloat16")
    assert "bf16" in mixed.lower(*args).as_text()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m, o: train_step(m.apply, losses.softmax_cross_entropy, o, precision="fp8"),
         "train_step: precision must be one of"),
        (lambda m, o: train_step_with_state(m, losses.softmax_cross_entropy, o, precision="x"),
         "train_step_with_state: precision must be one of"),
        (lambda m, o: Precision("half"), "Precision: compute must be one of"),
        (lambda m, o: Precision("float16", loss_scale=0.5), "Precision: loss_scale"),
        (lambda m, o: Precision("float16", growth_interval=0), "Precision: growth_interval"),
    ],
)  # fmt: skip
def test_a_bad_policy_is_a_clear_error(make, message):
    model, _, _, _ = _mlp_setup()
    with pytest.raises(ValueError, match=message):
        make(model, optax.sgd(0.1))


def test_fit_names_its_precision_argument():
    model, params, x, y = _mlp_setup()
    with pytest.raises(ValueError, match="fit: precision must be one of .*'float64'"):
        fit(model, params, x, y, epochs=1, precision="float64")
    with pytest.raises(TypeError, match="fit: precision must be a Precision"):
        fit(model, params, x, y, epochs=1, precision=16)


def test_float16_resumes_its_loss_scale_from_a_checkpoint(tmp_path):
    model, params, x, y = _mlp_setup()
    policy = Precision("float16", loss_scale=2.0**40, growth_interval=10_000)
    args = dict(optimizer=optax.adam(1e-2), batch_size=32, precision=policy)
    whole = fit(model, params, x, y, epochs=2, **args)
    fit(model, params, x, y, epochs=1, checkpoint_dir=tmp_path, **args)
    resumed = fit(model, params, x, y, epochs=2, checkpoint_dir=tmp_path, resume=True, **args)
    assert float(resumed.opt_state.scale) == float(whole.opt_state.scale) < 2.0**40
    same = jax.tree_util.tree_map(np.array_equal, resumed.params, whole.params)
    assert jax.tree_util.tree_all(same)
