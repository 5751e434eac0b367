"""Weights across frameworks: safetensors files, and PyTorch ``state_dict`` s.

* :func:`save_safetensors` / :func:`load_safetensors`: any params tree as a safetensors
  file, one tensor per leaf named by its path (``conv1/w``), dtypes kept (``bfloat16`` too).
  Needs ``pip install 'funcnn[safetensors]'``; PyTorch is not needed.
* :func:`from_torch` / :func:`to_torch`: a PyTorch ``state_dict`` of the same architecture as
  funcnn params and back, layers matched by order, kernels OIHW ↔ HWIO, dense weights
  ``(out, in)`` ↔ ``(in, out)``, and the first dense layer after a ``Flatten`` reordered
  between PyTorch's ``(C, H, W)`` flatten and funcnn's ``(H, W, C)``. ``from_torch`` and
  :func:`to_state_dict` work on NumPy arrays too, without PyTorch.

>>> import jax
>>> from funcnn import interop
>>> from funcnn.models import lenet5
>>> model, shape = lenet5(), (-1, 32, 32, 1)
>>> _, params = model.init(jax.random.key(0), shape)
>>> sd = interop.to_state_dict(params, model, shape)  # PyTorch's names and layouts
>>> back = interop.from_torch(sd, model, shape)
>>> all(jax.tree_util.tree_leaves(jax.tree.map(lambda a, b: (a == b).all(), params, back)))
True
"""

from .files import flatten, load_safetensors, require_safetensors, save_safetensors, unflatten
from .layout import WeightLayer, flatten_order, from_torch_layout, to_torch_layout, weight_layers
from .pytorch import TorchLayer, from_torch, require_torch, to_state_dict, to_torch, torch_layers

__all__ = [
    "save_safetensors",
    "load_safetensors",
    "flatten",
    "unflatten",
    "require_safetensors",
    "from_torch",
    "to_torch",
    "to_state_dict",
    "require_torch",
    "weight_layers",
    "WeightLayer",
    "torch_layers",
    "TorchLayer",
    "flatten_order",
    "from_torch_layout",
    "to_torch_layout",
]
