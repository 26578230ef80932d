"""Sliding-window geometry and Gaussian blending weights for volumetric mode.

The default tiling (``Tiling()``) places windows ``round(patch * (1 - overlap))``
apart with the last one flush with the far edge, centres the Gaussian on the
patch's middle and pads a volume smaller than the patch at its far end with the
volume's minimum.  A model trained with another tiling is explained on the
windows it was validated on by passing that ``Tiling`` to ``explain_volume`` /
``predict_volume``: e.g. nnU-Net spreads its windows evenly, centres its Gaussian
on voxel ``patch // 2`` and pads with zeros on both sides
(``Tiling(steps="even", gaussian_centre="floor", pad="centred", pad_value=0.0)``).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

STEP_RULES = ("edge", "even")
GAUSSIAN_CENTRES = ("middle", "floor")
PAD_RULES = ("end", "centred")


@dataclass(frozen=True)
class Tiling:
    """Where windows go, how they are weighted and how a too-small volume is padded.

    steps           "edge": starts every ``round(patch * (1 - overlap))`` voxels plus one flush
                    with the far edge; "even": the fewest windows whose step is at most
                    ``patch * (1 - overlap)``, spread evenly from 0 to ``length - patch``
                    (starts rounded to voxels)
    sigma_scale     Gaussian sigma as a fraction of the patch size, per axis
    gaussian_centre "middle": centred at ``(patch - 1) / 2``; "floor": at voxel ``patch // 2``
    pad             "end": pad after the volume; "centred": half before, the rest after
    pad_value       None pads with the volume's minimum, else with this value
    """

    steps: str = "edge"
    sigma_scale: float = 0.125
    gaussian_centre: str = "middle"
    pad: str = "end"
    pad_value: float | None = None

    def __post_init__(self):
        for name, value, allowed in (("steps", self.steps, STEP_RULES),
                                     ("gaussian_centre", self.gaussian_centre, GAUSSIAN_CENTRES),
                                     ("pad", self.pad, PAD_RULES)):
            if value not in allowed:
                raise ValueError(f"Tiling.{name} must be one of {allowed}, got {value!r}")
        if not self.sigma_scale > 0:
            raise ValueError(f"Tiling.sigma_scale must be > 0, got {self.sigma_scale!r}")

    def padding(self, shape: tuple[int, ...], patch: tuple[int, ...]) -> list[tuple[int, int]]:
        """(before, after) voxels per axis that make every axis at least the patch long."""
        out = []
        for size, p in zip(shape, patch):
            missing = max(0, p - size)
            before = missing // 2 if self.pad == "centred" else 0
            out.append((before, missing - before))
        return out


def window_starts(length: int, patch: int, overlap: float, steps: str = "edge") -> list[int]:
    """Start offsets covering [0, length) with windows of ``patch``; the last one ends at the edge."""
    if length <= patch:
        return [0]
    if steps == "even":
        count = int(math.ceil((length - patch) / (patch * (1.0 - overlap)))) + 1
        step = (length - patch) / (count - 1)
        # a window thinner than 1 / (1 - overlap) voxels (a 2D model's windows are 1 thick along the slice
        # axis) would repeat starts; a repeated window adds the same weighted values twice, so dropping it
        # changes no blended voxel
        return sorted({int(round(step * i)) for i in range(count)})
    step = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, length - patch, step))
    starts.append(length - patch)
    return sorted(set(starts))


def window_grid(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float,
                steps: str = "edge") -> list[tuple[slice, ...]]:
    """All windows (as slices) over a spatial shape."""
    per_axis = [window_starts(n, p, overlap, steps) for n, p in zip(shape, patch)]
    return [tuple(slice(s, s + p) for s, p in zip(starts, patch)) for starts in itertools.product(*per_axis)]


def gaussian_weights(patch: tuple[int, ...], device, sigma_scale: float = 0.125,
                     centre: str = "middle") -> torch.Tensor:
    """Separable Gaussian centred on the patch (sigma = patch / 8): patch borders count little.

    Only exact zeros are lifted (to 1e-20): a larger floor would give a window's corner,
    where zero padding distorts the model, as much say as another window's centre.
    """
    weight = torch.ones((), device=device)
    for axis, size in enumerate(patch):
        middle = size // 2 if centre == "floor" else (size - 1) / 2
        coords = torch.arange(size, device=device, dtype=torch.float32) - middle
        sigma = max(size * sigma_scale, 1e-3)
        profile = torch.exp(-0.5 * (coords / sigma) ** 2)
        shape = [1] * len(patch)
        shape[axis] = size
        weight = weight * profile.reshape(shape)
    weight = weight / weight.max()
    return weight.clamp_min(1e-20)
