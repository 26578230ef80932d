"""FullGrad (Srinivas & Fleuret, NeurIPS 2019), post-processed as pytorch-grad-cam does.

The full-gradient decomposition writes the score as input x input-gradient plus, for
every layer with a bias b, the bias-gradient b * dy/dz (z the layer's output). The map
sums post-processed pieces: |x * dy/dx| per input channel, and |b_k * dy/dz_k| per
channel k of every convolution (also transposed) and batch normalisation with a bias
(batch norm in eval mode is z = gamma (u - mu) / sqrt(var + eps) + beta, so its bias is
beta - gamma mu / sqrt(var + eps)); each piece is min-max scaled per sample and channel,
resized to the input and summed (pytorch-grad-cam divides by the range + 1e-7, which
shrinks pieces with a small range; here the range itself is used). Resizing is linear, so the channels of one layer are
summed at the layer's resolution and resized once.

One forward and one backward to the input give every layer's output gradient (the
layers are captured without being detached, ``capture.run_pass``); no parameter
gradient is built. A module that runs twice in one forward is refused, as everywhere.
"""
from __future__ import annotations

import torch
from torch import nn

from ..capture import run_pass
from ..normalize import minmax
from ..registry import MethodInfo, register
from ..request import upsample

BIAS_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def layer_bias(layer: nn.Module) -> torch.Tensor:
    """The bias of a convolution, or the effective bias of a batch norm in eval mode: (K,)."""
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        scale = layer.weight if layer.weight is not None else torch.ones_like(layer.running_var)
        shift = layer.bias if layer.bias is not None else torch.zeros_like(layer.running_mean)
        return (shift - layer.running_mean * scale / torch.sqrt(layer.running_var + layer.eps)).detach()
    return layer.bias.detach()


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions with a bias and batch norms with running statistics, in module order."""
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, BIAS_LAYERS):
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.running_mean is not None and (module.bias is not None or module.weight is not None):
                layers.append((name, module))
        elif module.bias is not None:
            layers.append((name, module))
    return layers


def _scaled_channel_sum(pieces: torch.Tensor) -> torch.Tensor:
    """(N, K, *s) -> (N, *s): each (sample, channel) min-max scaled to [0, 1], then summed over channels."""
    return minmax(pieces.flatten(0, 1)).reshape(pieces.shape).sum(dim=1)


def _fullgrad(request):
    layers = bias_layers(request.model)
    result = request._cached("fullgrad", lambda: run_pass(request.model, request.x, request.target, layers,
                                                          input_gradient=True))
    size = request.spatial_size
    total = _scaled_channel_sum((request.x * result.input_gradient).abs())
    for name, layer in layers:
        gradient = result.gradients[name]
        bias = layer_bias(layer).to(gradient.dtype).reshape((1, -1) + (1,) * (gradient.dim() - 2))
        total = total + upsample(_scaled_channel_sum((bias * gradient).abs()), size)
    request.info["fullgrad"] = {"bias_layers": [name for name, _ in layers]}
    return total


register(MethodInfo(
    "fullgrad", "FullGrad: |input x gradient| plus |bias x gradient| of every convolution and batch norm",
    compute=_fullgrad, family="gradient", needs_layer=False, cost="1 forward + full backward",
    needs_hooks=True,  # the bias gradients of every convolution and batch norm are captured by hooks
))
