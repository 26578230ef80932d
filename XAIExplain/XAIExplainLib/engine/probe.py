"""One probe forward that records which modules produce which tensor shapes, in execution order.

Shared by the default-layer choice (layers.py) and the decoder search (decoder_layers.py).
"""
from __future__ import annotations

import weakref

import torch
from torch import nn


def probe_outputs(model: nn.Module, x: torch.Tensor, include=lambda name, module: True):
    """Run the first sample once (inference mode) and record the tensor outputs of the modules
    ``include`` selects, in execution order: [(name, shape, is_model_output)], and the model output.

    Outputs are tracked through weak references, not ``id()``: an intermediate tensor freed
    during the forward pass can leave its id to the model's output, which made a layer look
    like the output on some machines.
    """
    seen: list[tuple[str, tuple[int, ...], "weakref.ref[torch.Tensor]"]] = []

    def recorder(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                seen.append((name, tuple(output.shape), weakref.ref(output)))
        return hook

    hooks = [module.register_forward_hook(recorder(name))
             for name, module in model.named_modules() if name and include(name, module)]
    try:
        with torch.inference_mode():
            out = model(x[:1])
    finally:
        for handle in hooks:
            handle.remove()
    order = [(name, shape, isinstance(out, torch.Tensor) and ref() is out) for name, shape, ref in seen]
    return order, out
