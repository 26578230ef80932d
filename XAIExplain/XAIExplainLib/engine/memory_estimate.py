"""The bytes one forward of a network holds: what a memory budget is checked against.

Counted on a real forward of a sample (the caller picks a small one): the outputs of every leaf module,
through forward hooks. A TorchScript module takes no hooks, so for it the tensors autograd saves for the
backward pass are counted instead (``torch.autograd.graph.saved_tensors_hooks``, which the TorchScript
interpreter honours too): the same order of magnitude, the memory a backward pass keeps alive.
"""
from __future__ import annotations

import torch
from torch import nn


def activation_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of every module output for ``sample``: what a forward + backward may hold at once."""
    if isinstance(model, torch.jit.ScriptModule):
        return _saved_tensor_bytes(model, sample)
    total = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()
    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def _saved_tensor_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during one forward with a gradient on the input."""
    total, seen = [0], set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total[0] += storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(sample.detach().clone().requires_grad_())
    return total[0]
