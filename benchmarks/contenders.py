"""One builder per contender. Each returns a :class:`Runner` over the same weights and data.

``Runner.unit()`` runs one timed unit (a training step, or a whole epoch for the epoch
workload) and blocks until it is done; ``Runner.loss_after_one_step()`` starts from the
workload's weights, takes one step on the first batch and returns the loss on that batch
afterwards: every contender must agree on it. For a workload with BatchNorm,
``Runner.stats_after_one_step()`` gives the running statistics after that step, all layers'
concatenated in the order of the ops: ``"mean"``, and the variance under the library's
convention, ``"unbiased"`` (PyTorch, funcnn) or ``"biased"`` (Flax, Equinox); hand-written JAX
gives both, and each contender is checked against the one it keeps.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from workloads import BN_EPSILON, BN_MOMENTUM, LR, MOMENTUM, Workload

LRN = dict(k=2.0, n=5, alpha=1e-4, beta=0.75)
FIT_EPOCHS = 10


@dataclass
class Runner:
    unit: Callable[[], None]
    loss_after_one_step: Callable[[], float]
    units_per_call: int = 1  # unit() may run several units (e.g. epochs of one fit call)
    stats_after_one_step: Callable[[], dict] | None = None  # BatchNorm workloads only


FLOAT32_ONLY = ("flax_nnx", "equinox")  # their modules here are built in float32
STATELESS_ONLY = ("stax",)  # stax.BatchNorm keeps no running statistics


def available(name: str) -> bool:
    module = {
        "flax_linen": "flax",
        "flax_nnx": "flax",
        "equinox": "equinox",
        "torch": "torch",
        "torch_compile": "torch",
    }.get(name)
    return module is None or importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------- JAX helpers


def _jax_dtype(wl: Workload):
    import jax.numpy as jnp

    return jnp.bfloat16 if wl.dtype == "bfloat16" else jnp.float32


def _jax_params(wl: Workload, params):
    """``params`` (numpy or JAX arrays) as JAX arrays of the workload's dtype."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, _jax_dtype(wl)), params)


def _float32_loss(loss_fn: Callable) -> Callable:
    """The loss on logits cast to float32 (a no-op in float32; bfloat16 logits are upcast)."""
    import jax.numpy as jnp

    return lambda out, y: loss_fn(out.astype(jnp.float32), y)


def _jax_parameter_free(op: tuple, x):
    """The workload's parameter-free ops on NHWC arrays, in plain JAX (raw JAX and Flax nnx)."""
    import jax
    import jax.numpy as jnp

    kind = op[0]
    if kind == "relu":
        return jax.nn.relu(x)
    if kind == "tanh":
        return jnp.tanh(x)
    if kind == "maxpool":
        window, stride = (1, op[1], op[1], 1), (1, op[2], op[2], 1)
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, stride, "VALID")
    if kind == "gap":
        return jnp.mean(x, axis=(1, 2))
    if kind == "lrn":
        return _jax_lrn(x)
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    raise ValueError(f"unknown op {kind!r}")


def _jax_lrn(x):
    import jax
    import jax.numpy as jnp

    half = LRN["n"] // 2
    s = jax.lax.reduce_window(
        x * x,
        0.0,
        jax.lax.add,
        (1, 1, 1, LRN["n"]),
        (1, 1, 1, 1),
        ((0, 0), (0, 0), (0, 0), (half, half)),
    )
    return x / jnp.power(LRN["k"] + LRN["alpha"] * s, LRN["beta"])


def _jax_batches(wl: Workload, x, y):
    import jax.numpy as jnp

    dt = _jax_dtype(wl)
    if wl.n_points:
        nb = wl.n_points // wl.batch
        return (
            jnp.asarray(x[: nb * wl.batch].reshape(nb, wl.batch, *x.shape[1:]), dt),
            jnp.asarray(y[: nb * wl.batch].reshape(nb, wl.batch)),
        )
    return jnp.asarray(x, dt)[None], jnp.asarray(y)[None]


