"""One builder per contender. Each returns a :class:`Runner` over the same weights and data.

``Runner.unit()`` runs one timed unit (a training step, or a whole epoch for the epoch
workload) and blocks until it is done; ``Runner.loss_after_one_step()`` starts from the
workload's weights, takes one step on the first batch and returns the loss on that batch
afterwards: every contender must agree on it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from workloads import LR, MOMENTUM, Workload

LRN = dict(k=2.0, n=5, alpha=1e-4, beta=0.75)
FIT_EPOCHS = 10


@dataclass
class Runner:
    unit: Callable[[], None]
    loss_after_one_step: Callable[[], float]
    units_per_call: int = 1  # unit() may run several units (e.g. epochs of one fit call)


FLOAT32_ONLY = ("flax_nnx", "equinox")  # their modules here are built in float32


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


def _jax_runner(
    wl: Workload,
    x,
    y,
    params,
    apply: Callable,
    *,
    scan: bool = True,
    loss_fn: Callable | None = None,
    shuffle: bool = False,
    compiler_options: dict | None = None,
) -> Runner:
    """A runner for a pure JAX ``apply(params, x)``, optimized with optax, jit-compiled
    (with XLA's ``compiler_options`` when given)."""
    import functools

    import jax
    import optax

    jit = functools.partial(jax.jit, compiler_options=compiler_options)

    opt = optax.sgd(LR, momentum=MOMENTUM)
    loss_fn = _float32_loss(loss_fn or optax.losses.softmax_cross_entropy_with_integer_labels)
    params = _jax_params(wl, params)

    def loss(p, xb, yb):
        return loss_fn(apply(p, xb), yb).mean()

    def step(p, o, xb, yb):
        value, g = jax.value_and_grad(loss)(p, xb, yb)
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), o, value

    xs, ys = _jax_batches(wl, x, y)
    state = {"p": params, "o": opt.init(params)}
    if wl.n_points and scan:

        def epoch(p, o, xs, ys, key):
            if shuffle:  # the plain way: jax.random.permutation, then one gather
                perm = jax.random.permutation(key, xs.shape[0] * xs.shape[1])
                xs = xs.reshape(-1, *xs.shape[2:])[perm].reshape(xs.shape)
                ys = ys.reshape(-1)[perm].reshape(ys.shape)

            def body(c, b):
                p, o, v = step(*c, *b)
                return (p, o), v

            (p, o), v = jax.lax.scan(body, (p, o), (xs, ys))
            return p, o, v

        run = jit(epoch, donate_argnums=(0, 1))
        state["k"] = jax.random.key(0)

        def unit():
            state["k"], k = jax.random.split(state["k"])
            state["p"], state["o"], v = run(state["p"], state["o"], xs, ys, k)
            jax.block_until_ready(v)
    else:
        jstep = jit(step, donate_argnums=(0, 1))

        xl, yl = list(xs), list(ys)  # batches split once, as a data loader would hand them

        def unit():
            for xb, yb in zip(xl, yl):
                state["p"], state["o"], v = jstep(state["p"], state["o"], xb, yb)
            jax.block_until_ready(v)

    def check():
        fresh = jax.tree_util.tree_map(lambda a: a.copy(), params)
        p, _, _ = step(fresh, opt.init(fresh), xs[0], ys[0])
        return float(loss(p, xs[0], ys[0]))

    return Runner(unit, check)


def raw_apply(ops):
    """Hand-written JAX: ``lax`` convolutions and pooling, ``x @ w + b``."""
    import jax
    import jax.numpy as jnp

    def apply(params, x):
        i = 0
        for op in ops:
            kind = op[0]
            if kind == "dense":
                x = x @ params[i]["w"] + params[i]["b"]
                i += 1
            elif kind == "conv":
                x = (
                    jax.lax.conv_general_dilated(
                        x,
                        params[i]["w"],
                        (op[3], op[3]),
                        op[4],
                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                    )
                    + params[i]["b"]
                )
                i += 1
            elif kind == "relu":
                x = jax.nn.relu(x)
            elif kind == "tanh":
                x = jnp.tanh(x)
            elif kind == "maxpool":
                x = jax.lax.reduce_window(
                    x, -jnp.inf, jax.lax.max, (1, op[1], op[1], 1), (1, op[2], op[2], 1), "VALID"
                )
            elif kind == "lrn":
                x = _jax_lrn(x)
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
        return x

    return apply


