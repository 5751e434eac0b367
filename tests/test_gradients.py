"""Hand-derived gradients against jax.grad, and finite-difference checks of every layer.

The whole module runs in float64 (a module-scoped ``jax.enable_x64`` that is undone after
it), so that formulas and automatic gradients can be compared to 1e-10.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcnn import core, functional, inspect, layers, losses, models
from funcnn.gradients import (
    GradCheckError,
    check_grads,
    compare,
    per_example,
    reference,
)

TOL = dict(rtol=1e-10, atol=1e-10)
# every example compiles both sides once (jit), so a few examples cover many shapes fast
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)
CONV_SETTINGS = settings(max_examples=5, deadline=None, derandomize=True)


@pytest.fixture(autouse=True, scope="module")
def float64():
    with jax.enable_x64(True):
        yield


def _rng(seed):
    return np.random.default_rng(seed)


def _dense_params(rng, d, k):
    return {"w": jnp.asarray(rng.normal(size=(d, k))), "b": jnp.asarray(rng.normal(size=k))}


def _close(auto, ref):
    for a, r in zip(jax.tree_util.tree_leaves(auto), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), **TOL)


def test_float64_is_on_in_this_module():
    assert jnp.zeros(1).dtype == jnp.float64


# --------------------------------------------------------------- reference formulas


@SETTINGS
@given(n=st.integers(1, 6), d=st.integers(1, 5), k=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_linear_regression_matches_grad(n, d, k, seed):
    rng = _rng(seed)
    params, x = _dense_params(rng, d, k), jnp.asarray(rng.normal(size=(n, d)))
    y = jnp.asarray(rng.normal(size=(n, k)))

    def loss(p):
        return losses.mse(functional.dense(x, p["w"], p["b"]), y)

    ref_loss, ref = jax.jit(reference.linear_regression)(params, x, y)
    auto_loss, auto = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(ref_loss, auto_loss, **TOL)
    _close(auto, ref)


@SETTINGS
@given(n=st.integers(1, 6), d=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_logistic_regression_matches_grad(n, d, seed):
    rng = _rng(seed)
    model = models.logistic_regression(d)
    params, x = _dense_params(rng, d, 1), jnp.asarray(rng.normal(size=(n, d)))
    y = jnp.asarray(rng.integers(0, 2, size=n))

    def loss(p):
        return model.loss(model.apply(p, x), y)

    ref_loss, ref = jax.jit(reference.logistic_regression)(params, x, y)
    auto_loss, auto = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(ref_loss, auto_loss, **TOL)
    _close(auto, ref)


@SETTINGS
@given(n=st.integers(1, 6), d=st.integers(1, 5), c=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_softmax_regression_matches_grad(n, d, c, seed):
    rng = _rng(seed)
    params, x = _dense_params(rng, d, c), jnp.asarray(rng.normal(size=(n, d)))
    y = jnp.asarray(rng.integers(0, c, size=n))

    def loss(p, y):
        return losses.softmax_cross_entropy(functional.dense(x, p["w"], p["b"]), y)

    ref_loss, ref = jax.jit(reference.softmax_regression)(params, x, y)
    auto_loss, auto = jax.jit(jax.value_and_grad(loss))(params, y)
    np.testing.assert_allclose(ref_loss, auto_loss, **TOL)
    _close(auto, ref)


@SETTINGS
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 4),
    h=st.integers(1, 6),
    c=st.integers(2, 4),
    activation=st.sampled_from(["tanh", "relu"]),
    seed=st.integers(0, 2**16),
)
def test_mlp_backprop_matches_grad(n, d, h, c, activation, seed):
    rng = _rng(seed)
    model = models.mlp([h, c], activation)
    params = {"hidden_0": _dense_params(rng, d, h), "output": _dense_params(rng, h, c)}
    x, y = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.integers(0, c, size=n))

    def loss(p, y):
        return model.loss(model.apply(p, x), y)

    ref_loss, ref = jax.jit(reference.mlp, static_argnums=3)(params, x, y, activation)
    auto_loss, auto = jax.jit(jax.value_and_grad(loss))(params, y)
    np.testing.assert_allclose(ref_loss, auto_loss, **TOL)
    assert compare(auto, ref, rtol=1e-10, atol=1e-10, file=None).ok
    _close(auto, ref)


def _lax_conv(x, w, b, stride, padding):
    """The layer op the formulas are checked against: ``funcnn.functional.conv2d`` when the
    library has it, otherwise ``lax.conv_general_dilated`` in NHWC / HWIO."""
    if hasattr(functional, "conv2d"):
        return functional.conv2d(x, w, b, stride, padding)
    pads = padding if isinstance(padding, str) else reference.conv_padding(padding, 0, 0, 0)
    y = jax.lax.conv_general_dilated(x, w, stride, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b


PADDINGS = st.one_of(
    st.sampled_from(["VALID", "SAME"]),
    st.integers(0, 2),
    st.tuples(
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
    ),
)


@CONV_SETTINGS
@given(
    n=st.integers(1, 2),
    hw=st.tuples(st.integers(3, 7), st.integers(3, 7)),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=PADDINGS,
    seed=st.integers(0, 2**16),
)
def test_conv2d_gradients_match_vjp(n, hw, c, o, k, stride, padding, seed):
    rng = _rng(seed)
    x = jnp.asarray(rng.normal(size=(n, *hw, c)))
    w, b = jnp.asarray(rng.normal(size=(*k, c, o))), jnp.asarray(rng.normal(size=o))
    y = _lax_conv(x, w, b, stride, padding)
    upstream = jnp.asarray(rng.normal(size=y.shape))

    @jax.jit
    def auto(x, w, b, upstream):
        return jax.vjp(lambda x, w, b: _lax_conv(x, w, b, stride, padding), x, w, b)[1](upstream)

    @jax.jit
    def ref(x, w, b, upstream):
        g = reference.conv2d(x, w, b, upstream, stride, padding)
        return reference.conv2d_forward(x, w, b, stride, padding), (g["x"], g["w"], g["b"])

    ref_y, ref_grads = ref(x, w, b, upstream)
    np.testing.assert_allclose(ref_y, y, **TOL)
    _close(auto(x, w, b, upstream), ref_grads)


def _lax_max_pool(x, window, stride):
    if hasattr(functional, "max_pool"):
        return functional.max_pool(x, window, stride)
    dims, strides = (1, *window, 1), (1, *stride, 1)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, "VALID")


@CONV_SETTINGS
@given(
    n=st.integers(1, 2),
    hw=st.tuples(st.integers(2, 7), st.integers(2, 7)),
    c=st.integers(1, 3),
    window=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_max_pool_gradient_goes_to_argmax(n, hw, c, window, stride, seed):
    window = (min(window[0], hw[0]), min(window[1], hw[1]))
    rng = _rng(seed)
    x = jnp.asarray(rng.normal(size=(n, *hw, c)))
    y = _lax_max_pool(x, window, stride)
    upstream = jnp.asarray(rng.normal(size=y.shape))

    @jax.jit
    def auto(x, upstream):
        return jax.vjp(lambda x: _lax_max_pool(x, window, stride), x)[1](upstream)[0]

    @jax.jit
    def ref(x, upstream):
        forward = reference.max_pool_forward(x, window, stride)
        return forward, reference.max_pool(x, upstream, window, stride)

    ref_y, ref_dx = ref(x, upstream)
    np.testing.assert_allclose(ref_y, y, **TOL)
    _close(auto(x, upstream), ref_dx)


def test_max_pool_routes_to_the_maximum_by_hand():
    x = jnp.array([[1.0, 5.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)
    dx = reference.max_pool(x, jnp.full((1, 1, 1, 1), 7.0), 2)
    assert dx[0, :, :, 0].tolist() == [[0.0, 7.0], [0.0, 0.0]]


def test_conv2d_reference_rejects_bad_shapes():
    x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2))
    with pytest.raises(ValueError, match="upstream"):
        reference.conv2d(x, w, None, jnp.ones((1, 3, 3, 2)))
    with pytest.raises(ValueError, match="padding"):
        reference.conv2d(x, w, None, jnp.ones((1, 2, 2, 2)), padding="FULL")
    with pytest.raises(ValueError, match="stride"):
        reference.conv2d(x, w, None, jnp.ones((1, 2, 2, 2)), stride=0)


def test_mlp_reference_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        reference.mlp({}, jnp.ones((1, 1)), jnp.zeros(1, int), "sigmoid")


# ---------------------------------------------------------------------- check_grads


def _generic_case(ctor):
    """Build an unlisted layer (one added later) from a few common constructor calls."""
    for call in ((), (2,), (3, 2), (2, 2)):
        for shape in ((2, 4), (2, 6, 6, 3)):
            try:
                layer = ctor(*call)
                layer.init(jax.random.key(0), shape)
                return layer, shape
            except (TypeError, ValueError):
                continue
    return None


LAYER_CASES = {
    "Dense": (layers.Dense(3), (4, 5)),
    "Identity": (layers.Identity(), (4, 5)),
    "Tanh": (layers.Tanh(), (4, 5)),
    "Relu": (layers.Relu(), (4, 5)),
    "Sigmoid": (layers.Sigmoid(), (4, 5)),
    "Softmax": (layers.Softmax(), (4, 5)),
    "LogSoftmax": (layers.LogSoftmax(), (4, 5)),
    "Gelu": (layers.Gelu(), (4, 5)),
    "LeakyRelu": (layers.LeakyRelu(0.1), (4, 5)),
    "Dropout": (layers.Dropout(0.3), (4, 5)),
    "serial": (core.serial(layers.Dense(4), layers.Tanh(), layers.Dense(2)), (3, 5)),
    "residual": (core.residual(layers.Dense(5), layers.Tanh()), (3, 5)),
    "residual_shortcut": (core.residual(layers.Dense(3), shortcut=layers.Dense(3)), (3, 5)),
    "parallel": (
        core.serial(
            core.fanout(2),
            core.parallel(layers.Dense(3), layers.Sigmoid()),
            core.fanin_concat(),
        ),
        (3, 5),
    ),
    "fanin_sum": (
        core.serial(
            core.fanout(2), core.parallel(layers.Dense(5), layers.Tanh()), core.fanin_sum()
        ),
        (3, 5),
    ),
    "mlp": (models.mlp([6, 3], "tanh"), (4, 2)),
    "logistic_regression": (models.logistic_regression(3), (4, 3)),
    "Conv1D": (layers.Conv1D(3, 2, stride=2, padding=1), (2, 7, 2)),
    "Conv3D": (layers.Conv3D(2, 2, padding="SAME"), (1, 3, 4, 3, 2)),
    "ConvTranspose": (
        layers.ConvTranspose(2, (3,), stride=2, padding=1, output_padding=1),
        (2, 4, 3),
    ),
    "SimpleRNN": (layers.SimpleRNN(3), (2, 4, 2)),
    "LSTM": (layers.LSTM(3), (2, 4, 2)),
    "GRU": (layers.GRU(3, return_sequence=False), (2, 4, 2)),
    "MultiHeadAttention": (layers.MultiHeadAttention(2, causal=True, dropout=0.2), (2, 4, 4)),
    # ids from the float inputs, |x| rounded down: ∂ids/∂x = 0 on both sides of the check
    "Embedding": (
        core.serial(
            layers.elementwise(lambda x: jnp.floor(3 * jnp.abs(x)).astype(int) % 5, "ids"),
            layers.Embedding(5, 3),
        ),
        (4, 3),
    ),
}


def _cases():
    cases = dict(LAYER_CASES)
    for name in layers.__all__:
        ctor = getattr(layers, name)
        if name == "elementwise" or name in cases or not callable(ctor):
            continue
        cases[name] = _generic_case(ctor)
    return cases


@pytest.mark.parametrize("name", sorted(_cases()))
def test_check_grads_passes_on_every_layer(name):
    case = _cases()[name]
    assert case is not None, f"add a check_grads case for layers.{name}"
    layer, shape = case
    _, params, state = layer.init_with_state(jax.random.key(1), shape)
    rng = _rng(len(name))
    x = jnp.asarray(rng.normal(size=shape))
    key = jax.random.key(2)

    def f(p, x):  # the state form: a stateful layer (BatchNorm) in training mode too
        return layer.apply_with_state(p, state, x, key=key, train=True)[0]

    report = check_grads(f, (params, x), argnums=(0, 1), max_elements=24)
    assert report.ok, str(report)
    paths = {r.path for r in report.rows}
    assert any(p.startswith("arg1") for p in paths)
    n_param_leaves = len(jax.tree_util.tree_leaves(params))
    assert len(paths) == n_param_leaves + 1


def test_check_grads_on_a_model_loss_names_its_leaves():
    model = models.mlp([4, 3], "relu")
    _, params = model.init(jax.random.key(0), (-1, 2))
    rng = _rng(0)
    x, y = jnp.asarray(rng.normal(size=(6, 2))), jnp.asarray(rng.integers(0, 3, size=6))
    report = check_grads(lambda p, y: model.loss(model.apply(p, x), y), (params, y))
    assert report.ok, str(report)
    assert {r.path for r in report.rows} == {"hidden_0/w", "hidden_0/b", "output/w", "output/b"}
    assert {r.mode for r in report.rows} == {"grad", "vjp", "jvp"}
    assert report.abs_error < 1e-7


def _wrong_square():
    @jax.custom_vjp
    def square(x):
        return x**2

    def fwd(x):
        return x**2, x

    def bwd(x, g):  # the true derivative is 2x
        return (3.0 * x * g,)

    square.defvjp(fwd, bwd)
    return square


def test_check_grads_fails_on_a_wrong_custom_vjp_and_names_the_leaf():
    square = _wrong_square()
    params = {
        "dense": {"w": jnp.ones((2, 2)) * 0.3, "b": jnp.zeros(2)},
        "scale": {"s": jnp.ones(2)},
    }
    x = jnp.array([[1.0, -2.0]])

    def f(p):
        h = jnp.tanh(x @ p["dense"]["w"] + p["dense"]["b"])
        return jnp.sum(h * square(p["scale"]["s"]))

    report = check_grads(f, (params,))
    assert not report.ok
    assert report.worst_path == "scale/s"
    assert report.rel_error > 0.1
    bad = {r.path for r in report.rows if not r.ok}
    assert bad == {"scale/s"}
    assert "jvp" in report.skipped
    with pytest.raises(GradCheckError, match="scale/s"):
        check_grads(f, (params,), raise_on_failure=True)


def test_check_grads_passes_on_a_correct_custom_vjp():
    @jax.custom_vjp
    def square(x):
        return x**2

    square.defvjp(lambda x: (x**2, x), lambda x, g: (2.0 * x * g,))
    report = check_grads(lambda s: jnp.sum(jnp.sin(square(s))), (jnp.array([0.3, -1.2]),))
    assert report.ok, str(report)


def test_check_grads_non_scalar_output_and_element_report():
    def f(w):
        return jnp.tanh(w * jnp.arange(1.0, 4.0))

    report = check_grads(f, (jnp.array([0.1, 0.2, 0.3]),))
    assert report.ok
    wrong = check_grads(
        lambda w: f(w) + jax.lax.stop_gradient(w[1] ** 2), (jnp.ones(3),), modes=("grad",)
    )
    assert not wrong.ok and wrong.worst_index == (1,)


def test_check_grads_runs_eagerly_what_cannot_be_jitted():
    counts = jnp.array([1, 3])

    def f(w):  # under jit, jnp.max(counts) is traced and int() of it fails
        return jnp.sum(jnp.sin(w) * counts) if int(jnp.max(counts)) > 2 else jnp.sum(w)

    assert check_grads(f, (jnp.array([0.5, 2.0]),)).ok


def test_check_grads_samples_large_leaves():
    report = check_grads(lambda w: jnp.sum(jnp.sin(w)), (jnp.ones(500),), max_elements=10)
    assert report.ok and all(r.checked in (10, 500) for r in report.rows)


def test_check_grads_bad_arguments():
    with pytest.raises(TypeError, match="args"):
        check_grads(jnp.sum, jnp.ones(2))
    with pytest.raises(ValueError, match="argnums"):
        check_grads(jnp.sum, (jnp.ones(2),), argnums=3)
    with pytest.raises(ValueError, match="modes"):
        check_grads(jnp.sum, (jnp.ones(2),), modes=("hessian",))
    with pytest.raises(ValueError, match="float"):
        check_grads(jnp.sum, (jnp.ones(2, int),))


# ------------------------------------------------------------------- compare, per_example


def test_compare_prints_each_leaf_and_flags_disagreement():
    auto = {"a": {"w": jnp.ones(3)}, "b": jnp.zeros(2)}
    out = io.StringIO()
    result = compare(auto, {"a": {"w": jnp.ones(3)}, "b": jnp.array([0.0, 1e-3])}, file=out)
    text = out.getvalue()
    assert "a/w" in text and "b" in text and "NO" in text
    assert not result.ok and result.max_abs == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="different leaves"):
        compare(auto, {"a": {"w": jnp.ones(3)}}, file=None)


def test_per_example_gradients_match_one_at_a_time():
    rng = _rng(3)
    params = _dense_params(rng, 3, 1)
    x, y = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.integers(0, 2, size=5))
    model = models.logistic_regression(3)

    def loss(p, batch):
        return model.loss(model.apply(p, batch[0]), batch[1])

    grads = per_example(loss, params, (x, y))
    assert grads["w"].shape == (5, 3, 1) and grads["b"].shape == (5, 1)
    for i in range(5):
        _, ref = reference.logistic_regression(params, x[i : i + 1], y[i : i + 1])
        _close({"w": grads["w"][i], "b": grads["b"][i]}, ref)
    _, full = reference.logistic_regression(params, x, y)
    _close(jax.tree_util.tree_map(lambda g: g.mean(0), grads), full)
    with pytest.raises(ValueError, match="leading"):
        per_example(loss, params, (x, y[:3]))


# ------------------------------------------------------------------------ grad_norms


def test_grad_norms_are_the_norms_of_the_hand_derived_gradients():
    rng = _rng(4)
    model = models.mlp([5, 3], "tanh")
    params = {"hidden_0": _dense_params(rng, 2, 5), "output": _dense_params(rng, 5, 3)}
    x, y = jnp.asarray(rng.normal(size=(7, 2))), jnp.asarray(rng.integers(0, 3, size=7))
    norms = inspect.grad_norms(lambda p, b: model.loss(model.apply(p, b[0]), b[1]), params, (x, y))
    _, ref = reference.mlp(params, x, y, "tanh")
    assert list(norms) == ["hidden_0", "output"]
    for name in norms:
        expected = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in ref[name].values()))
        assert norms[name] == pytest.approx(expected, rel=1e-10)


def test_layer_paths_keep_the_network_order():
    net = core.serial(*[layers.Dense(2) for _ in range(12)])
    _, params = net.init(jax.random.key(0), (-1, 2))
    assert inspect.layer_paths(params) == [f"dense_{i}" for i in range(12)]