def _jax_state(state):
    """BatchNorm's running statistics as float32 JAX arrays, whatever the workload's dtype."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), state)


def _param_ops(ops):
    """The ops that have params (dense, conv, bn), in the order they run: a block's body,
    then its shortcut."""
    for op in ops:
        if op[0] == "block":
            yield from _param_ops(op[1])
            yield from _param_ops(op[2])
        elif op[0] in ("dense", "conv", "bn"):
            yield op


def _bias(op) -> bool:
    """Whether a dense or conv op has a bias (convolutions followed by BatchNorm have none)."""
    return op[0] == "dense" or len(op) < 6 or op[5]


def _concat_stats(means, variances, convention: str) -> dict | None:
    """The check's form of the running statistics: every layer's, concatenated, in float64
    (``None`` for a network without BatchNorm)."""
    if not means:
        return None
    return {
        "mean": np.concatenate([np.asarray(m, np.float64) for m in means]),
        convention: np.concatenate([np.asarray(v, np.float64) for v in variances]),
    }


def _jax_runner(
    wl: Workload,
    x,
    y,
    params,
    apply: Callable,
    *,
    state=None,
    stats: Callable | None = None,
    scan: bool = True,
    loss_fn: Callable | None = None,
    shuffle: bool = False,
    compiler_options: dict | None = None,
) -> Runner:
    """A runner for a pure JAX ``apply(params, x)``, optimized with optax, jit-compiled
    (with XLA's ``compiler_options`` when given). With ``state`` (BatchNorm's running
    statistics), ``apply(params, state, x) -> (outputs, state)`` in training mode, the state
    carried from step to step, and ``stats(state)`` the running statistics the check compares."""
    import jax
    import optax

    jit = functools.partial(jax.jit, compiler_options=compiler_options)

    opt = optax.sgd(LR, momentum=MOMENTUM)
    loss_fn = _float32_loss(loss_fn or optax.losses.softmax_cross_entropy_with_integer_labels)
    params = _jax_params(wl, params)
    if state is None:  # stateless: the state is () and passes through

        def forward(p, s, xb):
            return apply(p, xb), s

        state = ()
    else:
        forward = apply

    def loss(p, s, xb, yb):
        out, s = forward(p, s, xb)
        return loss_fn(out, yb).mean(), s

    def step(p, s, o, xb, yb):
        (value, s), g = jax.value_and_grad(loss, has_aux=True)(p, s, xb, yb)
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), s, o, value

    xs, ys = _jax_batches(wl, x, y)
    copy = functools.partial(jax.tree_util.tree_map, lambda a: a.copy())
    # unit() donates its carry: the one-step check runs before it, on copies
    carry = {"p": params, "s": copy(state), "o": opt.init(params)}
    if wl.n_points and scan:

        def epoch(p, s, o, xs, ys, key):
            if shuffle:  # the plain way: jax.random.permutation, then one gather
                perm = jax.random.permutation(key, xs.shape[0] * xs.shape[1])
                xs = xs.reshape(-1, *xs.shape[2:])[perm].reshape(xs.shape)
                ys = ys.reshape(-1)[perm].reshape(ys.shape)

            def body(c, b):
                p, s, o, v = step(*c, *b)
                return (p, s, o), v

            (p, s, o), v = jax.lax.scan(body, (p, s, o), (xs, ys))
            return p, s, o, v

        run = jit(epoch, donate_argnums=(0, 1, 2))
        carry["k"] = jax.random.key(0)

        def unit():
            carry["k"], k = jax.random.split(carry["k"])
            carry["p"], carry["s"], carry["o"], v = run(
                carry["p"], carry["s"], carry["o"], xs, ys, k
            )
            jax.block_until_ready(v)
    else:
        jstep = jit(step, donate_argnums=(0, 1, 2))

        xl, yl = list(xs), list(ys)  # batches split once, as a data loader would hand them

        def unit():
            for xb, yb in zip(xl, yl):
                carry["p"], carry["s"], carry["o"], v = jstep(
                    carry["p"], carry["s"], carry["o"], xb, yb
                )
            jax.block_until_ready(v)

    @functools.cache
    def one_step():
        fresh = copy(params)
        p, s, _, _ = step(fresh, state, opt.init(fresh), xs[0], ys[0])
        return float(loss(p, s, xs[0], ys[0])[0]), s

    return Runner(
        unit,
        lambda: one_step()[0],
        stats_after_one_step=(lambda: stats(one_step()[1])) if stats else None,
    )


def _raw_batch_norm(x, p, s, *, unbiased: bool, momentum: float):
    """BatchNorm in training mode by hand, over every axis but the last:
    ``y = γ (x − μ_B) / √(σ²_B + ε) + β`` with the batch's mean and (biased) variance, and the
    running statistics ``(1 − momentum)·old + momentum·new``, the variance's ``new`` unbiased
    (``m/(m − 1)·σ²_B``, PyTorch's convention) or not (Flax's and Equinox's)."""
    import jax
    import jax.numpy as jnp

    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axes)
    var = jnp.mean(jnp.square(xf - mean), axes)
    y = (xf - mean) * (jax.lax.rsqrt(var + BN_EPSILON) * p["scale"]) + p["offset"]
    m = x.size // x.shape[-1]
    new_var = var * (m / (m - 1)) if unbiased else var
    state = {
        "mean": (1 - momentum) * s["mean"] + momentum * mean,
        "var": (1 - momentum) * s["var"] + momentum * new_var,
    }
    return y.astype(x.dtype), state


