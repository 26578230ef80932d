"""Sufficiency (Dasgupta, Frost & Moshkovitz, ICML 2022), 2D and 3D, over a batch of samples.

An explanation is *sufficient* when the samples it also applies to get the
same prediction.  A map applies to another sample when the two maps are
close: with d(i, j) the distance between the flattened maps of samples i
and j, divided by the largest distance in the batch, sample j is covered by
i's map when d(i, j) <= ``threshold``.  Sample i's score is the share of
the *other* samples its map covers that the model assigns the class it
assigns i (argmax of the output); 0 when its map covers no other sample.

The distance is Quantus's default, the standardised Euclidean distance
(each voxel's squared difference divided by that voxel's variance over the
batch, unbiased), or the plain Euclidean one.  A voxel with the same value
in every map (a background that no map marks) tells no maps apart: it is
left out of the standardised distance, where scipy (and so Quantus) would
divide 0 by 0 and score every sample 0.

The metric is a property of the batch: it needs at least two samples, and
a sample's score changes with the samples beside it.  It needs a
classifier's output (N, K).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._checks import as_maps, check_input
from ._model import check_model, frozen_inference

__all__ = ["DISTANCES", "sufficiency", "map_distances"]

#: Distances between flattened maps that ``sufficiency`` accepts.
DISTANCES = ("seuclidean", "euclidean")


def map_distances(maps, distance: str = "seuclidean") -> torch.Tensor:
    """(N, N) float64 distances between the flattened maps (see the module docstring)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    maps = as_maps(maps)
    flat = maps.reshape(maps.shape[0], -1).double()
    if distance == "seuclidean":
        variance = flat.var(dim=0, unbiased=True)
        varying = variance > 0
        flat = flat[:, varying] / variance[varying].sqrt()
    return torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")


def sufficiency(model, x: torch.Tensor, maps, threshold: float = 0.6, distance: str = "seuclidean",
                predictions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N,) share of the samples each map covers that share its sample's predicted class.

    ``predictions`` (N,) class indices replace the model's argmax (the
    model is then not run; pass ``model=None``).
    """
    maps = as_maps(maps)
    n = maps.shape[0]
    if n < 2:
        raise ValueError("sufficiency compares each map with the other samples' maps: pass at least two samples")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a distance relative to the batch's largest and must lie in [0, 1], "
                         f"got {threshold}")
    if predictions is None:
        check_model(model)
        x = check_input(x, maps)
        with frozen_inference(model, maps) as forward:
            output = forward(x)
        if output.dim() != 2:
            raise ValueError(f"sufficiency compares predicted classes and needs a classifier's output (N, K); "
                             f"the model returned {tuple(output.shape)}")
        predictions = output.argmax(dim=1)
    else:
        predictions = torch.as_tensor(predictions, device=maps.device).long().flatten()
        if predictions.numel() != n:
            raise ValueError(f"predictions gives {predictions.numel()} classes for {n} samples")
    distances = map_distances(maps, distance).to(maps.device)
    largest = distances.max()
    if largest > 0:
        distances = distances / largest
    covered = (distances <= threshold) & ~torch.eye(n, dtype=torch.bool, device=maps.device)
    same = predictions.to(maps.device).unsqueeze(0) == predictions.to(maps.device).unsqueeze(1)
    hits = (covered & same).sum(dim=1).double()
    total = covered.sum(dim=1).double()
    return torch.where(total > 0, hits / total.clamp_min(1.0), torch.zeros_like(total)).to(maps.dtype)
