"""Where funcnn's CPU tuning applies, and the switch that turns it off.

The CPU formulations of ``conv2d`` and ``max_pool`` (tests/test_cpu_fast_paths.py) are taken
only while ``funcnn.jit`` traces a function, with the tuning on: ``funcnn.graph.trace``,
``jax.make_jaxpr``, ``jax.jit`` and ``jax.export`` see the lecture's ``lax`` ops. Turned off
(``FUNCNN_CPU_TUNING=0`` or ``funcnn.compiler.cpu_tuning(False)``), ``funcnn.jit`` compiles
exactly what ``jax.jit`` does, without funcnn's XLA options.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import optax
import pytest
from jax import lax
from jax.extend import core as jcore

import funcnn as fn
from funcnn import _cpu, compiler, graph, layers, losses, train
from funcnn import functional as F

DISPATCH = {"platform_index", "cond"}  # what lax.platform_dependent leaves in a jaxpr


@pytest.fixture(autouse=True)
def as_the_environment_says():
    """Each test starts from, and leaves, the switch as the environment sets it."""
    _cpu.set_enabled(None)
    yield
    _cpu.set_enabled(None)


@pytest.fixture
def tuning_on():
    with compiler.cpu_tuning(True):
        yield


def primitives(closed) -> set[str]:
    """Every primitive of a jaxpr, those of its sub-jaxprs (jit calls, branches) included."""
    names: set[str] = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, jcore.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jcore.Jaxpr):
                        walk(sub)

    walk(closed.jaxpr)
    return names


def cpu_text(f, *args) -> str:
    return fn.jit(f).trace(*args).lower(lowering_platforms=("cpu",)).as_text()


def conv_case(channels: int):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, channels))
    w = jax.random.normal(jax.random.key(1), (3, 3, channels, 4))
    return x, w


def conv_loss(x, w):
    return jnp.sum(jnp.tanh(F.conv2d(x, w, padding="SAME")) ** 2)


def pool_loss(x):
    return jnp.sum(F.max_pool(x) ** 2)


CHANNELS = [1, 2, 3, 8, 16]

# ------------------------------------------------------- (a) the teaching tools see lax


@pytest.mark.parametrize("channels", CHANNELS)
def test_graph_trace_of_a_convolution_shows_conv_general_dilated(channels, tuning_on):
    x, w = conv_case(channels)
    ops = {n.op for n in graph.trace(conv_loss, x, w).nodes}
    assert "conv_general_dilated" in ops and not ops & DISPATCH
    for f in (conv_loss, jax.grad(conv_loss, (0, 1))):
        names = primitives(jax.make_jaxpr(f)(x, w))
        assert "conv_general_dilated" in names and not names & DISPATCH
        names = primitives(jax.jit(f).trace(x, w).jaxpr)
        assert "conv_general_dilated" in names and not names & DISPATCH


def test_graph_trace_of_max_pool_shows_the_pooling_reduction(tuning_on):
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    ops = {n.op for n in graph.trace(pool_loss, x).nodes}
    assert "reduce_window_max" in ops and not ops & DISPATCH
    for f in (pool_loss, jax.grad(pool_loss)):
        names = primitives(jax.make_jaxpr(f)(x))
        assert not names & DISPATCH
    assert "reduce_window_max" in primitives(jax.make_jaxpr(pool_loss)(x))


@pytest.mark.parametrize("channels", [1, 3])
def test_jax_export_keeps_the_lax_ops(channels, tuning_on):
    from jax import export

    x, w = conv_case(channels)

    def net(x):
        return F.max_pool(F.conv2d(x, w, padding="SAME"))

    def lax_net(x):
        pad = ((1, 1), (1, 1))
        y = lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def ops(f):  # the operations of the program exported for both platforms, by name
        text = export.export(jax.jit(f), platforms=("cpu", "cuda"))(x).mlir_module()
        return sorted(re.findall(r"stablehlo\.\w+", text))

    assert ops(net) == ops(lax_net)
    assert "stablehlo.convolution" in ops(net)


def test_a_jitted_function_inside_gets_its_own_trace(tuning_on):
    """The flag is part of JAX's trace context: an inner ``jax.jit`` is traced anew inside a
    ``funcnn.jit`` program, and its plain trace is never reused there, nor the other way."""
    if not hasattr(jax, "make_user_context"):
        pytest.skip("this JAX has no make_user_context: the traces may be shared")
    x, w = conv_case(1)
    inner = jax.jit(conv_loss)
    assert not primitives(jax.make_jaxpr(inner)(x, w)) & DISPATCH  # plain first
    assert DISPATCH <= primitives(fn.jit(lambda x, w: inner(x, w)).trace(x, w).jaxpr)
    assert not primitives(jax.make_jaxpr(inner)(x, w)) & DISPATCH  # and plain after


# --------------------------------------------------- (b) funcnn.jit on a CPU takes them


@pytest.mark.parametrize("channels", CHANNELS)
def test_funcnn_jit_on_a_cpu_takes_the_fast_paths(channels, tuning_on):
    x, w = conv_case(channels)
    forward = cpu_text(conv_loss, x, w)
    # one channel: shifted products, no convolution in the forward pass
    assert ("stablehlo.convolution" in forward) == (channels != 1)
    input_gradient = cpu_text(jax.grad(conv_loss), x, w)
    # 2 to 8 channels: the input gradient summed in place
    assert ("dynamic_update_slice" in input_gradient) == (2 <= channels <= 8)
    pool = cpu_text(jax.grad(pool_loss), x)
    assert "xi8>" in pool and "select_and_scatter" not in pool


def lenet_like():
    return fn.serial(
        layers.Conv(4, 5, padding="SAME"),
        layers.Relu(),
        layers.MaxPool(2),
        layers.Conv(8, 3),
        layers.Relu(),
        layers.Flatten(),
        layers.Dense(3),
    )


def problem():
    model = lenet_like()
    _, params = model.init(jax.random.key(0), (-1, 12, 12, 1))
    x = jax.random.normal(jax.random.key(1), (16, 12, 12, 1))
    y = jnp.arange(16) % 3

    def loss(p, x, y):
        return losses.softmax_cross_entropy(model.apply(p, x), y)

    return model, params, x, y, loss


def test_train_step_gets_all_three(tuning_on):
    model, params, x, y, _ = problem()
    opt = optax.sgd(0.1)
    step = train.train_step(model.apply, losses.softmax_cross_entropy, opt, donate=False)
    traced = step.trace(params, opt.init(params), (x, y))
    text = traced.lower(lowering_platforms=("cpu",)).as_text()
    # first layer's forward without a convolution, the second's in-place input gradient,
    # the pooling derivative over int8 positions
    assert text.count("stablehlo.convolution") == 3  # 2nd forward, two weight gradients
    assert "dynamic_update_slice" in text and "xi8>" in text
    gpu = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert gpu.count("stablehlo.convolution") == 5 and "xi8>" not in gpu


# ----------------------------------------------------------------- (c) the switch


def test_switched_off_funcnn_jit_is_jax_jit():
    _, params, x, y, loss = problem()
    grad = jax.grad(loss)
    plain = jax.jit(grad).lower(params, x, y).as_text()
    with compiler.cpu_tuning(False):
        assert compiler.compiler_options() == {}
        assert not compiler.cpu_tuning_enabled()
        ours = fn.jit(grad)
        assert ours.lower(params, x, y).as_text() == plain
        assert not primitives(ours.trace(params, x, y).jaxpr) & DISPATCH
    # built while off, it stays jax.jit's program; one built now is tuned again
    assert ours.lower(params, x, y).as_text() == plain
    with compiler.cpu_tuning(True):
        assert DISPATCH <= primitives(fn.jit(grad).trace(params, x, y).jaxpr)
        assert (
            cpu_text(grad, params, x, y)
            != jax.jit(grad).trace(params, x, y).lower(lowering_platforms=("cpu",)).as_text()
        )


def test_a_function_keeps_the_setting_it_was_built_with(tuning_on):
    x, w = conv_case(1)
    tuned = fn.jit(conv_loss)
    assert DISPATCH <= primitives(tuned.trace(x, w).jaxpr)  # built here, tuned
    with compiler.cpu_tuning(False):
        assert DISPATCH <= primitives(tuned.trace(x[:1], w).jaxpr)  # a new shape, retraced


def test_a_plain_call_holds_until_changed():
    compiler.cpu_tuning(False)
    assert not compiler.cpu_tuning_enabled() and compiler.compiler_options() == {}
    x, w = conv_case(3)
    assert not primitives(fn.jit(conv_loss).trace(x, w).jaxpr) & DISPATCH
    compiler.cpu_tuning(True)
    assert compiler.cpu_tuning_enabled()
    assert compiler.compiler_options() == dict(_cpu.xla_options())
    assert DISPATCH <= primitives(fn.jit(conv_loss).trace(x, w).jaxpr)


def test_the_switch_takes_a_bool():
    with pytest.raises((TypeError, ValueError), match="cpu_tuning: enabled must be a bool"):
        compiler.cpu_tuning("0")
    assert compiler.cpu_tuning_enabled() == _cpu.enabled()


@pytest.mark.parametrize("value, on", [("0", False), ("off", False), ("1", True), ("", True)])
def test_the_environment_variable(monkeypatch, value, on):
    monkeypatch.setenv("FUNCNN_CPU_TUNING", value)
    assert compiler.cpu_tuning_enabled() == on
    assert compiler.compiler_options() == (dict(_cpu.xla_options()) if on else {})


def test_the_environment_variable_in_a_fresh_process(root):
    code = (
        "import jax, jax.numpy as jnp, funcnn as fn\n"
        "from funcnn import functional as F\n"
        "x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 4))\n"
        "g = jax.grad(lambda w: F.max_pool(F.conv2d(x, w, padding='SAME')).sum())\n"
        "same = fn.jit(g).lower(w).as_text() == jax.jit(g).lower(w).as_text()\n"
        "print(fn.compiler.compiler_options(), fn.compiler.cpu_tuning_enabled(), same)\n"
        "with fn.compiler.cpu_tuning(True):\n"
        "    tuned = 'platform_index' in str(fn.jit(g).trace(w).jaxpr)\n"
        "    print(fn.compiler.cpu_tuning_enabled(), tuned)\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "FUNCNN_CPU_TUNING": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["{} False True", "True True"]


# ------------------------------------------------------------------ the package's edges


def test_functional_imports_only_checks_and_the_cpu_package(root):
    tree = ast.parse((root / "funcnn" / "functional.py").read_text())
    ours = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or node.module.startswith("funcnn")):
            ours |= {f"{node.module or ''}.{a.name}".strip(".") for a in node.names}
        elif isinstance(node, ast.Import):
            ours |= {a.name for a in node.names if a.name.startswith("funcnn")}
    assert ours == {"_cpu", "checks"}


def test_nothing_outside_reaches_into_the_cpu_package(root):
    """Outside ``funcnn/_cpu``, only the names it exports, through the package."""
    for path in sorted((root / "funcnn").rglob("*.py")):
        if "_cpu" in path.parts:
            continue
        text = path.read_text()
        assert not re.search(r"(from|import)\s+(funcnn|\.)?\._cpu\.", text), path
        assert not re.search(r"from\s+(funcnn)?\._cpu\s+import", text), path
        for name in re.findall(r"\b_cpu\.(\w+)", text):
            assert name in _cpu.__all__, f"{path}: _cpu.{name}"