def raw_apply_with_state(ops, *, unbiased: bool = True, momentum: float = BN_MOMENTUM):
    """Hand-written JAX: ``lax`` convolutions and pooling, ``x @ w + b``, BatchNorm in training
    mode: ``apply(params, state, x) -> (y, state)``, params and state lists in op order."""
    import jax

    def apply(params, state, x):
        params, state, new_state = iter(params), iter(state), []

        def run(ops, x):
            for op in ops:
                kind = op[0]
                if kind == "dense":
                    p = next(params)
                    x = x @ p["w"] + p["b"]
                elif kind == "conv":
                    p = next(params)
                    x = jax.lax.conv_general_dilated(
                        x, p["w"], (op[3], op[3]), op[4], dimension_numbers=("NHWC", "HWIO", "NHWC")
                    )
                    if "b" in p:
                        x = x + p["b"]
                elif kind == "bn":
                    x, s = _raw_batch_norm(
                        x, next(params), next(state), unbiased=unbiased, momentum=momentum
                    )
                    new_state.append(s)
                elif kind == "block":  # relu(body(x) + shortcut(x)); no shortcut ops: x
                    fx = run(op[1], x)
                    x = jax.nn.relu(fx + run(op[2], x))
                else:
                    x = _jax_parameter_free(op, x)
            return x

        return run(ops, x), new_state

    return apply


def raw_apply(ops):
    """Hand-written JAX: ``lax`` convolutions and pooling, ``x @ w + b``: ``apply(params, x)``."""
    apply = raw_apply_with_state(ops)
    return lambda params, x: apply(params, (), x)[0]


def _raw_runner(wl, x, y, *, momentum: float = BN_MOMENTUM, **options):
    """Hand-written JAX over the workload's params (and BatchNorm state). Its running variance
    is PyTorch's, unbiased; the check also gets the biased one, from a second one-step run."""
    if not wl.stateful:
        return _jax_runner(wl, x, y, wl.params, raw_apply(wl.ops), **options)

    def runner(unbiased):
        convention = "unbiased" if unbiased else "biased"
        return _jax_runner(
            wl, x, y, wl.params,
            raw_apply_with_state(wl.ops, unbiased=unbiased, momentum=momentum),
            state=_jax_state(wl.state),
            stats=lambda s: _concat_stats(
                [v["mean"] for v in s], [v["var"] for v in s], convention
            ),
            **options,
        )  # fmt: skip

    r, biased = runner(True), runner(False)
    unbiased_stats = r.stats_after_one_step
    r.stats_after_one_step = lambda: {**biased.stats_after_one_step(), **unbiased_stats()}
    return r


def build_raw_jax(wl, x, y):
    return _raw_runner(wl, x, y)


def build_raw_jax_tuned(wl, x, y):
    """Hand-written JAX compiled with the XLA options funcnn compiles with (``fn.jit``)."""
    from funcnn.compiler import compiler_options

    return _raw_runner(wl, x, y, compiler_options=compiler_options())


def build_raw_jax_shuffled(wl, x, y):
    return _raw_runner(wl, x, y, shuffle=True)


def build_raw_jax_loop(wl, x, y):
    return _raw_runner(wl, x, y, scan=False)


def build_stax(wl, x, y):
    """``jax.example_libraries.stax``: the combinator library that funcnn's API descends from."""
    import jax
    from jax.example_libraries import stax

    layers = []
    for op in wl.ops:
        kind = op[0]
        if kind == "dense":
            layers.append(stax.Dense(op[1]))
        elif kind == "conv":
            layers.append(stax.Conv(op[1], (op[2], op[2]), (op[3], op[3]), op[4]))
        elif kind == "relu":
            layers.append(stax.Relu)
        elif kind == "tanh":
            layers.append(stax.Tanh)
        elif kind == "maxpool":
            layers.append(stax.MaxPool((op[1], op[1]), (op[2], op[2])))
        elif kind == "lrn":
            layers.append(stax.elementwise(_jax_lrn))
        elif kind == "flatten":
            layers.append(stax.Flatten)
    init, apply = stax.serial(*layers)
    _, template = init(jax.random.key(0), (-1, *wl.input_shape))
    given = iter(wl.params)
    params = []
    for p in template:  # (w, b) for dense and conv layers (conv bias shaped (1, 1, 1, C)), ()
        if p:
            q = next(given)
            params.append((q["w"], q["b"].reshape(p[1].shape)))
        else:
            params.append(())
    return _jax_runner(wl, x, y, params, apply)


# ------------------------------------------------------------------------------ funcnn


