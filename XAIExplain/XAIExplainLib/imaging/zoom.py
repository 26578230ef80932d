"""Resampling by zoom factors, centred, as pymirc's ``zoom3d`` computes it.

pyliverlesionseg (Tang et al., Eur J Nucl Med Mol Imaging 47, 2020) brings a CT to its
networks' voxel size with ``pymirc.image_operations.zoom3d``, and a card that asks for
``input.resampling.method = "zoom"`` gets the same arithmetic here. Along each axis in
turn, a zoom factor ``f`` (old spacing / new spacing) gives ``ceil(n * f)`` new voxels of
spacing ``old / f``, centred on the old ones:

* ``f > 1`` (finer voxels): linear interpolation between the two old voxel centres around
  each new centre; a neighbour beyond the array counts as 0 (their ``cval``);
* ``f < 1`` (coarser voxels): every old voxel adds ``value x overlap`` to the new voxels its
  extent overlaps, the overlap measured in new voxels, so a new voxel is the
  overlap-weighted mean of the old voxels it covers (a box filter) and a partly covered
  edge voxel holds less, as if 0 lay beyond the array;
* ``f = 1``: the axis is left as it is.

Each axis is a linear map, written here as a ``(new n, old n)`` matrix applied along that
axis, in float64 as theirs.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .resample import Grid, centered_grid


def zoomed_length(n: int, zoom: float) -> int:
    """``ceil(n / (1 / zoom))``: the new number of voxels, computed as their code does."""
    return int(math.ceil(n / (1.0 / zoom)))


def zoom_matrix(n: int, zoom: float) -> np.ndarray:
    """The ``(zoomed_length(n, zoom), n)`` matrix of one axis (see the module notes)."""
    if not zoom > 0:
        raise ValueError(f"a zoom factor must be positive, got {zoom!r}")
    if zoom == 1:
        return np.eye(n)
    delta = 1.0 / zoom
    m = zoomed_length(n, zoom)
    out = np.zeros((m, n))
    if zoom > 1:
        centres = delta * (np.arange(m) - 0.5 * m + 0.5) + 0.5 * n - 0.5  # new centres in old indices
        left = np.floor(centres).astype(np.int64)
        rows = np.arange(m)
        inside = left >= 0
        out[rows[inside], left[inside]] += (left + 1 - centres)[inside]
        inside = left + 1 < n
        out[rows[inside], left[inside] + 1] += (centres - left)[inside]
        return out
    scale = 1.0 / delta
    for i in range(n):  # old voxel i spans [lo, hi) in new-voxel units
        lo = scale * (i - 0.5 * n) + 0.5 * m
        hi = scale * (i + 1 - 0.5 * n) + 0.5 * m
        first, last = math.floor(lo), math.ceil(hi) - 1
        if first == last:
            out[first, i] += 1.0 / delta
        else:
            cut = math.ceil(lo)
            out[first, i] += cut - lo
            out[last, i] += hi - cut
    return out


def zoom_volume(array: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """``array`` (3D) zoomed by ``zooms`` (one factor per numpy axis), float64.

    The axes are zoomed last axis first: the numpy (z, y, x) array of an LPS image is their
    (x, y, z) array transposed, and they zoom x, then y, then z.
    """
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != 3 or len(zooms) != 3:
        raise ValueError(f"zoom_volume takes a 3D array and 3 zoom factors, got shape {out.shape} and {list(zooms)}")
    for axis in (2, 1, 0):
        if zooms[axis] != 1:
            matrix = zoom_matrix(out.shape[axis], float(zooms[axis]))
            out = np.moveaxis(np.tensordot(matrix, out, axes=([1], [axis])), 0, axis)
    return out


def zoom_factors(grid: Grid, spacing_zyx: Sequence[float]) -> tuple[float, float, float]:
    """Their zoom factors to reach ``spacing_zyx`` from ``grid``: old spacing / new spacing."""
    return tuple(float(old) / float(new) for old, new in zip(grid.spacing_zyx, spacing_zyx))


def zoomed_grid(grid: Grid, zooms: Sequence[float]) -> Grid:
    """Where :func:`zoom_volume` puts its voxels: the same centre, spacing ``old / zoom``, ``ceil(n * zoom)``."""
    spacing = [old / z for old, z in zip(grid.spacing_zyx, zooms)]
    shape = [zoomed_length(n, z) if z != 1 else n for n, z in zip(grid.shape, zooms)]
    return centered_grid(grid, spacing, shape)
