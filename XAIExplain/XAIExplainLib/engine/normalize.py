"""Min-max normalisation of maps, per sample or over a whole volume.

An all-zero (or constant) map stays zero rather than turning into NaN.
"""
from __future__ import annotations

import numpy as np
import torch


def minmax(maps: torch.Tensor, per_sample: bool = True, in_place: bool = False) -> torch.Tensor:
    """Scale maps to [0, 1]; per sample over its spatial dims, or jointly over everything.

    A constant map has x - min = 0 everywhere, so dividing by a span clamped away from
    zero keeps it at 0 without a full-size ``where``. ``in_place=True`` may overwrite
    ``maps`` (it does when they are contiguous): only for buffers the caller owns, such
    as a whole volume's maps. Use the returned tensor either way.
    """
    flat = maps.reshape(maps.shape[0], -1) if per_sample else maps.reshape(1, -1)
    low = flat.amin(dim=1, keepdim=True)  # (amin + amax measured faster than aminmax on CPU)
    high = flat.amax(dim=1, keepdim=True)
    span = (high - low).clamp_min(torch.finfo(flat.dtype).tiny)
    shifted = flat.sub_(low) if in_place else flat - low
    return shifted.div_(span).reshape(maps.shape)


def display_values(maps: torch.Tensor, signed: bool) -> torch.Tensor:
    """What gets normalised for display: the magnitude of signed maps, the map itself otherwise."""
    return maps.abs() if signed else maps


def volume_minmax(volume: torch.Tensor, signed: bool) -> torch.Tensor:
    """A whole volume's raw map -> [0, 1] over the whole volume (the magnitude of signed maps).

    May overwrite ``volume`` (pass a buffer the caller owns); use the returned tensor.
    """
    return minmax(display_values(volume, signed)[None], per_sample=False, in_place=True)[0]


def normalize_volume(volume, signed: bool) -> np.ndarray:
    """``volume_minmax`` of a numpy map (left unchanged) as float32 numpy."""
    return volume_minmax(torch.tensor(np.asarray(volume, dtype=np.float32)), signed).numpy()