def funcnn_model(ops):
    import funcnn as fn
    from funcnn import layers as L

    layers = []
    for op in ops:
        kind = op[0]
        if kind == "dense":
            layers.append(L.Dense(op[1]))
        elif kind == "conv":
            layers.append(L.Conv(op[1], op[2], stride=op[3], padding=op[4]))
        elif kind == "relu":
            layers.append(L.Relu())
        elif kind == "tanh":
            layers.append(L.Tanh())
        elif kind == "maxpool":
            layers.append(L.MaxPool(op[1], stride=op[2]))
        elif kind == "lrn":
            layers.append(L.LRN())
        elif kind == "flatten":
            layers.append(L.Flatten())
    return fn.serial(*layers)


def _funcnn_params(model, wl):
    import jax

    _, template = model.init(jax.random.key(0), (-1, *wl.input_shape))
    names = [k for k in template]  # insertion order = layer order
    return _jax_params(wl, dict(zip(names, wl.params)))


def _fill(template: dict, given) -> dict:
    """``template`` (funcnn's params or state) with each layer's dict, in order, replaced by
    the next of ``given``: the same keys and shapes, or an error."""
    out = {}
    for name, value in template.items():
        if value and all(not isinstance(v, dict) for v in value.values()):  # one layer's
            new = next(given)
            shapes = {k: np.shape(v) for k, v in new.items()}
            if shapes != {k: np.shape(v) for k, v in value.items()}:
                raise ValueError(f"{name}: funcnn has {value}, the workload {shapes}")
            out[name] = new
        else:
            out[name] = _fill(value, given) if value else value
    return out


def _layer_dicts(template: dict, tree: dict) -> list[dict]:
    """The layer dicts of ``tree`` in ``template``'s order (jit hands dicts back sorted)."""
    out = []
    for name, value in template.items():
        if value and all(not isinstance(v, dict) for v in value.values()):
            out.append(tree[name])
        elif value:
            out += _layer_dicts(value, tree[name])
    return out


def build_funcnn_with_state(wl, x, y):
    """``train_step_with_state`` on the workload's ``funcnn.models`` network (``wl.zoo``),
    BatchNorm's running statistics carried from step to step."""
    import jax
    import jax.numpy as jnp
    import optax

    import funcnn as fn

    name, options = wl.zoo
    model = getattr(fn.models, name)(wl.classes, **options)
    _, p_template, s_template = model.init_with_state(jax.random.key(0), (-1, *wl.input_shape))

    def fresh():
        params = _jax_params(wl, _fill(p_template, iter(wl.params)))
        return params, _jax_state(_fill(s_template, iter(wl.state)))

    opt = optax.sgd(LR, momentum=MOMENTUM)
    loss = _float32_loss(fn.losses.softmax_cross_entropy)
    x, y = jnp.asarray(x, _jax_dtype(wl)), jnp.asarray(y)  # on the device once, as for the others
    params, state = fresh()
    carry = {"p": params, "s": state, "o": opt.init(params)}
    step = fn.train_step_with_state(model, loss, opt, donate=True)

    def unit():
        carry["p"], carry["s"], carry["o"], logs = step(carry["p"], carry["s"], carry["o"], (x, y))
        jax.block_until_ready(logs)

    @functools.cache
    def one_step():
        p, s = fresh()
        p, s, _, _ = fn.train_step_with_state(model, loss, opt)(p, s, opt.init(p), (x, y))
        out, _ = model.apply_with_state(p, s, x, train=True)
        layers = _layer_dicts(s_template, s)
        stats = _concat_stats([v["mean"] for v in layers], [v["var"] for v in layers], "unbiased")
        return float(loss(out, y)), stats

    return Runner(unit, lambda: one_step()[0], stats_after_one_step=lambda: one_step()[1])


def build_funcnn(wl, x, y, **fit_options):
    """``train_step`` for a step; ``fit`` (with ``fit_options``) for an epoch workload;
    ``train_step_with_state`` for a network with BatchNorm."""
    import jax
    import jax.numpy as jnp
    import optax

    import funcnn as fn

    if wl.stateful:
        return build_funcnn_with_state(wl, x, y)
    model = funcnn_model(wl.ops)
    params = _funcnn_params(model, wl)
    opt = optax.sgd(LR, momentum=MOMENTUM)
    loss = _float32_loss(fn.losses.softmax_cross_entropy)
    x, y = jnp.asarray(x, _jax_dtype(wl)), jnp.asarray(y)  # on the device once, as for the others
    state = {"p": params, "o": opt.init(params)}
    if wl.n_points:
        # fit itself, scan-compiled epochs with its default shuffle and non-finite guard;
        # EPOCHS epochs a call so its per-call set-up is amortized as in real use
        def unit():
            r = fn.fit(
                model,
                state["p"],
                x,
                y,
                loss=loss,
                optimizer=opt,
                epochs=FIT_EPOCHS,
                batch_size=wl.batch,
                scan=True,
                metrics={},
                progress=False,
                opt_state=state["o"],
                **fit_options,
            )
            state["p"], state["o"] = r.params, r.opt_state
            jax.block_until_ready(r.params)

        units = FIT_EPOCHS
    else:
        step = fn.train_step(model.apply, loss, opt, donate=True)
        xd, yd = jnp.asarray(x), jnp.asarray(y)

        def unit():
            state["p"], state["o"], logs = step(state["p"], state["o"], (xd, yd))
            jax.block_until_ready(logs)

        units = 1

    def check():
        fresh = _funcnn_params(model, wl)
        s = fn.train_step(model.apply, loss, opt)
        xb, yb = jnp.asarray(x[: wl.batch]), jnp.asarray(y[: wl.batch])
        p, _, _ = s(fresh, opt.init(fresh), (xb, yb))
        return float(loss(model.apply(p, xb), yb))

    return Runner(unit, check, units)


