"""Average drop and increase in confidence (Chattopadhay et al., WACV 2018, Grad-CAM++).

The map, min-max normalised, multiplies the input (the "explanation map"
E = x * M); Y is the target's confidence on x and O on E:

* drop     = ReLU(Y - O) / Y   (averaged over images: the paper's Average Drop, x 100 for %)
* increase = 1 if O > Y else 0 (averaged: the share of images whose confidence increases)

This is the same masked input and the same frozen target as Prediction
Preserved (``faithfulness.preservation``), which is reused here: for a
classifier Y and O are the target class probability (drop = 1 - PP); for a
segmentation target they are its class probability summed over the scored
voxels (every voxel, or ``region``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .faithfulness import RegionSpec, preservation

__all__ = ["ConfidenceChange", "confidence_change", "average_drop", "increase_in_confidence"]


@dataclass(frozen=True)
class ConfidenceChange:
    """Target confidence on x and on the explanation map, and the two per-sample scores."""

    original: torch.Tensor  # (N,) Y
    explained: torch.Tensor  # (N,) O
    drop: torch.Tensor  # (N,) ReLU(Y - O) / Y
    increase: torch.Tensor  # (N,) 1.0 where O > Y


def confidence_change(model, x: torch.Tensor, maps, target=None, activation: Optional[str] = "auto",
                      region: RegionSpec = None, baseline=0.0) -> ConfidenceChange:
    """Y and O per sample and the drop / increase scores; arguments as for ``preservation``."""
    kept = preservation(model, x, maps, target, activation, region, baseline)
    n = kept.original.shape[0]
    original = kept.original.reshape(n, -1).double().sum(dim=1)
    explained = kept.masked.reshape(n, -1).double().sum(dim=1)
    dtype = kept.original.dtype
    return ConfidenceChange(
        original=original.to(dtype),
        explained=explained.to(dtype),
        drop=((original - explained).clamp_min(0) / original).to(dtype),
        increase=(explained > original).to(dtype),
    )


def average_drop(model, x, maps, target=None, activation: Optional[str] = "auto", region: RegionSpec = None,
                 baseline=0.0) -> torch.Tensor:
    """ReLU(Y - O) / Y per sample (lower = the map keeps what the model needs); see ``confidence_change``."""
    return confidence_change(model, x, maps, target, activation, region, baseline).drop


def increase_in_confidence(model, x, maps, target=None, activation: Optional[str] = "auto",
                           region: RegionSpec = None, baseline=0.0) -> torch.Tensor:
    """1.0 where the explanation map raises the target confidence, else 0.0; see ``confidence_change``."""
    return confidence_change(model, x, maps, target, activation, region, baseline).increase
