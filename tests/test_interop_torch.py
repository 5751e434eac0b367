"""LeNet-5 and AlexNet built in PyTorch, converted to funcnn and back: the same logits.

PyTorch's ``LocalResponseNorm`` divides α by the window ``n``; the paper (and funcnn's LRN)
does not, so the PyTorch AlexNet is built with ``alpha = 1e-4 · 5``. The inputs are scaled
up so that the normalization changes the logits (a wrong α fails the test)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import interop

torch = pytest.importorskip("torch")
nn = torch.nn


def torch_lenet5() -> nn.Module:
    """funcnn.models.lenet5(): tanh, average pooling, VALID 5×5 convolutions."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    ).eval()  # fmt: skip


def torch_alexnet(num_classes: int = 1000) -> nn.Module:
    """funcnn.models.alexnet(), single tower, in eval mode (dropout off)."""

    def lrn():
        return nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)

    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    ).eval()  # fmt: skip


def torch_logits(module: nn.Module, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def assert_close(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * max(scale, 1.0))


def test_lenet5_from_torch_and_back():
    torch.manual_seed(0)
    module, model, shape = torch_lenet5(), fn.models.lenet5(), (-1, 32, 32, 1)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32)
    params = interop.from_torch(module.state_dict(), model, shape)
    assert_close(model.apply(params, x), torch_logits(module, x))

    _, params = model.init(jax.random.key(1), shape)  # funcnn's own weights, to PyTorch
    fresh = torch_lenet5()
    fresh.load_state_dict(interop.to_torch(params, model, shape, like=fresh.state_dict()))
    assert_close(torch_logits(fresh, x), model.apply(params, x))


def test_alexnet_from_torch_and_back():
    torch.manual_seed(0)
    module, model, shape = torch_alexnet(), fn.models.alexnet(), (-1, 227, 227, 3)
    x = 30 * np.random.default_rng(0).normal(size=(2, 227, 227, 3)).astype(np.float32)
    sd = module.state_dict()
    params = interop.from_torch(sd, model, shape)
    assert params["fc6"]["w"].shape == (9216, 4096)
    assert_close(model.apply(params, x), torch_logits(module, x))
    back = interop.to_torch(params, model, shape, like=sd)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_bfloat16_tensors_keep_their_dtype():
    module = nn.Sequential(nn.Linear(2, 3)).to(torch.bfloat16)
    params = interop.from_torch(module.state_dict(), fn.Dense(3), (-1, 2))
    assert params["w"].dtype == jnp.bfloat16
    want = module.state_dict()["0.weight"].float().numpy().T
    assert (np.asarray(params["w"], np.float32) == want).all()
    back = interop.to_torch(params, fn.Dense(3), (-1, 2), like=module.state_dict())
    assert back["0.weight"].dtype == torch.bfloat16
    assert torch.equal(back["0.weight"], module.state_dict()["0.weight"])


def test_a_safetensors_file_reads_in_pytorch(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    params = {"conv1": {"w": jnp.ones((3, 3, 1, 2), jnp.bfloat16), "b": jnp.zeros(2)}}
    path = interop.save_safetensors(params, tmp_path / "p.safetensors")
    tensors = safetensors_torch.load_file(str(path))
    assert tensors["conv1/w"].dtype == torch.bfloat16 and tensors["conv1/b"].shape == (2,)