# -------------------------------------------------------------------------------- Flax


def build_flax_linen(wl, x, y):
    """Flax linen, ``jax.jit``; BatchNorm with ``batch_stats`` made mutable in training."""
    import flax.linen as nn
    import jax.numpy as jnp

    ops = wl.ops

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            names = (f"layer_{i}" for i in range(len(wl.params)))  # the params' order

            def run(ops, x):
                for op in ops:
                    kind = op[0]
                    if kind == "dense":
                        x = nn.Dense(op[1], name=next(names))(x)
                    elif kind == "conv":
                        x = nn.Conv(
                            op[1], (op[2], op[2]), strides=op[3], padding=op[4],
                            use_bias=_bias(op), name=next(names),
                        )(x)  # fmt: skip
                    elif kind == "bn":  # Flax's momentum is the old statistics' weight
                        x = nn.BatchNorm(
                            use_running_average=not train, momentum=1 - BN_MOMENTUM,
                            epsilon=BN_EPSILON, name=next(names),
                        )(x)  # fmt: skip
                    elif kind == "block":
                        fx = run(op[1], x)
                        x = nn.relu(fx + run(op[2], x))
                    elif kind == "relu":
                        x = nn.relu(x)
                    elif kind == "tanh":
                        x = jnp.tanh(x)
                    elif kind == "maxpool":
                        x = nn.max_pool(x, (op[1], op[1]), strides=(op[2], op[2]))
                    elif kind == "gap":
                        x = jnp.mean(x, axis=(1, 2))
                    elif kind == "lrn":
                        x = _jax_lrn(x)
                    elif kind == "flatten":
                        x = x.reshape(x.shape[0], -1)
                return x

            return run(ops, x)

    def convert(p):
        if "scale" in p:
            return {"scale": p["scale"], "bias": p["offset"]}
        return {"kernel": p["w"], **({"bias": p["b"]} if "b" in p else {})}

    net = Net()
    params = {"params": {f"layer_{i}": convert(p) for i, p in enumerate(wl.params)}}
    if not wl.stateful:
        return _jax_runner(wl, x, y, params, net.apply)
    bn = [f"layer_{i}" for i, p in enumerate(wl.params) if "scale" in p]
    state = {"batch_stats": dict(zip(bn, _jax_state(wl.state)))}

    def apply(p, s, xb):
        return net.apply({**p, **s}, xb, train=True, mutable=["batch_stats"])

    def stats(s):
        layers = [s["batch_stats"][n] for n in bn]
        return _concat_stats([v["mean"] for v in layers], [v["var"] for v in layers], "biased")

    return _jax_runner(wl, x, y, params, apply, state=state, stats=stats)