def build_raw_jax(wl, x, y):
    return _jax_runner(wl, x, y, wl.params, raw_apply(wl.ops))


def build_raw_jax_tuned(wl, x, y):
    """Hand-written JAX compiled with the XLA options funcnn compiles with (``fn.jit``)."""
    from funcnn.compiler import compiler_options

    return _jax_runner(wl, x, y, wl.params, raw_apply(wl.ops), compiler_options=compiler_options())


def build_raw_jax_shuffled(wl, x, y):
    return _jax_runner(wl, x, y, wl.params, raw_apply(wl.ops), shuffle=True)


def build_raw_jax_loop(wl, x, y):
    return _jax_runner(wl, x, y, wl.params, raw_apply(wl.ops), scan=False)


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


def build_funcnn(wl, x, y, **fit_options):
    """``train_step`` for a step; ``fit`` (with ``fit_options``) for an epoch workload."""
    import jax
    import jax.numpy as jnp
    import optax

    import funcnn as fn

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
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    ops = wl.ops

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            for op in ops:
                kind = op[0]
                if kind == "dense":
                    x = nn.Dense(op[1])(x)
                elif kind == "conv":
                    x = nn.Conv(op[1], (op[2], op[2]), strides=op[3], padding=op[4])(x)
                elif kind == "relu":
                    x = nn.relu(x)
                elif kind == "tanh":
                    x = jnp.tanh(x)
                elif kind == "maxpool":
                    x = nn.max_pool(x, (op[1], op[1]), strides=(op[2], op[2]))
                elif kind == "lrn":
                    x = _jax_lrn(x)
                elif kind == "flatten":
                    x = x.reshape(x.shape[0], -1)
            return x

    net = Net()
    template = net.init(jax.random.key(0), jnp.zeros((1, *wl.input_shape)))["params"]
    names = list(template)
    params = {"params": {n: {"kernel": p["w"], "bias": p["b"]} for n, p in zip(names, wl.params)}}
    return _jax_runner(wl, x, y, params, net.apply)


def build_flax_nnx(wl, x, y):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    ops = wl.ops

    class Net(nnx.Module):
        def __init__(self, rngs):
            layers = []
            for op, p in zip([o for o in ops if o[0] in ("dense", "conv")], wl.params):
                if op[0] == "dense":
                    m = nnx.Linear(p["w"].shape[0], op[1], rngs=rngs)
                else:
                    m = nnx.Conv(
                        p["w"].shape[2],
                        op[1],
                        (op[2], op[2]),
                        strides=op[3],
                        padding=op[4],
                        rngs=rngs,
                    )
                m.kernel.value = jnp.asarray(p["w"])
                m.bias.value = jnp.asarray(p["b"])
                layers.append(m)
            self.layers = nnx.List(layers) if hasattr(nnx, "List") else layers

        def __call__(self, x):
            i = 0
            for op in ops:
                kind = op[0]
                if kind in ("dense", "conv"):
                    x = self.layers[i](x)
                    i += 1
                elif kind == "relu":
                    x = nnx.relu(x)
                elif kind == "tanh":
                    x = jnp.tanh(x)
                elif kind == "maxpool":
                    x = jax.lax.reduce_window(
                        x,
                        -jnp.inf,
                        jax.lax.max,
                        (1, op[1], op[1], 1),
                        (1, op[2], op[2], 1),
                        "VALID",
                    )
                elif kind == "lrn":
                    x = _jax_lrn(x)
                elif kind == "flatten":
                    x = x.reshape(x.shape[0], -1)
            return x

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

    def check():
        m, o = make()
        step(m, o, xs[0], ys[0])
        return float(loss_fn(m, xs[0], ys[0]))

    return Runner(unit, check)


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


