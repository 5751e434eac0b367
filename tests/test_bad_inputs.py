"""Bad inputs across the public API: a clear ValueError / TypeError naming the argument.

Every case runs in a working folder holding one checkpoint, ``ck.npz``, and must leave no
file behind and that checkpoint untouched.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnn import checkpoint, core, data, initializers, layers, losses, models, train

KEY = jax.random.key(0)
X = np.zeros((8, 2), np.float32)
Y = np.zeros(8, np.int32)
NET = models.mlp([4, 2])
PARAMS = NET.init(KEY, (-1, 2))[1]
DENSE_PARAMS = layers.Dense(3).init(KEY, (-1, 2))[1]


def _fit(**kw):
    args = {"epochs": 1, "progress": False, **kw}
    x, y = args.pop("x", X), args.pop("y", Y)
    return train.fit(args.pop("model", NET), args.pop("params", PARAMS), x, y, **args)


def _without(tree, name):
    return {k: v for k, v in tree.items() if k != name}


def _with_leaf(tree, path, value):
    """A copy of the params ``tree`` with the leaf at ``path`` (keys) replaced."""
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _with_leaf(tree[path[0]], path[1:], value)}


LOGREG = models.logistic_regression()
LOGREG_PARAMS = LOGREG.init(KEY, (-1, 2))[1]
NAN_PARAMS = _with_leaf(PARAMS, ("output", "b"), jnp.full(2, jnp.nan))


# (id, call, expected error, a pattern of the message naming the argument)
CASES = [
    # core
    (
        "serial_not_a_layer",
        lambda: core.serial(layers.Dense(2), layers.Tanh),
        TypeError,
        "child 1 is not a Layer.*parentheses",
    ),
    (
        "serial_duplicate_names",
        lambda: core.serial(core.named("h", layers.Dense(2)), core.named("h", layers.Dense(2))),
        ValueError,
        "names must be unique.*'h'",
    ),
    ("named_empty", lambda: core.named("", layers.Dense(2)), ValueError, "named: name"),
    ("named_slash", lambda: core.named("a/b", layers.Dense(2)), ValueError, "named: name"),
    ("named_not_layer", lambda: core.named("h", 3), TypeError, "expected a Layer"),
    ("fanout_zero", lambda: core.fanout(0), ValueError, "fanout: n must"),
    ("residual_empty", lambda: core.residual(), ValueError, "residual: needs at least one layer"),
    (
        "residual_shape",
        lambda: core.residual(layers.Dense(3)).init(KEY, (-1, 2)),
        ValueError,
        r"residual: x \+ f\(x\)",
    ),
    (
        "parallel_arity",
        lambda: core.parallel(layers.Dense(2), layers.Dense(2)).init(KEY, (-1, 2)),
        ValueError,
        "parallel: input_shape must be a tuple of 2 input shapes",
    ),
    ("serial_params_not_dict", lambda: NET.apply([1, 2], X), TypeError, "params must be a dict"),
    (
        "serial_params_extra_key",
        lambda: NET.apply({**PARAMS, "hidden_9": {}}, X),
        ValueError,
        r"params has keys \['hidden_9'\]",
    ),
    (
        "serial_params_missing_child",
        lambda: NET.apply(_without(PARAMS, "output"), X),
        ValueError,
        "output: .*params",
    ),
    # layers
    ("dense_out_zero", lambda: layers.Dense(0), ValueError, "Dense: out must be a positive int"),
    ("dense_out_float", lambda: layers.Dense(2.5), ValueError, "Dense: out must be a positive int"),
    (
        "dense_w_init_name",
        lambda: layers.Dense(3, w_init="nope"),
        ValueError,
        "w_init: unknown initializer 'nope'",
    ),
    (
        "dense_w_init_type",
        lambda: layers.Dense(3, w_init=5),
        TypeError,
        "w_init: expected an initializer",
    ),
    ("dense_unknown_width", lambda: layers.Dense(3).init(KEY, (-1, -1)), ValueError, "input width"),
    (
        "dense_input_shape_type",
        lambda: layers.Dense(3).init(KEY, "2"),
        TypeError,
        "input_shape must be a tuple",
    ),
    ("dense_input_rank", lambda: layers.Dense(3).init(KEY, ()), ValueError, "rank >= 1"),
    (
        "dense_apply_width",
        lambda: layers.Dense(3).apply(DENSE_PARAMS, jnp.ones((4, 5))),
        ValueError,
        "last axis has size 2",
    ),
    (
        "dense_params_missing_w",
        lambda: layers.Dense(3).apply({"b": jnp.ones(3)}, jnp.ones((4, 2))),
        ValueError,
        r"Dense\(3\): params must hold \['w', 'b'\].*missing 'w'",
    ),
    (
        "dense_bias_would_broadcast",
        lambda: layers.Dense(3).apply(_with_leaf(DENSE_PARAMS, ("b",), jnp.ones(1)), X),
        ValueError,
        r"Dense\(3\): params\['b'\] must have shape \(3,\), got shape \(1,\)",
    ),
    (
        "dense_bias_missing",
        lambda: layers.Dense(3).apply(_without(DENSE_PARAMS, "b"), X),
        ValueError,
        r"Dense\(3\): params must hold \['w', 'b'\].*missing 'b'",
    ),
    (
        "dense_bias_unexpected",
        lambda: layers.Dense(3, use_bias=False).apply(DENSE_PARAMS, X),
        ValueError,
        r"Dense\(3\): params must hold \['w'\].*unexpected 'b'",
    ),
    (
        "dense_params_integer",
        lambda: layers.Dense(3).apply(_with_leaf(DENSE_PARAMS, ("w",), jnp.ones((2, 3), int)), X),
        TypeError,
        r"Dense\(3\): params\['w'\] must be a floating-point array",
    ),
    (
        "dense_input_complex",
        lambda: layers.Dense(3).apply(DENSE_PARAMS, X.astype(np.complex64)),
        TypeError,
        r"Dense\(3\): inputs: expected real arrays",
    ),
    (
        "dense_key_type",
        lambda: layers.Dense(3).init("seed", (-1, 2)),
        TypeError,
        r"Dense\(3\): key: expected a jax.random key or an int seed",
    ),
    (
        "tanh_params",
        lambda: layers.Tanh().apply(DENSE_PARAMS, X),
        ValueError,
        r"Tanh\(\): this layer has no params",
    ),
    (
        "layer_norm_scale_shape",
        lambda: layers.LayerNorm().apply({"scale": jnp.ones(1), "offset": jnp.zeros(2)}, X),
        ValueError,
        r"LayerNorm\(\): params\['scale'\] must have shape \(2,\)",
    ),
    (
        "conv_kernel_float",
        lambda: layers.Conv(4, 3.0),
        ValueError,
        r"Conv\(4, 3\.0\): kernel must be an int",
    ),
    ("dropout_rate_one", lambda: layers.Dropout(1.0), ValueError, "Dropout: rate"),
    ("dropout_rate_str", lambda: layers.Dropout("0.5"), ValueError, "Dropout: rate"),
    (
        "dropout_needs_key",
        lambda: layers.Dropout(0.5).apply({}, X, train=True),
        ValueError,
        "needs a PRNG key",
    ),
    ("leaky_slope", lambda: layers.LeakyRelu("a"), TypeError, "negative_slope"),
    # initializers
    ("normal_stddev", lambda: initializers.normal(0.0), ValueError, "normal: stddev"),
    (
        "get_type",
        lambda: initializers.get(3, argument="b_init"),
        TypeError,
        "b_init: expected an initializer",
    ),
    # losses
    (
        "mse_shapes",
        lambda: losses.mse(jnp.ones(3), jnp.ones(4)),
        ValueError,
        "mse: predictions of shape .* targets",
    ),
    (
        "bce_shapes",
        lambda: losses.binary_cross_entropy(jnp.ones((4, 2)), jnp.ones(4)),
        ValueError,
        "binary_cross_entropy: logits of shape .* labels",
    ),
    (
        "sce_label_shape",
        lambda: losses.softmax_cross_entropy(jnp.ones((4, 3)), jnp.zeros((4, 2), jnp.int32)),
        ValueError,
        "integer labels must have shape",
    ),
    (
        "sce_label_range",
        lambda: losses.softmax_cross_entropy(jnp.ones((2, 3)), jnp.array([0, 5])),
        ValueError,
        r"labels must be in \[0, 3\)",
    ),
    (
        "sce_onehot_shape",
        lambda: losses.softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 4))),
        ValueError,
        "one-hot targets",
    ),
    (
        "bce_label_two",
        lambda: losses.binary_cross_entropy(jnp.zeros(3), jnp.array([0.0, 1.0, 2.0])),
        ValueError,
        r"binary_cross_entropy: labels must be in \[0, 1\]",
    ),
    (
        "bce_probs_outside",
        lambda: losses.binary_cross_entropy_from_probs(jnp.array([1.2]), jnp.array([1.0])),
        ValueError,
        r"binary_cross_entropy_from_probs: probs must be in \[0, 1\]",
    ),
    (
        "sce_targets_not_distribution",
        lambda: losses.softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 3))),
        ValueError,
        "softmax_cross_entropy: targets must be rows of probabilities",
    ),
    ("mse_empty", lambda: losses.mse(jnp.ones(0), jnp.ones(0)), ValueError, "mse: got empty"),
    (
        "accuracy_empty",
        lambda: losses.accuracy(jnp.ones((0, 3)), jnp.zeros(0, jnp.int32)),
        ValueError,
        "accuracy: got empty arrays",
    ),
    (
        "accuracy_label_range",
        lambda: losses.accuracy(jnp.ones((2, 3)), jnp.array([0, 3])),
        ValueError,
        r"accuracy: labels must be in \[0, 3\)",
    ),
    (
        "accuracy_shapes",
        lambda: losses.accuracy(jnp.ones((4, 3)), jnp.zeros(5, jnp.int32)),
        ValueError,
        "accuracy: labels of shape",
    ),
    # models
    ("mlp_empty", lambda: models.mlp([]), ValueError, "mlp: sizes"),
    ("mlp_size_zero", lambda: models.mlp([4, 0]), ValueError, "mlp: every size"),
    (
        "mlp_activation",
        lambda: models.mlp([4, 2], activation="swish"),
        ValueError,
        "mlp: activation",
    ),
    ("mlp_head", lambda: models.mlp([4, 2], head="tanh"), ValueError, "mlp: head"),
    (
        "mlp_sigmoid_width",
        lambda: models.mlp([4, 2], head="sigmoid"),
        ValueError,
        "sigmoid head has one output",
    ),
    (
        "with_head_name",
        lambda: models.with_head(layers.Dense(2), "bad"),
        ValueError,
        "with_head: head must be one of",
    ),
    ("logreg_d", lambda: models.logistic_regression(0), ValueError, "logistic_regression: d"),
    (
        "logreg_bias_missing",
        lambda: LOGREG.apply(_without(LOGREG_PARAMS, "b"), X),
        ValueError,
        r"logistic_regression\(None\): Dense\(1\): params must hold .*missing 'b'",
    ),
    (
        "logreg_width",
        lambda: models.logistic_regression(3).init(KEY, (-1, 2)),
        ValueError,
        "width 3",
    ),
    # data
    ("xy_lengths", lambda: data.check_xy(X, Y[:5]), ValueError, "same length, got 8 and 5"),
    ("xy_empty", lambda: data.check_xy(X[:0], Y[:0]), ValueError, "dataset is empty"),
    ("xy_scalar", lambda: data.check_xy(1.0, Y), ValueError, "leading example axis"),
    ("xy_objects", lambda: data.check_xy(np.array([None] * 8), Y), TypeError, "numeric arrays"),
    ("split_fraction", lambda: data.train_val_split(X, Y, 1.5), ValueError, "val_fraction"),
    ("batches_size", lambda: list(data.batches(X, Y, 0)), ValueError, "batch_size"),
    ("spirals_n", lambda: data.spirals(1), ValueError, "spirals: n"),
    (
        "as_key_type",
        lambda: data.as_key("seed"),
        TypeError,
        "expected a jax.random key or an int seed",
    ),
    # train
    ("fit_epochs", lambda: _fit(epochs=0), ValueError, "fit: epochs"),
    ("fit_batch_size", lambda: _fit(batch_size=2.5), ValueError, "fit: batch_size"),
    ("fit_patience", lambda: _fit(patience=-1), ValueError, "fit: patience"),
    ("fit_lengths", lambda: _fit(y=Y[:3]), ValueError, "same length"),
    ("fit_empty", lambda: _fit(x=X[:0], y=Y[:0]), ValueError, "dataset is empty"),
    ("fit_monitor", lambda: _fit(monitor="val_loss"), ValueError, "fit: monitor"),
    (
        "fit_validation_pair",
        lambda: _fit(validation_data=(X,)),
        ValueError,
        "validation_data must be a pair",
    ),
    ("fit_labels", lambda: _fit(y=np.full(8, 7, np.int32)), ValueError, "labels in"),
    (
        "fit_input_width",
        lambda: _fit(x=np.zeros((8, 5), np.float32)),
        ValueError,
        "last axis has size 2",
    ),
    (
        "fit_binary_labels",
        lambda: _fit(model=LOGREG, params=LOGREG_PARAMS, y=np.full(8, 2.0, np.float32)),
        ValueError,
        r"fit: y must be in \[0, 1\] for binary_cross_entropy",
    ),
    (
        "fit_validation_labels",
        lambda: _fit(validation_data=(X, np.full(8, 5, np.int32))),
        ValueError,
        r"fit: y_val holds class labels in \[5, 5\]",
    ),
    (
        "fit_metrics_list",
        lambda: _fit(metrics=[losses.accuracy]),
        TypeError,
        "fit: metrics must be a dict of name -> fn",
    ),
    (
        "fit_params_not_finite",
        lambda: _fit(params=NAN_PARAMS),
        ValueError,
        r"fit: the params to train from are not finite: params\['output'\]\['b'\]",
    ),
    (
        "evaluate_batch_size_zero",
        lambda: train.evaluate(NET, PARAMS, X, Y, batch_size=0),
        ValueError,
        "evaluate: batch_size",
    ),
    ("fit_optimizer", lambda: _fit(optimizer="adam"), TypeError, "fit: optimizer"),
    ("fit_loss", lambda: _fit(loss=3), TypeError, "fit: loss"),
    (
        "fit_no_loss",
        lambda: train.fit(layers.Dense(2).apply, DENSE_PARAMS, X, Y),
        ValueError,
        "pass loss=",
    ),
    ("fit_key", lambda: _fit(key="seed"), TypeError, "fit: key"),
    (
        "fit_params_structure",
        lambda: _fit(params=_without(PARAMS, "hidden_0")),
        ValueError,
        "hidden_0: .*params",
    ),
    ("fit_on_nonfinite", lambda: _fit(on_nonfinite="warn"), ValueError, "fit: on_nonfinite"),
    ("fit_resume_no_dir", lambda: _fit(resume=True), ValueError, "need a checkpoint_dir"),
    (
        "fit_every_zero",
        lambda: _fit(checkpoint_dir="run", checkpoint_every=0),
        ValueError,
        "fit: checkpoint_every",
    ),
    (
        "fit_keep_zero",
        lambda: _fit(checkpoint_dir="run", keep_checkpoints=0),
        ValueError,
        "fit: keep_checkpoints",
    ),
    ("fit_dir_type", lambda: _fit(checkpoint_dir=3), TypeError, "fit: checkpoint_dir"),
    (
        "fit_dir_is_file",
        lambda: _fit(checkpoint_dir="ck.npz"),
        ValueError,
        "'ck.npz' is not a folder",
    ),
    ("fit_resume_type", lambda: _fit(checkpoint_dir="run", resume="yes"), TypeError, "fit: resume"),
    (
        "train_step_optimizer",
        lambda: train.train_step(NET.apply, losses.mse, None),
        TypeError,
        "train_step: optimizer",
    ),
    (
        "evaluate_no_loss",
        lambda: train.evaluate(layers.Dense(2).apply, DENSE_PARAMS, X, Y),
        ValueError,
        "evaluate: pass loss=",
    ),
    # checkpoint
    ("save_path_type", lambda: checkpoint.save(3, {"w": jnp.zeros(2)}), TypeError, "save: path"),
    (
        "save_leaf_str",
        lambda: checkpoint.save("ck.npz", {"w": "abc"}),
        TypeError,
        r"tree leaf \['w'\]",
    ),
    (
        "save_leaf_object",
        lambda: checkpoint.save("ck.npz", [np.array([{}])]),
        TypeError,
        r"tree leaf \[0\] has dtype object",
    ),
    (
        "save_meta",
        lambda: checkpoint.save("ck.npz", {}, meta={"f": print}),
        TypeError,
        "meta must be JSON",
    ),
    (
        "save_meta_type",
        lambda: checkpoint.save("ck.npz", {}, meta=[1]),
        TypeError,
        "meta must be a mapping",
    ),
    (
        "save_folder",
        lambda: checkpoint.save(os.path.join("missing", "ck.npz"), {}),
        ValueError,
        "folder 'missing' does not exist",
    ),
    ("load_path_type", lambda: checkpoint.load(b"ck.npz"), TypeError, "load: path"),
    (
        "load_like_leaf",
        lambda: checkpoint.load("ck.npz", like={"w": "abc"}),
        TypeError,
        r"like's leaf \['w'\]",
    ),
    (
        "load_like_shape",
        lambda: checkpoint.load("ck.npz", like={"w": jnp.zeros(3)}),
        ValueError,
        r"\['w'\] has shape \(2,\).*like expects \(3,\)",
    ),
    (
        "load_like_structure",
        lambda: checkpoint.load("ck.npz", like=(jnp.zeros(2),)),
        ValueError,
        r"no entry \[0\] that like expects",
    ),
    ("load_meta_path", lambda: checkpoint.load_meta(None), TypeError, "load_meta: path"),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_named_and_leaves_no_file(tmp_path, monkeypatch, call, error, pattern):
    monkeypatch.chdir(tmp_path)
    saved = checkpoint.save("ck.npz", {"w": jnp.zeros(2)}).read_bytes()
    with pytest.raises(error, match=pattern) as info:
        call()
    assert type(info.value) in (ValueError, TypeError)  # not a subclass from deep inside
    assert os.listdir(tmp_path) == ["ck.npz"]
    assert (tmp_path / "ck.npz").read_bytes() == saved


def test_the_table_is_large_and_covers_every_module():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)
    text = " ".join(" ".join(c[1].__code__.co_names) for c in CASES)
    for module in (
        "core",
        "layers",
        "losses",
        "models",
        "train",
        "data",
        "initializers",
        "checkpoint",
    ):
        assert module in text


def test_the_fit_helper_accepts_good_arguments():
    # a control for the table: the fit cases fail on their bad argument alone
    result = _fit(optimizer=optax.sgd(0.1))
    assert result.epochs_run == 1