def build_flax_nnx(wl, x, y):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    ops = wl.ops

    class Net(nnx.Module):
        def __init__(self, rngs):
            layers, state = [], iter(wl.state)
            for op, p in zip(_param_ops(ops), wl.params):
                if op[0] == "dense":
                    m = nnx.Linear(p["w"].shape[0], op[1], rngs=rngs)
                elif op[0] == "conv":
                    m = nnx.Conv(
                        p["w"].shape[2],
                        op[1],
                        (op[2], op[2]),
                        strides=op[3],
                        padding=op[4],
                        use_bias=_bias(op),
                        rngs=rngs,
                    )
                else:  # BatchNorm, training mode; Flax's momentum is the old statistics' weight
                    m = nnx.BatchNorm(
                        len(p["scale"]), momentum=1 - BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs
                    )
                    m.scale.value, m.bias.value = jnp.asarray(p["scale"]), jnp.asarray(p["offset"])
                    s = next(state)
                    m.mean.value, m.var.value = jnp.asarray(s["mean"]), jnp.asarray(s["var"])
                if op[0] != "bn":
                    m.kernel.value = jnp.asarray(p["w"])
                if "b" in p:
                    m.bias.value = jnp.asarray(p["b"])
                layers.append(m)
            self.layers = nnx.List(layers) if hasattr(nnx, "List") else layers

        def __call__(self, x):
            layers = iter(self.layers)

            def run(ops, x):
                for op in ops:
                    kind = op[0]
                    if kind in ("dense", "conv", "bn"):
                        x = next(layers)(x)
                    elif kind == "block":
                        fx = run(op[1], x)
                        x = nnx.relu(fx + run(op[2], x))
                    else:
                        x = _jax_parameter_free(op, x)
                return x

            return run(ops, x)

    def make():
        model = Net(nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.sgd(LR, momentum=MOMENTUM), wrt=nnx.Param)

    def loss_fn(model, xb, yb):
        return optax.losses.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    @nnx.jit
    def step(model, optimizer, xb, yb):
        value, grads = nnx.value_and_grad(loss_fn)(model, xb, yb)
        optimizer.update(model, grads)
        return value

    xs, ys = _jax_batches(wl, x, y)
    model, optimizer = make()

    xl, yl = list(xs), list(ys)

    def unit():
        for xb, yb in zip(xl, yl):
            v = step(model, optimizer, xb, yb)
        jax.block_until_ready(v)

    @functools.cache
    def one_step():
        m, o = make()
        step(m, o, xs[0], ys[0])
        bns = [layer for layer in m.layers if isinstance(layer, nnx.BatchNorm)]
        stats = _concat_stats([b.mean.value for b in bns], [b.var.value for b in bns], "biased")
        return float(loss_fn(m, xs[0], ys[0])), stats  # (this call moves the statistics again)

    return Runner(
        unit,
        lambda: one_step()[0],
        stats_after_one_step=(lambda: one_step()[1]) if wl.stateful else None,
    )


# ----------------------------------------------------------------------------- Equinox


def _chw_dense_weight(w, shape_hwc):
    """Reorder the first dense layer's rows from HWC flattening to CHW flattening."""
    h, w_, c = shape_hwc
    return w.reshape(h, w_, c, -1).transpose(2, 0, 1, 3).reshape(h * w_ * c, -1)


