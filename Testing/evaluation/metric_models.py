"""Tiny models with known answers, and the peer libraries, for the metric tests of this folder.

Quantus imports zennit when it is installed, and zennit imports torchvision,
which does not load with the CPU build of torch the project pins (and which
the project never imports).  ``quantus()`` hides both from Quantus's
``find_spec`` probes while it is imported, so Quantus loads without them: the
metrics compared here use neither.
"""
from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch
from torch import nn

# The region-reading classifier of the faithfulness tests, shared rather than copied.
from Testing.evaluation.test_faithfulness import RegionLogit, region_mask  # noqa: F401

_HIDDEN = ("zennit", "torchvision")


def quantus():
    """Quantus, imported without its optional zennit/torchvision branch; skips when absent."""
    real = importlib.util.find_spec
    if real("quantus") is None:
        pytest.skip("quantus is not installed")

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] in _HIDDEN else real(name, *args, **kwargs)

    importlib.util.find_spec = find_spec
    try:
        return importlib.import_module("quantus")
    finally:
        importlib.util.find_spec = real


def captum_metrics():
    return pytest.importorskip("captum.metrics")


class WeightMapClassifier(nn.Module):
    """logit_k = sum_v W[k, v] * x_v (+ b_k): linear, so its saliency is |W[k]| exactly."""

    def __init__(self, weights: torch.Tensor, bias=None):
        super().__init__()
        self.weight = nn.Parameter(weights.clone())
        self.bias = nn.Parameter(torch.zeros(weights.shape[0]) if bias is None else bias.clone())

    def forward(self, x):
        return torch.einsum("nc...,k...->nk", x, self.weight) + self.bias


class WeightMapSegmenter(nn.Module):
    """Per-voxel logits: out[n, k, v] = W[k, v] * x[n, 0, v]; saliency over a region R is |W[k]| on R."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weights.clone())

    def forward(self, x):
        return self.weight.unsqueeze(0) * x[:, :1]


def small_cnn(dims: int, classes: int = 3, seed: int = 0) -> nn.Module:
    """A seeded conv net (conv - ReLU - conv - ReLU - pool - linear) for 2D or 3D inputs."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, 6, 3, padding=1), nn.ReLU(), pool,
                         nn.Flatten(), nn.Linear(6, classes))
