"""Running the model for model-based metrics: eval mode, no gradients, frozen targets.

Metrics that re-run the model (prediction preserved, deletion / insertion)
must leave it exactly as they found it and must score every perturbed output
with the target bound once on the unperturbed output, so that a perturbation
cannot change *what* is being scored (principles 4 and 5 of the design).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


from ..engine.activations import ACTIVATIONS, activate, resolve_activation
from ..engine.validation import check_model

__all__ = ["ACTIVATIONS", "activate", "check_model", "frozen_inference", "resolve_activation"]


def _device_dtype(model: nn.Module, fallback: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return fallback.device, fallback.dtype


@contextlib.contextmanager
def frozen_inference(model: nn.Module, like: torch.Tensor) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Yield ``forward(batch) -> output`` running ``model`` in eval mode without autograd.

    Batches go to the model's device and precision and outputs come back to
    the device of ``like`` (the maps), so metrics stay where the maps are.
    The train/eval flag of every submodule is restored afterwards, also when
    the forward raises, so a model in training keeps training as before.
    """
    device, dtype = _device_dtype(model, like)
    modes = [(module, module.training) for module in model.modules()]

    def forward(batch: torch.Tensor) -> torch.Tensor:
        output = model(batch.to(device=device, dtype=dtype))
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"the model returned {type(output).__name__}, not a tensor; wrap it so that forward "
                "returns class scores (N, K) or segmentation logits (N, K, *S)"
            )
        return output.to(like.device)

    try:
        model.eval()
        with torch.no_grad():
            yield forward
    finally:
        for module, training in modes:
            module.training = training
