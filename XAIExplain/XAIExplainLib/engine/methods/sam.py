"""SAM — saliency activation map (Philbrick et al., AJR 2018, "What does deep learning see?").

The paper's formula was not available to us (only its abstract: SAM identifies the
input voxels a layer used, and is more specific than guided backprop, CAM and
Grad-CAM). What is implemented is OUR READING of it (https://doi.org/10.2214/AJR.18.20331):

- layer mode (``sam_mode="layer"``, default): what layer l responds to, whatever the
  class: SAM_l(x) = | d( sum over channels and space of ReLU(A^l) ) / dx |, max over
  input channels;
- class mode (``sam_mode="class"``): what of layer l's response matters for the target:
  SAM_l^c(x) = | d( sum_s ReLU( sum_k a_k^c A^l_k ) ) / dx |, with a^c the Grad-CAM
  weights (spatial mean of d y^c / d A^l), held constant in the derivative.

Any layer works, shallow ones included. In layer mode the forward pass stops as soon
as the last requested layer has run: the rest of the network is not evaluated.
"""
from __future__ import annotations

import torch

from ..capture import LayerCapture
from ..options import choice
from ..registry import MethodInfo, register
from ..targets import resolve_target

MODES = ("layer", "class")


class _StopForward(Exception):
    """Raised by a forward hook once every requested layer has run (layer mode needs no more)."""


def _spatial(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.dim()))


def _input_saliency(objective: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """| d objective / dx |, max over input channels: (N, *S)."""
    (grad,) = torch.autograd.grad(objective, x, retain_graph=True, allow_unused=True)
    if grad is None:
        return torch.zeros((x.shape[0],) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    return grad.abs().amax(dim=1)


def sam_maps(model, x: torch.Tensor, layers, target, mode: str, tokens=None) -> dict[str, torch.Tensor]:
    """SAM of each (name, module) layer at input resolution, (N, *S) each; inside ``explaining(model)``."""
    x = x.detach().clone().requires_grad_(True)
    names = [name for name, _ in layers]
    with LayerCapture(list(layers), x, tokens, model) as capture:
        handles = []
        if mode == "layer":
            def stop_when_done(module, inputs, output):
                if all(name in capture.activations for name in names):
                    raise _StopForward
            handles = [module.register_forward_hook(stop_when_done) for _, module in layers]
        try:
            output = model(x)
        except _StopForward:
            output = None
        finally:
            for handle in handles:
                handle.remove()
    capture.check_all_ran()
    activations = [capture.activations[name] for name in names]
    if mode == "layer":
        return {name: _input_saliency(torch.relu(a).sum(), x) for name, a in zip(names, activations)}
    score = resolve_target(target, output).score(output).sum()
    gradients = torch.autograd.grad(score, activations, retain_graph=True, allow_unused=True)
    maps = {}
    for name, a, g in zip(names, activations, gradients):
        weights = torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device) if g is None else g.mean(dim=_spatial(g))
        weights = weights.detach().reshape(a.shape[:2] + (1,) * (a.dim() - 2))
        maps[name] = _input_saliency(torch.relu((weights * a).sum(dim=1)).sum(), x)
    return maps


def compute(request) -> torch.Tensor:
    mode = choice(request.options, "sam_mode", "layer", MODES)
    maps = sam_maps(request.model, request.x, request.layers(), request.target, mode, request.reading.tokens)
    return request.per_layer(lambda name, _: maps[name])


register(MethodInfo(
    "sam", "SAM (our reading of Philbrick et al. 2018): input saliency of a layer's response (or its Grad-CAM)",
    compute=compute, family="gradient", cost="1 forward to the layer + 1 backward to the input",
    options=("sam_mode",), label="SAM",
))
