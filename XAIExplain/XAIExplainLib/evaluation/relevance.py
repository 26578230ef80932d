"""Relevance mass and relevance rank accuracy (Arras, Osman & Samek, Information Fusion 2022).

Both compare a map with a ground-truth mask, without running a model:

* **relevance mass accuracy** = (relevance inside the mask) / (total relevance);
* **relevance rank accuracy** = the share of the K most relevant voxels that
  lie inside the mask, K being the mask's size (1: the top-K voxels *are*
  the mask).

Arras et al. count positive relevance only, so negative values are clipped
first; for a non-negative map both equal Quantus's metrics of the same
names.  With that clipping the mass accuracy is exactly the energy-based
pointing game (Wang et al., Score-CAM), so it is computed there, in one
place.  Voxels tied at the K-th rank are ordered by a seeded permutation (as
in the deletion curve), so a constant map scores the mask's volume fraction
on average instead of whatever lies first in memory.
"""
from __future__ import annotations

import torch

from ._checks import as_maps, as_masks, require_nonempty
from .localisation import energy_pointing_game
from .perturbation import _ranks

__all__ = ["relevance_mass_accuracy", "relevance_rank_accuracy"]


def relevance_mass_accuracy(maps, masks) -> torch.Tensor:
    """Share of the map's positive relevance inside the mask, per sample, in [0, 1]."""
    return energy_pointing_game(maps, masks)


def relevance_rank_accuracy(maps, masks, seed: int = 0) -> torch.Tensor:
    """Share of the mask-sized top of the map's ranking that falls inside the mask, per sample."""
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    require_nonempty(masks)
    n = maps.shape[0]
    inside = masks.reshape(n, -1)
    size = inside.sum(dim=1, keepdim=True)
    top = _ranks(maps.clamp_min(0), seed) < size
    hits = (top & inside).sum(dim=1).double()
    return (hits / size[:, 0].double()).to(maps.dtype)
