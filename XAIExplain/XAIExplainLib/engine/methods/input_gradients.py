"""Input-gradient maps: saliency, guided backprop, guided Grad-CAM.

These need the full backward to the input (still no parameter gradients). Raw maps
are (N, *S): channel-reduced input gradients.
"""
from __future__ import annotations

import torch

from ..registry import MethodInfo, register
from ..request import Request
from .gradient_cams import gradcam, gradient_cam


def saliency(input_gradient: torch.Tensor) -> torch.Tensor:
    """|dy/dx|, max over input channels."""
    return input_gradient.abs().amax(dim=1)


def channel_sum(input_gradient: torch.Tensor) -> torch.Tensor:
    """Signed gradient summed over input channels (the identity for single-channel CT/MRI)."""
    return input_gradient.sum(dim=1)


def _saliency(request: Request):
    return saliency(request.input_gradient_pass().input_gradient)


def _guided_backprop(request: Request):
    return channel_sum(request.guided_pass().input_gradient)


def _guided_gradcam(request: Request):
    return _guided_backprop(request) * gradient_cam(gradcam)(request)


register(MethodInfo(
    "saliency", "Saliency: |d score / d input|, max over channels",
    compute=_saliency, family="gradient", needs_layer=False, cost="1 forward + full backward",
))
register(MethodInfo(
    "guided_backprop", "Guided backpropagation: input gradient with ReLU backward gated to positive gradients",
    compute=_guided_backprop, family="gradient", needs_layer=False, signed=True, cost="1 forward + full backward",
    needs_hooks=True,  # ReLU backward swapped by intercepting torch functions: not inside TorchScript
))
register(MethodInfo(
    "guided_gradcam", "Guided Grad-CAM: guided backpropagation x upsampled Grad-CAM",
    compute=_guided_gradcam, family="gradient", signed=True, cost="2 forward + 2 backward",
))