def build_equinox(wl, x, y):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    ops = wl.ops
    flat_shapes = iter(_conv_shapes(wl))

    def make():
        key = jax.random.key(0)
        mods = []
        for op, p in zip([o for o in ops if o[0] in ("dense", "conv")], wl.params):
            if op[0] == "dense":
                w = p["w"]
                fs = next(flat_shapes, None)
                if fs is not None:
                    w = _chw_dense_weight(w, fs)
                m = eqx.nn.Linear(w.shape[0], op[1], key=key)
                m = eqx.tree_at(
                    lambda m: (m.weight, m.bias), m, (jnp.asarray(w.T), jnp.asarray(p["b"]))
                )
            else:
                c = p["w"].shape[2]
                pad = op[2] // 2 if op[4] == "SAME" else 0
                m = eqx.nn.Conv2d(c, op[1], op[2], stride=op[3], padding=pad, key=key)
                m = eqx.tree_at(
                    lambda m: (m.weight, m.bias),
                    m,
                    (jnp.asarray(p["w"].transpose(3, 2, 0, 1)), jnp.asarray(p["b"])[:, None, None]),
                )
            mods.append(m)
        return mods

    def forward(mods, x1):  # one example, CHW
        i = 0
        for op in ops:
            kind = op[0]
            if kind in ("dense", "conv"):
                x1 = mods[i](x1)
                i += 1
            elif kind == "relu":
                x1 = jax.nn.relu(x1)
            elif kind == "tanh":
                x1 = jnp.tanh(x1)
            elif kind == "maxpool":
                x1 = eqx.nn.MaxPool2d(op[1], op[2])(x1)
            elif kind == "lrn":
                x1 = _jax_lrn(x1.transpose(1, 2, 0)[None])[0].transpose(2, 0, 1)
            elif kind == "flatten":
                x1 = x1.reshape(-1)
        return x1

    opt = optax.sgd(LR, momentum=MOMENTUM)

    def loss_fn(mods, xb, yb):
        logits = jax.vmap(lambda e: forward(mods, e))(xb)
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @eqx.filter_jit
    def step(mods, o, xb, yb):
        value, g = eqx.filter_value_and_grad(loss_fn)(mods, xb, yb)
        updates, o = opt.update(g, o, eqx.filter(mods, eqx.is_array))
        return eqx.apply_updates(mods, updates), o, value

    xs, ys = _jax_batches(wl, x, y)
    if xs.ndim == 5:  # images: NHWC -> NCHW
        xs = xs.transpose(0, 1, 4, 2, 3)
    mods = make()
    state = {"m": mods, "o": opt.init(eqx.filter(mods, eqx.is_array))}

    xl, yl = list(xs), list(ys)

    def unit():
        for xb, yb in zip(xl, yl):
            state["m"], state["o"], v = step(state["m"], state["o"], xb, yb)
        jax.block_until_ready(v)

    def check():
        nonlocal flat_shapes
        flat_shapes = iter(_conv_shapes(wl))
        m = make()
        m, _, _ = step(m, opt.init(eqx.filter(m, eqx.is_array)), xs[0], ys[0])
        return float(loss_fn(m, xs[0], ys[0]))

    return Runner(unit, check)


# ----------------------------------------------------------------------------- PyTorch


def _torch_model(wl):
    import torch
    from torch import nn

    mods, params, flat_shapes = [], iter(wl.params), iter(_conv_shapes(wl))
    for op in wl.ops:
        kind = op[0]
        if kind == "dense":
            p = next(params)
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
            p = next(params)
            pad = op[2] // 2 if op[4] == "SAME" else 0
            m = nn.Conv2d(p["w"].shape[2], op[1], op[2], stride=op[3], padding=pad)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["w"].transpose(3, 2, 0, 1))))
                m.bias.copy_(torch.from_numpy(p["b"]))
            mods.append(m)
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "tanh":
            mods.append(nn.Tanh())
        elif kind == "maxpool":
            mods.append(nn.MaxPool2d(op[1], op[2]))
        elif kind == "lrn":  # torch divides alpha by n: pass α·n for the paper's formula
            mods.append(
                nn.LocalResponseNorm(LRN["n"], LRN["alpha"] * LRN["n"], LRN["beta"], LRN["k"])
            )
        elif kind == "flatten":
            mods.append(nn.Flatten())
    return nn.Sequential(*mods)


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

    def check():
        _, f, o = make()
        step(f, o, xs[0], ys[0])
        with torch.no_grad():
            return float(loss_fn(f(xs[0]).float(), ys[0]))

    return Runner(unit, check)


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
