"""Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): sum_k ReLU(g_k A_k).

HiResCAM sums g * A over channels and then clips; clipping each channel's product first
keeps a location's positive evidence from being cancelled by another channel's negative
evidence. It reads the shared layer pass of the other gradient CAMs (no extra pass).
"""
from __future__ import annotations

import torch

from ..registry import MethodInfo, register


def elementwise(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu(g * a).sum(dim=1)


def _gradcam_elementwise(request):
    result = request.cam_pass()
    return request.per_layer(lambda name, _: elementwise(result.activations[name], result.gradients[name]))


register(MethodInfo(
    "gradcam_elementwise", "Grad-CAM element-wise: positive part of gradient x activation per channel, summed",
    compute=_gradcam_elementwise, layer_map_only=True,
))
