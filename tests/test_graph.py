"""The computational graph: forward values and backward partials of every node."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import graph, losses


def classic(w0, x0, w1, x1, b):
    return 1 / (1 + jnp.exp(-(w0 * x0 + w1 * x1 + b)))


CLASSIC_ARGS = (2.0, -1.0, -3.0, -2.0, -3.0)


@pytest.fixture(scope="module")
def classic_graph():
    return graph.trace(classic, *CLASSIC_ARGS)


def test_classic_example_values_and_partials(classic_graph):
    # the lecture's figure: f = 0.73, and the partials it writes in red under each input
    g = classic_graph
    assert round(float(g.value), 2) == 0.73
    expected = {"w0": -0.20, "x0": 0.39, "w1": -0.39, "x1": -0.59, "b": 0.20}
    for name, partial in expected.items():
        assert round(float(g[name].grad), 2) == partial, name
    values = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "b": -3.0}
    for name, value in values.items():
        assert float(g[name].value) == value


def test_classic_example_intermediate_nodes_by_hand(classic_graph):
    # forward: s = w0·x0 + w1·x1 + b = 1, e = exp(−s), d = 1 + e, f = 1/d
    # backward: ∂f/∂d = −1/d², ∂f/∂e = ∂f/∂d, ∂f/∂(−s) = ∂f/∂e · e, ∂f/∂s = σ(s)(1 − σ(s))
    g = classic_graph
    s, e = 1.0, np.exp(-1.0)
    d = 1 + e
    ops = {n.op: n for n in g.nodes if n.kind == "op"}
    assert float(ops["neg"].value) == pytest.approx(-s)
    assert float(ops["exp"].value) == pytest.approx(e, rel=1e-6)
    assert float(ops["div"].grad) == 1.0
    assert float(ops["exp"].grad) == pytest.approx(-1 / d**2, rel=1e-5)
    assert float(ops["neg"].grad) == pytest.approx(-e / d**2, rel=1e-5)
    sigma = 1 / d
    assert float(g["add_1"].value) == pytest.approx(s)
    assert float(g["add_1"].grad) == pytest.approx(sigma * (1 - sigma), rel=1e-5)
    # a product passes the gradient to each factor times the other factor
    assert float(g["mul_0"].grad) == pytest.approx(sigma * (1 - sigma), rel=1e-5)
    assert [n.op for n in g.nodes if n.kind == "op"] == [
        "mul", "mul", "add", "add", "neg", "exp", "add", "div",
    ]  # fmt: skip


def test_classic_example_input_partials_equal_jax_grad(classic_graph):
    auto = jax.grad(classic, argnums=(0, 1, 2, 3, 4))(*CLASSIC_ARGS)
    for a, node in zip(auto, classic_graph.inputs):
        assert float(node.grad) == pytest.approx(float(a), rel=1e-6)
    np.testing.assert_allclose(classic_graph.arg_grads, auto, rtol=1e-6)


def test_pytree_inputs_and_inlined_calls_match_jax_grad():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 1)), jnp.float32), "b": jnp.zeros(1)}
    x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, size=6))

    def loss(params, x, y):
        return losses.binary_cross_entropy(x @ params["w"] + params["b"], y)

    g = graph.trace(loss, params, x, y)
    assert float(g.value) == pytest.approx(float(loss(params, x, y)), rel=1e-6)
    grads = g.arg_grads
    auto = jax.grad(loss, argnums=(0, 1))(params, x, y)
    np.testing.assert_allclose(grads[0]["w"], auto[0]["w"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads[0]["b"], auto[0]["b"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads[1], auto[1], rtol=1e-5, atol=1e-7)
    assert grads[2] is None  # integer labels have no partial
    assert g["params['w']"].shape == (3, 1)
    assert not {"pjit", "jit", "closed_call"} & {n.op for n in g.nodes}


def test_custom_jvp_functions_stay_one_node():
    g = graph.trace(lambda x: jnp.sum(jax.nn.relu(x) * 3.0), jnp.array([-1.0, 2.0]))
    relu = [n for n in g.nodes if n.op == "relu"]
    assert len(relu) == 1
    np.testing.assert_allclose(g["x"].grad, [0.0, 3.0])
    np.testing.assert_allclose(relu[0].grad, [3.0, 3.0])


def test_nonscalar_output_is_summed_and_multiple_outputs_rejected():
    g = graph.trace(lambda x: x * x, jnp.array([1.0, -2.0]))
    np.testing.assert_allclose(g["x"].grad, [2.0, -4.0])
    with pytest.raises(ValueError, match="single array"):
        graph.trace(lambda x: (x, x), 1.0)


def test_table_and_dot(classic_graph):
    table = classic_graph.table()
    assert table.splitlines()[0].split()[:3] == ["node", "op", "inputs"]
    assert "0.7311" in table and "-0.1966" in table
    dot = classic_graph.to_dot()
    assert dot.startswith("digraph") and dot.count("->") == 14  # 8 operations reading 14 operands
    assert 'color="darkgreen">0.73' in dot and 'color="red">-0.20' in dot


def test_drawing_png_and_svg(classic_graph, tmp_path):
    pytest.importorskip("matplotlib")
    png = classic_graph.draw(tmp_path / "g.png")
    svg = classic_graph.draw(tmp_path / "g.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert "<svg" in text and png.stat().st_size > 5000
