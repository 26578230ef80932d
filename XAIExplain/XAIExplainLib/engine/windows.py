"""Sliding-window geometry and Gaussian blending weights for volumetric mode."""
from __future__ import annotations

import itertools

import torch


def window_starts(length: int, patch: int, overlap: float) -> list[int]:
    """Start offsets covering [0, length) with windows of ``patch``; the last one ends at the edge."""
    if length <= patch:
        return [0]
    step = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, length - patch, step))
    starts.append(length - patch)
    return sorted(set(starts))


def window_grid(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> list[tuple[slice, ...]]:
    """All windows (as slices) over a spatial shape."""
    per_axis = [window_starts(n, p, overlap) for n, p in zip(shape, patch)]
    return [tuple(slice(s, s + p) for s, p in zip(starts, patch)) for starts in itertools.product(*per_axis)]


def gaussian_weights(patch: tuple[int, ...], device, sigma_scale: float = 0.125) -> torch.Tensor:
    """Separable Gaussian centred on the patch (sigma = patch / 8): patch borders count little.

    Only exact zeros are lifted (to 1e-20): a larger floor would give a window's corner,
    where zero padding distorts the model, as much say as another window's centre.
    """
    weight = torch.ones((), device=device)
    for axis, size in enumerate(patch):
        coords = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
        sigma = max(size * sigma_scale, 1e-3)
        profile = torch.exp(-0.5 * (coords / sigma) ** 2)
        shape = [1] * len(patch)
        shape[axis] = size
        weight = weight * profile.reshape(shape)
    weight = weight / weight.max()
    return weight.clamp_min(1e-20)
