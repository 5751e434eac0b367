"""The benchmark workloads, defined once in plain numpy so every contender gets the same
weights, the same batch and the same optimizer (SGD, momentum 0.9, lr 0.01).

A network is a list of ops; params are numpy arrays in funcnn's layout (Dense ``w`` as
``(in, out)``, Conv ``w`` as HWIO, images NHWC). Each contender converts them to its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LR, MOMENTUM = 0.01, 0.9
DTYPES = ("float32", "tf32", "bfloat16")


@dataclass
class Workload:
    name: str
    title: str
    ops: list[tuple]  # ("dense", out) ("conv", filters, k, stride, pad) ("relu",) ("tanh",)
    #                     ("maxpool", window, stride) ("flatten",) ("lrn",)
    input_shape: tuple  # one example, NHWC without N, or (features,)
    batch: int
    classes: int
    steps: int = 1  # steps per timed unit: 1, or a whole epoch
    n_points: int = 0  # for epoch workloads: the dataset size
    flops_per_step: float = 0.0
    params: list = field(default_factory=list)
    dtype: str = "float32"  # float32, tf32 (float32 storage, TF32 matmuls on a GPU), bfloat16
    device: str = "cpu"  # where PyTorch runs: cpu or cuda (JAX uses its default device)


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


def _out(n: int, k: int, s: int, pad: str) -> int:
    return -(-n // s) if pad == "SAME" else (n - k) // s + 1


def shapes_and_params(ops, input_shape, seed: int = 0):
    """Draw params (He-normal weights, zero biases) and count forward FLOPs per example."""
    rng = np.random.default_rng(seed)
    shape, params, flops = tuple(input_shape), [], 0.0
    for op in ops:
        if op[0] == "dense":
            n_in = int(np.prod(shape))
            w = rng.normal(0, np.sqrt(2 / n_in), (n_in, op[1])).astype(np.float32)
            params.append({"w": w, "b": np.zeros(op[1], np.float32)})
            flops += 2 * n_in * op[1]
            shape = (op[1],)
        elif op[0] == "conv":
            _, f, k, s, pad = op
            h, w_, c = shape
            fan_in = k * k * c
            w = rng.normal(0, np.sqrt(2 / fan_in), (k, k, c, f)).astype(np.float32)
            params.append({"w": w, "b": np.zeros(f, np.float32)})
            shape = (_out(h, k, s, pad), _out(w_, k, s, pad), f)
            flops += 2 * fan_in * f * shape[0] * shape[1]
        elif op[0] == "maxpool":
            _, k, s = op
            shape = ((shape[0] - k) // s + 1, (shape[1] - k) // s + 1, shape[2])
        elif op[0] == "flatten":
            shape = (int(np.prod(shape)),)
    return params, shape, flops


def make(
    name: str, quick: bool = False, tiny: bool = False, dtype: str = "float32", device: str = "cpu"
) -> Workload:
    """Build a workload by name: mlp, lenet, epoch, alexnet.

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
    else:
        raise ValueError(f"unknown workload {name!r}")
    wl.dtype, wl.device = dtype, device
    wl.params, out, fwd = shapes_and_params(wl.ops, wl.input_shape)
    assert out == (wl.classes,), (name, out)
    wl.flops_per_step = 3 * fwd * wl.batch  # forward + backward ≈ 3 × forward
    return wl


def batch(wl: Workload, seed: int = 1):
    """The inputs and integer labels: one batch, or the whole epoch's data."""
    rng = np.random.default_rng(seed)
    n = wl.n_points or wl.batch
    x = rng.normal(size=(n, *wl.input_shape)).astype(np.float32)
    y = rng.integers(0, wl.classes, n).astype(np.int32)
    return x, y
