"""Input-gradient maps: saliency, guided backprop, guided Grad-CAM.

These need the full backward to the input (still no parameter gradients). Raw maps
are (N, *S): channel-reduced input gradients.
"""
from __future__ import annotations

import torch


def saliency(input_gradient: torch.Tensor) -> torch.Tensor:
    """|dy/dx|, max over input channels."""
    return input_gradient.abs().amax(dim=1)


def channel_sum(input_gradient: torch.Tensor) -> torch.Tensor:
    """Signed gradient summed over input channels (the identity for single-channel CT/MRI)."""
    return input_gradient.sum(dim=1)
