"""``funcnn.jit``: ``jax.jit`` plus the XLA options funcnn compiles with.

On a CPU whose XLA knows ``xla_cpu_experimental_ynn_fusion_type``, funcnn's programs run
their convolutions on XLA's own kernels instead of YNNPACK library fusions (faster for small
channel counts, docs/benchmarks.md). The numbers must stay those of plain ``jax.jit``, the
option must reach every program funcnn compiles, and it must step aside for the user's own
``XLA_FLAGS``, for other platforms and for an XLA without it. (The switch that turns it off,
with the CPU formulations of conv2d and max_pool, is tested in tests/test_cpu_tuning.py.)
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import _cpu, compiler, layers, losses, train

OPTION = "xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture(autouse=True)
def tuning_on():
    """These tests are about the tuned programs, whatever FUNCNN_CPU_TUNING says."""
    with compiler.cpu_tuning(True):
        yield


@pytest.fixture
def fresh_options():
    """Forget the probed options before and after a test that changes what they depend on."""
    _cpu.xla_options.cache_clear()
    yield
    _cpu.xla_options.cache_clear()


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
    x = jax.random.normal(jax.random.key(1), (32, 12, 12, 1))  # batch 32: XLA uses YNNPACK
    y = jnp.arange(32) % 3

    def loss(p, x, y):
        return losses.softmax_cross_entropy(model.apply(p, x), y)

    return model, params, x, y, loss


def ynn_convolutions(hlo: str) -> int:
    """How many YNNPACK library fusions of the compiled program hold a convolution."""
    fused = set(re.findall(r"fusion\([^\n]*calls=(%[\w.]+)[^\n]*__ynn_fusion", hlo))
    count = 0
    for name in fused:
        body = re.search(re.escape(name) + r" [^\n]*\{\n(.*?)\n\}", hlo, re.S)
        count += bool(body and " convolution(" in body.group(1))
    return count


needs_option = pytest.mark.skipif(
    not _cpu.xla_options(),
    reason="this XLA has no xla_cpu_experimental_ynn_fusion_type, or the backend is not a CPU",
)


@needs_option
def test_same_gradients_as_plain_jit_without_ynn_convolutions():
    _, params, x, y, loss = problem()
    plain = jax.jit(jax.grad(loss))
    ours = fn.jit(jax.grad(loss))
    g_plain, g_ours = plain(params, x, y), ours(params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_ours)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # float64 says which is right: both, to float32 accuracy
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
        g64 = jax.grad(loss)(p64, np.asarray(x, np.float64), y)
    for a, b in zip(jax.tree_util.tree_leaves(g64), jax.tree_util.tree_leaves(g_ours)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    plain_hlo = plain.lower(params, x, y).compile().as_text()
    ours_hlo = ours.lower(params, x, y).compile().as_text()
    assert ynn_convolutions(plain_hlo) > 0, "XLA no longer fuses convolutions: re-measure"
    assert ynn_convolutions(ours_hlo) == 0
    assert "__ynn_fusion" in ours_hlo  # dots and reductions keep YNNPACK where XLA uses it


@needs_option
def test_every_program_funcnn_compiles_gets_the_options():
    model, params, x, y, loss = problem()
    opt = optax.sgd(0.1, momentum=0.9)
    step = train.train_step(model.apply, losses.softmax_cross_entropy, opt)
    hlo = step.lower(params, opt.init(params), (x, y), None).compile().as_text()
    assert ynn_convolutions(hlo) == 0
    # and fit's scanned epoch: same numbers as train_step applied batch by batch
    result = fn.fit(
        model,
        params,
        x,
        y,
        loss=losses.softmax_cross_entropy,
        optimizer=opt,
        batch_size=16,
        epochs=1,
        shuffle=False,
        scan=True,
        progress=False,
    )
    p, o = params, opt.init(params)
    manual = train.train_step(model.apply, losses.softmax_cross_entropy, opt, donate=False)
    for i in range(0, 32, 16):
        p, o, _ = manual(p, o, (x[i : i + 16], y[i : i + 16]), None)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(result.params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_funcnn_compiles_only_through_its_jit(root):
    """No module calls ``jax.jit`` itself: every program gets the options (the one other
    ``jax.jit`` is the tiny compile that probes whether this XLA knows them)."""
    allowed = {"funcnn/compiler.py", "funcnn/_cpu/options.py"}
    offenders = [
        f"{path.relative_to(root)}:{i}"
        for path in sorted((root / "funcnn").rglob("*.py"))
        if path.relative_to(root).as_posix() not in allowed
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"(?<![\w`])jax\.jit\(", line) and not line.lstrip().startswith(">>>")
    ]
    assert offenders == []


@needs_option
def test_the_users_options_win():
    _, params, x, y, loss = problem()
    ours = fn.jit(jax.grad(loss), compiler_options={OPTION: ""})  # no YNNPACK at all
    assert "__ynn_fusion" not in ours.lower(params, x, y).compile().as_text()


def test_xla_flags_setting_the_option_turn_ours_off(monkeypatch, fresh_options):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true --{OPTION}=")
    assert compiler.compiler_options() == {}


def test_other_platforms_get_no_options(monkeypatch, fresh_options):
    monkeypatch.setattr(compiler.jax, "default_backend", lambda: "gpu")
    assert compiler.compiler_options() == {}
    f = fn.jit(lambda a: a * 2.0)
    np.testing.assert_array_equal(f(jnp.arange(3.0)), [0.0, 2.0, 4.0])


def test_an_xla_without_the_option_gets_plain_jit(monkeypatch, fresh_options):
    monkeypatch.setattr(_cpu.options, "CPU_OPTIONS", {"xla_cpu_no_such_option_here": "1"})
    assert compiler.compiler_options() == {}
    f = fn.jit(lambda a: a + 1.0)
    np.testing.assert_array_equal(f(jnp.zeros(2)), [1.0, 1.0])


def test_options_are_a_copy():
    first = compiler.compiler_options()
    first["something"] = "else"
    assert "something" not in compiler.compiler_options()


def test_jit_starts_nothing_until_first_use(root):
    """Like jax.jit, fn.jit at import time must leave JAX's configuration open."""
    import subprocess
    import sys

    code = (
        "import jax, funcnn as fn\n"
        "f = fn.jit(lambda x: 2 * x)\n"
        "jax.config.update('jax_num_cpu_devices', 3)\n"
        "print(len(jax.devices()), float(f(1.5)))\n"
    )
    env = {**__import__("os").environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["3", "3.0"]


def test_jit_as_a_decorator_with_and_without_arguments():
    @fn.jit
    def double(x):
        return 2 * x

    @fn.jit(static_argnums=1)
    def power(x, n):
        return x**n

    assert double.__name__ == "double"
    assert float(double(2.0)) == 4.0
    assert float(power(2.0, 3)) == 8.0
    assert "stablehlo.multiply" in power.lower(2.0, 3).as_text()

    class Scaler:
        factor = 3.0

        @fn.jit
        def scale(self, x):
            return self.factor * x

    with pytest.raises(TypeError):  # self is not a JAX type: exactly jax.jit's behaviour
        Scaler().scale(1.0)


def test_a_funcnn_jit_function_composes_inside_grad_vmap_and_an_outer_jit():
    f = fn.jit(lambda x: jnp.sum(jnp.sin(x) ** 2))
    x = jnp.linspace(0.0, 1.0, 5)
    want = 2 * jnp.sin(x) * jnp.cos(x)  # d/dx sin²x
    np.testing.assert_allclose(jax.grad(f)(x), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda x: 2 * f(x))(x), 2 * f(x), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(f)(jnp.stack([x, x])), jnp.stack([f(x), f(x)]))
    with pytest.raises(TypeError):  # a mistake of the caller still reaches them as it is
        jax.grad(fn.jit(lambda x: x["missing"]))(x)