def _conv_shapes(wl):
    """For each dense layer after a flatten, the HWC shape that was flattened (else None)."""
    from workloads import _out

    shape, out = wl.input_shape, []
    for op in wl.ops:
        if op[0] == "conv":
            shape = (
                _out(shape[0], op[2], op[3], op[4]),
                _out(shape[1], op[2], op[3], op[4]),
                op[1],
            )
        elif op[0] == "maxpool":
            shape = ((shape[0] - op[1]) // op[2] + 1, (shape[1] - op[1]) // op[2] + 1, shape[2])
        elif op[0] == "flatten":
            out.append(("flat", shape))
            shape = (int(np.prod(shape)),)
        elif op[0] == "dense":
            out.append(("dense", None))
            shape = (op[1],)
    # the dense right after a flatten gets the flattened shape
    result, pending = [], None
    for kind, s in out:
        if kind == "flat":
            pending = s
        else:
            result.append(pending)
            pending = None
    return result


def _torch_style_padding(pads):
    """A conv's padding as PyTorch and Equinox take it: one int per axis when both sides are
    equal, else the ``((before, after), ...)`` pairs (XLA's "SAME" at stride 2 pads after)."""
    if all(lo == hi for lo, hi in pads):
        return tuple(lo for lo, _ in pads)
    return pads


def build_equinox(wl, x, y):
    """Equinox, ``eqx.filter_jit``; BatchNorm with ``mode="batch"`` (PyTorch's training-mode
    statistics) under ``jax.vmap(..., axis_name="batch")``, its state an ``eqx.nn.State``."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    ops = wl.ops

    def build():
        key = jax.random.key(0)
        flat_shapes = iter(_conv_shapes(wl))
        mods = []
        for i, (op, p) in enumerate(zip(_param_ops(ops), wl.params)):
            if op[0] == "dense":
                w = p["w"]
                fs = next(flat_shapes, None)
                if fs is not None:
                    w = _chw_dense_weight(w, fs)
                m = eqx.nn.Linear(w.shape[0], op[1], key=key)
                m = eqx.tree_at(
                    lambda m: (m.weight, m.bias), m, (jnp.asarray(w.T), jnp.asarray(p["b"]))
                )
            elif op[0] == "conv":
                c = p["w"].shape[2]
                pad = _torch_style_padding(wl.pads[i])
                m = eqx.nn.Conv2d(
                    c, op[1], op[2], stride=op[3], padding=pad, use_bias=_bias(op), key=key
                )
                w = jnp.asarray(p["w"].transpose(3, 2, 0, 1))
                if _bias(op):
                    m = eqx.tree_at(
                        lambda m: (m.weight, m.bias), m, (w, jnp.asarray(p["b"])[:, None, None])
                    )
                else:
                    m = eqx.tree_at(lambda m: m.weight, m, w)
            else:  # Equinox's momentum is the old statistics' weight
                m = eqx.nn.BatchNorm(
                    len(p["scale"]), "batch", eps=BN_EPSILON, momentum=1 - BN_MOMENTUM,
                    mode="batch",
                )  # fmt: skip
                m = eqx.tree_at(
                    lambda m: (m.weight, m.bias),
                    m,
                    (jnp.asarray(p["scale"]), jnp.asarray(p["offset"])),
                )
            mods.append(m)
        return mods

    def make():
        if not wl.stateful:
            return build(), None
        mods, state = eqx.nn.make_with_state(build)()
        bns = [m for m in mods if isinstance(m, eqx.nn.BatchNorm)]
        for bn, s in zip(bns, wl.state, strict=True):
            state = state.set(bn.batch_state_index, (jnp.asarray(s["mean"]), jnp.asarray(s["var"])))
        return mods, state

    def forward(mods, state, x1):  # one example, CHW
        mods = iter(mods)

        def run(ops, x1, state):
            for op in ops:
                kind = op[0]
                if kind in ("dense", "conv"):
                    x1 = next(mods)(x1)
                elif kind == "bn":
                    x1, state = next(mods)(x1, state)
                elif kind == "block":
                    fx, state = run(op[1], x1, state)
                    sx, state = run(op[2], x1, state)
                    x1 = jax.nn.relu(fx + sx)
                elif kind == "relu":
                    x1 = jax.nn.relu(x1)
                elif kind == "tanh":
                    x1 = jnp.tanh(x1)
                elif kind == "maxpool":
                    x1 = eqx.nn.MaxPool2d(op[1], op[2])(x1)
                elif kind == "gap":
                    x1 = jnp.mean(x1, axis=(1, 2))
                elif kind == "lrn":
                    x1 = _jax_lrn(x1.transpose(1, 2, 0)[None])[0].transpose(2, 0, 1)
                elif kind == "flatten":
                    x1 = x1.reshape(-1)
            return x1, state

        return run(ops, x1, state)

    opt = optax.sgd(LR, momentum=MOMENTUM)

    def loss_fn(mods, state, xb, yb):
        batched = jax.vmap(
            lambda e, s: forward(mods, s, e),
            axis_name="batch",
            in_axes=(0, None),
            out_axes=(0, None),
        )
        logits, state = batched(xb, state)
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), state

    @eqx.filter_jit
    def step(mods, state, o, xb, yb):
        (value, state), g = eqx.filter_value_and_grad(loss_fn, has_aux=True)(mods, state, xb, yb)
        updates, o = opt.update(g, o, eqx.filter(mods, eqx.is_array))
        return eqx.apply_updates(mods, updates), state, o, value

    xs, ys = _jax_batches(wl, x, y)
    if xs.ndim == 5:  # images: NHWC -> NCHW
        xs = xs.transpose(0, 1, 4, 2, 3)
    mods, state = make()
    carry = {"m": mods, "s": state, "o": opt.init(eqx.filter(mods, eqx.is_array))}

    xl, yl = list(xs), list(ys)

    def unit():
        for xb, yb in zip(xl, yl):
            carry["m"], carry["s"], carry["o"], v = step(carry["m"], carry["s"], carry["o"], xb, yb)
        jax.block_until_ready(v)

    @functools.cache
    def one_step():
        m, s = make()
        m, s, _, _ = step(m, s, opt.init(eqx.filter(m, eqx.is_array)), xs[0], ys[0])
        value = float(loss_fn(m, s, xs[0], ys[0])[0])
        if not wl.stateful:
            return value, None
        stats = [s.get(b.batch_state_index) for b in m if isinstance(b, eqx.nn.BatchNorm)]
        return value, _concat_stats([v[0] for v in stats], [v[1] for v in stats], "biased")

    return Runner(
        unit,
        lambda: one_step()[0],
        stats_after_one_step=(lambda: one_step()[1]) if wl.stateful else None,
    )


# ----------------------------------------------------------------------------- PyTorch


def _torch_model(wl):
    import torch
    from torch import nn

    class Block(nn.Module):  # relu(body(x) + shortcut(x)), the shortcut the identity if None
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.shortcut is None else self.shortcut(x)))

    class GlobalAvgPool(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    index, state, flat_shapes = iter(range(len(wl.params))), iter(wl.state), iter(_conv_shapes(wl))

    def build(ops):
        mods = []
        for op in ops:
            kind = op[0]
            if kind == "dense":
                p = wl.params[next(index)]
                w = p["w"]
                fs = next(flat_shapes, None)
                if fs is not None:
                    w = _chw_dense_weight(w, fs)
                m = nn.Linear(w.shape[0], op[1])
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                    m.bias.copy_(torch.from_numpy(p["b"]))
                mods.append(m)
            elif kind == "conv":
                i = next(index)
                p, pad = wl.params[i], _torch_style_padding(wl.pads[i])
                asymmetric = isinstance(pad[0], tuple)
                m = nn.Conv2d(
                    p["w"].shape[2], op[1], op[2], stride=op[3], padding=0 if asymmetric else pad,
                    bias=_bias(op),
                )  # fmt: skip
                with torch.no_grad():
                    w = np.ascontiguousarray(p["w"].transpose(3, 2, 0, 1))
                    m.weight.copy_(torch.from_numpy(w))
                    if _bias(op):
                        m.bias.copy_(torch.from_numpy(p["b"]))
                if asymmetric:  # ZeroPad2d takes (left, right, top, bottom)
                    mods.append(nn.ZeroPad2d((*pad[1], *pad[0])))
                mods.append(m)
            elif kind == "bn":
                p, s = wl.params[next(index)], next(state)
                m = nn.BatchNorm2d(len(p["scale"]), eps=BN_EPSILON, momentum=BN_MOMENTUM)
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(p["scale"]))
                    m.bias.copy_(torch.from_numpy(p["offset"]))
                    m.running_mean.copy_(torch.from_numpy(s["mean"]))
                    m.running_var.copy_(torch.from_numpy(s["var"]))
                mods.append(m)
            elif kind == "block":
                body = build(op[1])
                mods.append(Block(body, build(op[2]) if op[2] else None))
            elif kind == "relu":
                mods.append(nn.ReLU())
            elif kind == "tanh":
                mods.append(nn.Tanh())
            elif kind == "maxpool":
                mods.append(nn.MaxPool2d(op[1], op[2]))
            elif kind == "gap":
                mods.append(GlobalAvgPool())
            elif kind == "lrn":  # torch divides alpha by n: pass α·n for the paper's formula
                mods.append(
                    nn.LocalResponseNorm(LRN["n"], LRN["alpha"] * LRN["n"], LRN["beta"], LRN["k"])
                )
            elif kind == "flatten":
                mods.append(nn.Flatten())
        return nn.Sequential(*mods)

    return build(wl.ops)


def _build_torch(wl, x, y, compile_: bool):
    import torch

    torch.manual_seed(0)
    dtype = torch.bfloat16 if wl.dtype == "bfloat16" else torch.float32
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    if xt.ndim == 4:
        xt = xt.permute(0, 3, 1, 2).contiguous()
    xt, yt = xt.to(wl.device, dtype), yt.to(wl.device)
    nb = wl.n_points // wl.batch if wl.n_points else 1
    xs = [xt[i * wl.batch : (i + 1) * wl.batch] for i in range(nb)]
    ys = [yt[i * wl.batch : (i + 1) * wl.batch] for i in range(nb)]
    loss_fn = torch.nn.CrossEntropyLoss()

    def make():
        model = _torch_model(wl).to(wl.device, dtype)
        fwd = torch.compile(model) if compile_ else model
        return model, fwd, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    model, fwd, opt = make()

    def step(fwd, opt, xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fwd(xb).float(), yb)
        loss.backward()
        opt.step()
        return loss

    def unit():
        for i in range(nb):
            step(fwd, opt, xs[i], ys[i])
        if wl.device != "cpu":
            torch.cuda.synchronize()

    @functools.cache
    def one_step():
        m, f, o = make()
        step(f, o, xs[0], ys[0])
        bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        stats = _concat_stats(
            [b.running_mean.float().cpu().numpy() for b in bns],
            [b.running_var.float().cpu().numpy() for b in bns],
            "unbiased",
        )
        with torch.no_grad():  # in training mode, as the others: batch statistics
            return float(loss_fn(f(xs[0]).float(), ys[0])), stats

    return Runner(
        unit,
        lambda: one_step()[0],
        stats_after_one_step=(lambda: one_step()[1]) if wl.stateful else None,
    )


def build_torch(wl, x, y):
    return _build_torch(wl, x, y, compile_=False)


def build_torch_compile(wl, x, y):
    return _build_torch(wl, x, y, compile_=True)


BUILDERS = {
    "funcnn": build_funcnn,
    "raw_jax": build_raw_jax,
    "raw_jax_tuned": build_raw_jax_tuned,
    "raw_jax_shuffled": build_raw_jax_shuffled,
    "raw_jax_loop": build_raw_jax_loop,
    "stax": build_stax,
    "flax_linen": build_flax_linen,
    "flax_nnx": build_flax_nnx,
    "equinox": build_equinox,
    "torch": build_torch,
    "torch_compile": build_torch_compile,
}
