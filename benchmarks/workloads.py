"""The benchmark workloads, defined once in plain numpy so every contender gets the same
weights, the same batch and the same optimizer (SGD, momentum 0.9, lr 0.01).

A network is a list of ops; params are numpy arrays in funcnn's layout (Dense ``w`` as
``(in, out)``, Conv ``w`` as HWIO, images NHWC), one entry per op with params, in the order
the ops run (a block's body before its shortcut). BatchNorm's running statistics are a second
list, ``state``, one entry per ``("bn",)``. Each contender converts both to its own layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LR, MOMENTUM = 0.01, 0.9
# BatchNorm in PyTorch's convention: the batch statistics' weight in the running ones, and ε.
# Flax and Equinox write the other weight, 1 − BN_MOMENTUM (0.9).
BN_MOMENTUM, BN_EPSILON = 0.1, 1e-5
DTYPES = ("float32", "tf32", "bfloat16")


@dataclass
class Workload:
    name: str
    title: str
    ops: list[tuple]  # ("dense", out) ("conv", filters, k, stride, pad[, bias=True]) ("relu",)
    #    ("tanh",) ("maxpool", window, stride) ("flatten",) ("lrn",) ("bn",) ("gap",): global
    #    average pooling; ("block", body_ops, shortcut_ops): relu(body(x) + shortcut(x)),
    #    the shortcut the identity when its ops are ()
    input_shape: tuple  # one example, NHWC without N, or (features,)
    batch: int
    classes: int
    steps: int = 1  # steps per timed unit: 1, or a whole epoch
    n_points: int = 0  # for epoch workloads: the dataset size
    flops_per_step: float = 0.0
    params: list = field(default_factory=list)
    dtype: str = "float32"  # float32, tf32 (float32 storage, TF32 matmuls on a GPU), bfloat16
    device: str = "cpu"  # where PyTorch runs: cpu or cuda (JAX uses its default device)
    state: list = field(default_factory=list)  # {"mean", "var"} of each ("bn",), in order
    pads: list = field(default_factory=list)  # per params entry: a conv's ((lo, hi), (lo, hi))
    # the funcnn.models constructor of the same network, (name, kwargs), for funcnn's contender;
    # empty: funcnn builds the ops with its layers, as the others do
    zoo: tuple = ()

    @property
    def stateful(self) -> bool:
        return bool(self.state)


MLP_OPS = [("dense", 512), ("relu",), ("dense", 512), ("relu",), ("dense", 10)]
LENET_OPS = [
    ("conv", 6, 5, 1, "SAME"),
    ("relu",),
    ("maxpool", 2, 2),
    ("conv", 16, 5, 1, "VALID"),
    ("relu",),
    ("maxpool", 2, 2),
    ("flatten",),
    ("dense", 120),
    ("relu",),
    ("dense", 84),
    ("relu",),
    ("dense", 10),
]
ALEXNET_OPS = [
    ("conv", 96, 11, 4, "VALID"),
    ("relu",),
    ("lrn",),
    ("maxpool", 3, 2),
    ("conv", 256, 5, 1, "SAME"),
    ("relu",),
    ("lrn",),
    ("maxpool", 3, 2),
    ("conv", 384, 3, 1, "SAME"),
    ("relu",),
    ("conv", 384, 3, 1, "SAME"),
    ("relu",),
    ("conv", 256, 3, 1, "SAME"),
    ("relu",),
    ("maxpool", 3, 2),
    ("flatten",),
    ("dense", 4096),
    ("relu",),
    ("dense", 4096),
    ("relu",),
    ("dense", 1000),
]
SMALL_OPS = [("dense", 16), ("tanh",), ("dense", 16), ("tanh",), ("dense", 2)]
RESNET = dict(widths=(16, 32, 64), blocks=2)


def resnet_ops(widths, blocks: int, classes: int) -> list[tuple]:
    """``funcnn.models.resnet``'s network as ops: a bias-free conv3×3 → BN → ReLU stem, stages
    of basic blocks ``relu(BN(conv3×3(relu(BN(conv3×3(x))))) + S(x))``, the first block of each
    later stage at stride 2 with a 1×1 conv + BN projection ``S``; global average pooling, dense."""

    def conv_bn(f, k, s):
        return (("conv", f, k, s, "SAME", False), ("bn",))

    ops = [*conv_bn(widths[0], 3, 1), ("relu",)]
    for i, f in enumerate(widths):
        for j in range(blocks):
            s = 2 if i > 0 and j == 0 else 1
            body = (*conv_bn(f, 3, s), ("relu",), *conv_bn(f, 3, 1))
            ops.append(("block", body, conv_bn(f, 1, s) if s == 2 else ()))
    return [*ops, ("gap",), ("dense", classes)]


def _out(n: int, k: int, s: int, pad: str) -> int:
    return -(-n // s) if pad == "SAME" else (n - k) // s + 1


def same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """XLA's "SAME" padding of one axis, (before, after): the extra one goes after."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _walk(ops, shape, rng, out):
    """Draw the params of ``ops`` from ``shape`` on, appending to ``out``; the output shape."""
    for op in ops:
        if op[0] == "dense":
            n_in = int(np.prod(shape))
            w = rng.normal(0, np.sqrt(2 / n_in), (n_in, op[1])).astype(np.float32)
            out["params"].append({"w": w, "b": np.zeros(op[1], np.float32)})
            out["pads"].append(None)
            out["flops"] += 2 * n_in * op[1]
            shape = (op[1],)
        elif op[0] == "conv":
            _, f, k, s, pad = op[:5]
            h, w_, c = shape
            fan_in = k * k * c
            w = rng.normal(0, np.sqrt(2 / fan_in), (k, k, c, f)).astype(np.float32)
            bias = len(op) < 6 or op[5]
            out["params"].append({"w": w, "b": np.zeros(f, np.float32)} if bias else {"w": w})
            pads = (same_pads(h, k, s), same_pads(w_, k, s)) if pad == "SAME" else ((0, 0),) * 2
            out["pads"].append(pads)
            shape = (_out(h, k, s, pad), _out(w_, k, s, pad), f)
            out["flops"] += 2 * fan_in * f * shape[0] * shape[1]
        elif op[0] == "bn":  # γ, β off 1 and 0, so that a misplaced one shows in the loss
            c = shape[-1]
            scale = (1 + 0.1 * rng.normal(size=c)).astype(np.float32)
            offset = (0.1 * rng.normal(size=c)).astype(np.float32)
            out["params"].append({"scale": scale, "offset": offset})
            out["pads"].append(None)
            out["state"].append({"mean": np.zeros(c, np.float32), "var": np.ones(c, np.float32)})
        elif op[0] == "block":
            body = _walk(op[1], shape, rng, out)
            skip = _walk(op[2], shape, rng, out)
            assert body == skip, (body, skip)
            shape = body
        elif op[0] == "maxpool":
            _, k, s = op
            shape = ((shape[0] - k) // s + 1, (shape[1] - k) // s + 1, shape[2])
        elif op[0] == "gap":
            shape = (shape[-1],)
        elif op[0] == "flatten":
            shape = (int(np.prod(shape)),)
    return shape


def network(ops, input_shape, seed: int = 0) -> dict:
    """Params (He-normal weights, zero biases), BatchNorm state (0 and 1), each conv's
    padding, the output shape and the forward FLOPs per example."""
    out = {"params": [], "state": [], "pads": [], "flops": 0.0}
    out["shape"] = _walk(ops, tuple(input_shape), np.random.default_rng(seed), out)
    return out


def shapes_and_params(ops, input_shape, seed: int = 0):
    """Draw params (He-normal weights, zero biases) and count forward FLOPs per example."""
    net = network(ops, input_shape, seed)
    return net["params"], net["shape"], net["flops"]


def make(
    name: str, quick: bool = False, tiny: bool = False, dtype: str = "float32", device: str = "cpu"
) -> Workload:
    """Build a workload by name: mlp, lenet, epoch, alexnet, resnet.

    ``dtype`` is the arithmetic every contender uses (params, inputs and activations; the
    loss is taken on logits cast to float32); ``device`` is where PyTorch runs.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {DTYPES}")
    if name == "mlp":
        wl = Workload(
            "mlp",
            "(a) MLP 784-512-512-10 step, batch 128",
            MLP_OPS,
            (784,),
            batch=8 if tiny else 128,
            classes=10,
        )
    elif name == "lenet":
        wl = Workload(
            "lenet",
            "(b) LeNet-5 step, 28×28×1, batch 128",
            LENET_OPS,
            (28, 28, 1),
            batch=8 if tiny else 128,
            classes=10,
        )
    elif name == "epoch":
        n = 256 if tiny else 8192
        wl = Workload(
            "epoch",
            "(c) 2-16-16-2 tanh MLP, epoch of 8,192 points, batch 32",
            SMALL_OPS,
            (2,),
            batch=32,
            classes=2,
            steps=n // 32,
            n_points=n,
        )
    elif name == "alexnet":
        wl = Workload(
            "alexnet",
            "(d) AlexNet forward+backward, 227×227×3, batch 8",
            ALEXNET_OPS,
            (227, 227, 3),
            batch=2 if tiny else 8,
            classes=1000,
        )
    elif name == "resnet":
        wl = Workload(
            "resnet",
            "(f) ResNet-14 (16-32-64) with BatchNorm step, 32×32×3, batch 32",
            resnet_ops(RESNET["widths"], RESNET["blocks"], 10),
            (32, 32, 3),
            batch=4 if tiny else 32,
            classes=10,
            zoo=("resnet", RESNET),
        )
    else:
        raise ValueError(f"unknown workload {name!r}")
    wl.dtype, wl.device = dtype, device
    net = network(wl.ops, wl.input_shape)
    wl.params, wl.state, wl.pads = net["params"], net["state"], net["pads"]
    assert net["shape"] == (wl.classes,), (name, net["shape"])
    wl.flops_per_step = 3 * net["flops"] * wl.batch  # forward + backward ≈ 3 × forward
    return wl


def batch(wl: Workload, seed: int = 1):
    """The inputs and integer labels: one batch, or the whole epoch's data."""
    rng = np.random.default_rng(seed)
    n = wl.n_points or wl.batch
    x = rng.normal(size=(n, *wl.input_shape)).astype(np.float32)
    y = rng.integers(0, wl.classes, n).astype(np.int32)
    return x, y
