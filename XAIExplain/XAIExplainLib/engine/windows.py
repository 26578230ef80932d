"""Sliding-window geometry and Gaussian blending weights for volumetric mode.

The default tiling (``Tiling()``) places windows ``round(patch * (1 - overlap))``
apart with the last one flush with the far edge, centres the Gaussian on the
patch's middle and pads a volume smaller than the patch at its far end with the
volume's minimum.  A model trained with another tiling is explained on the
windows it was validated on by passing that ``Tiling`` to ``explain_volume`` /
``predict_volume``: e.g. nnU-Net spreads its windows evenly, centres its Gaussian
on voxel ``patch // 2`` and pads with zeros on both sides
(``Tiling(steps="even", gaussian_centre="floor", pad="centred", pad_value=0.0)``).

``Tiling(steps="tiles", tile=...)`` is the other kind of tiling: windows placed so that their OUTPUT
segments (``tile``, the part of a window's output the network computes from real context) tile the
volume without overlap, each window's output written over what earlier windows wrote there (the last
wins, no blending) and any voxel no window wrote given the nearest written value. It is
pyliverlesionseg's ``DeepVoxNet.predict`` (``center_sampling=False``; Tang et al., Eur J Nucl Med
Mol Imaging 47, 2020), see :func:`tile_placements`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

STEP_RULES = ("edge", "even", "tiles")
GAUSSIAN_CENTRES = ("middle", "floor")
PAD_RULES = ("end", "centred")


@dataclass(frozen=True)
class Tiling:
    """Where windows go, how they are weighted and how a too-small volume is padded.

    steps           "edge": starts every ``round(patch * (1 - overlap))`` voxels plus one flush
                    with the far edge; "even": the fewest windows whose step is at most
                    ``patch * (1 - overlap)``, spread evenly from 0 to ``length - patch``
                    (starts rounded to voxels); "tiles": output segments ``tile`` tiling the volume,
                    written over (see :func:`tile_placements`; overlap, the Gaussian and ``pad`` do not
                    apply; window weights are refused)
    sigma_scale     Gaussian sigma as a fraction of the patch size, per axis
    gaussian_centre "middle": centred at ``(patch - 1) / 2``; "floor": at voxel ``patch // 2``
    pad             "end": pad after the volume; "centred": half before, the rest after
    pad_value       None pads with the volume's minimum, else with this value
    tile            "tiles" only: the output segment per spatial axis (numpy order)
    source_axes     "tiles" only: the numpy axis each axis of the source code's array holds (their
                    array is ours transposed so; default the same order); their loops and their
                    nearest fill run in that layout
    reversed_axes   "tiles" only: numpy axes their arrays hold reversed (an RAS array of an LPS
                    volume: x and y), so tiles are counted from the far end along them
    """

    steps: str = "edge"
    sigma_scale: float = 0.125
    gaussian_centre: str = "middle"
    pad: str = "end"
    pad_value: float | None = None
    tile: tuple[int, ...] | None = None
    source_axes: tuple[int, ...] | None = None
    reversed_axes: tuple[int, ...] = ()

    def __post_init__(self):
        for name, value, allowed in (("steps", self.steps, STEP_RULES),
                                     ("gaussian_centre", self.gaussian_centre, GAUSSIAN_CENTRES),
                                     ("pad", self.pad, PAD_RULES)):
            if value not in allowed:
                raise ValueError(f"Tiling.{name} must be one of {allowed}, got {value!r}")
        if not self.sigma_scale > 0:
            raise ValueError(f"Tiling.sigma_scale must be > 0, got {self.sigma_scale!r}")
        if (self.steps == "tiles") != (self.tile is not None):
            raise ValueError(f"Tiling.tile (the output segment) goes with steps='tiles' and only with it, got "
                             f"steps={self.steps!r}, tile={self.tile!r}")
        if self.tile is None:
            if self.source_axes is not None or self.reversed_axes:
                raise ValueError("Tiling.source_axes and reversed_axes apply to steps='tiles' only")
            return
        dims = len(self.tile)
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in self.tile):
            raise ValueError(f"Tiling.tile must be positive ints, one per spatial axis, got {self.tile!r}")
        if self.source_axes is not None and sorted(self.source_axes) != list(range(dims)):
            raise ValueError(f"Tiling.source_axes must order the {dims} spatial axes 0..{dims - 1}, got "
                             f"{self.source_axes!r}")
        if any(isinstance(a, bool) or a not in range(dims) for a in self.reversed_axes) \
                or len(set(self.reversed_axes)) != len(self.reversed_axes):
            raise ValueError(f"Tiling.reversed_axes must be distinct spatial axes out of 0..{dims - 1}, got "
                             f"{self.reversed_axes!r}")

    @property
    def writes(self) -> bool:
        """Whether windows write their outputs over each other (tiles) instead of being blended."""
        return self.steps == "tiles"

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


def tile_axis(length: int, patch: int, tile: int, reversed_axis: bool = False) -> list[tuple[int, int, int]]:
    """``(window start, first written voxel, end of the written voxels)`` of each tile along one axis, in the
    order they are written, as pyliverlesionseg's ``DeepVoxNet.predict`` (``center_sampling=False``) places them.

    Their sampling segment is the output segment, or the whole axis when that is not longer
    (``s = min(tile, length)``): starts ``range(0, length, s)`` plus ``length - s`` when ``s`` does not
    divide the axis; the sampling centre ``ceil(start + (s - 1) / 2)``; the input window that their
    ``ExtractSegment3D2`` cuts around it (``patch // 2`` voxels before the centre); the output segment
    centred on it (half a voxel lower for an even ``patch``) at ``centre +- (tile - 1) / 2``, clipped to
    the axis and rounded as they round it. Along a reversed axis all of this runs from the far end.
    Windows may reach beyond the axis (the engine pads there).
    """
    step = min(tile, length)
    starts = list(range(0, length, step)) + ([length - step] if length % step else [])
    out = []
    for start in starts:
        centre = math.ceil(start + (step - 1) / 2)
        real = centre if patch % 2 else centre - 0.5
        first, last = real - (tile - 1) / 2, real + (tile - 1) / 2
        under, over = max(0.0, -first), max(0.0, last - (length - 1))
        low = round(first + math.ceil(under) - 1e-7)
        high = round(last - math.ceil(over) + 1 - 1e-7)
        window = centre - patch // 2
        if reversed_axis:
            window, low, high = length - window - patch, length - high, length - low
        out.append((window, low, high))
    return out


def tile_placements(shape: tuple[int, ...], patch: tuple[int, ...], tiling: Tiling
                    ) -> tuple[list[tuple[slice, ...]], list[tuple[slice, ...]]]:
    """``(windows, writes)`` of a "tiles" tiling over a spatial ``shape``: each window's input slices (which
    may reach beyond the volume) and the volume voxels its output is written to, in their loop order
    (their first array axis outermost). A later window's output replaces an earlier one's."""
    per_axis = [tile_axis(n, p, t, axis in tiling.reversed_axes)
                for axis, (n, p, t) in enumerate(zip(shape, patch, tiling.tile))]
    order = tiling.source_axes or tuple(range(len(shape)))
    windows, writes = [], []
    for combination in itertools.product(*(per_axis[axis] for axis in order)):
        placed = dict(zip(order, combination))
        windows.append(tuple(slice(placed[a][0], placed[a][0] + p) for a, p in enumerate(patch)))
        writes.append(tuple(slice(placed[a][1], placed[a][2]) for a in range(len(shape))))
    return windows, writes


def nearest_fill(values: torch.Tensor, written: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """``values`` (``(..., *spatial)``) with every voxel not ``written`` given the value of the nearest written
    one: their ``distance_transform_edt(isnan(output), return_indices=True)`` fill, run in their array
    layout (``source_axes``, ``reversed_axes``) so that equally near voxels are chosen as they choose them."""
    if bool(written.all()):
        return values
    if not bool(written.any()):
        raise ValueError("no window wrote any voxel of the volume: the tiles lie outside it")
    from scipy import ndimage

    dims = written.dim()
    order = tiling.source_axes or tuple(range(dims))
    theirs = written.cpu().numpy()
    if tiling.reversed_axes:
        theirs = np.flip(theirs, tiling.reversed_axes)
    theirs = np.transpose(theirs, order)
    indices = ndimage.distance_transform_edt(~theirs, return_distances=False, return_indices=True)
    # their index arrays, brought back to our layout: axis ``order[k]`` of ours is their axis k
    back = np.argsort(order)
    ours = []
    for axis in range(dims):
        index = np.transpose(indices[back[axis]], back)
        if tiling.reversed_axes:
            index = np.flip(index, tiling.reversed_axes)
            if axis in tiling.reversed_axes:
                index = written.shape[axis] - 1 - index
        ours.append(torch.from_numpy(np.ascontiguousarray(index)).to(values.device))
    return values[(Ellipsis,) + tuple(ours)]
