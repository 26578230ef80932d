"""Min-max normalisation of maps, per sample or over a whole volume.

An all-zero (or constant) map stays zero rather than turning into NaN.
"""
from __future__ import annotations

import torch


def minmax(maps: torch.Tensor, per_sample: bool = True) -> torch.Tensor:
    """Scale maps to [0, 1]; per sample over its spatial dims, or jointly over everything."""
    flat = maps.reshape(maps.shape[0], -1) if per_sample else maps.reshape(1, -1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def display_values(maps: torch.Tensor, signed: bool) -> torch.Tensor:
    """What gets normalised for display: the magnitude of signed maps, the map itself otherwise."""
    return maps.abs() if signed else maps
