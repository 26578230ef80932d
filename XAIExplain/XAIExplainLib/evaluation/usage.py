"""Estimating the voxels a model uses, when no phantom tells us.

The specificity of a map (Philbrick et al., "What Does Deep Learning See? Insights From a
Classifier Trained to Predict Contrast Enhancement Phase From CT Images", AJR 2018,
https://doi.org/10.2214/AJR.18.20331) compares it with the voxels the model uses.

Specificity needs the set of voxels the model really relies on.  In a phantom
that set is known by construction; on real data it is estimated by occlusion:
a voxel is "used" when hiding the window around it changes the target score
by more than ``threshold`` of the largest change in that sample.
"""
from __future__ import annotations

import torch

from ..engine import METHODS, explain
from ._checks import as_maps, check_input
from ._model import check_model

__all__ = ["occlusion_usage_mask"]


def occlusion_usage_mask(model, x: torch.Tensor, target=None, threshold: float = 0.1,
                         **occlusion_options) -> torch.Tensor:
    """Bool (N, *S) mask of the voxels whose occlusion moves the target score.

    Uses the engine's ``"occlusion"`` method (its options, such as window
    size, stride and baseline, pass through) with the magnitude of the score
    change normalised per sample, then keeps voxels above ``threshold``.
    """
    check_model(model)
    if "occlusion" not in METHODS:
        raise ValueError(
            "estimating the voxels a model uses needs the engine's 'occlusion' method, which this version "
            f"lacks (available: {', '.join(sorted(METHODS))}); pass the mask of used voxels instead"
        )
    value = float(threshold)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"threshold is a fraction of the largest score change and must lie in [0, 1), got {value}")
    change = explain(model, x, "occlusion", target=target, normalize=False, **occlusion_options)
    change = as_maps(change, "occlusion map")
    check_input(x, change)
    magnitude = change.abs().reshape(change.shape[0], -1)
    peak = magnitude.max(dim=1, keepdim=True).values
    used = (magnitude > value * peak) & (peak > 0)
    return used.reshape(change.shape)
