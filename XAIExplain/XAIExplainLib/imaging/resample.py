"""Grids and resampling with SimpleITK.

A model sees the image on its own grid (its training spacing, a fixed in-plane
size, the same orientation as the input); maps and labels go back to the
input's grid.  The way in is one ``sitk.Resample`` onto a reference grid, which
keeps origin, spacing and direction exact and makes the round trip lossless in
geometry; the way back (maps, probabilities) is :func:`resample_array`, the same
linear values computed per axis, since both grids share one direction.  Sizes, spacings and axes in this module's public
functions follow numpy order ``(z, y, x)`` unless a name says ``sitk``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D image in SimpleITK order: size and spacing as (x, y, z)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Grid":
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got a {image.GetDimension()}D image")
        return cls(tuple(int(s) for s in image.GetSize()), tuple(image.GetSpacing()),
                   tuple(image.GetOrigin()), tuple(image.GetDirection()))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The numpy shape ``(z, y, x)`` of an array on this grid."""
        return tuple(reversed(self.size))

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    def physical_center(self) -> np.ndarray:
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        half = (np.asarray(self.size, dtype=float) - 1.0) / 2.0
        return np.asarray(self.origin) + direction @ (half * np.asarray(self.spacing))

    def reference(self) -> sitk.Image:
        """An empty image carrying this geometry, the target of ``sitk.Resample``."""
        ref = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        self.apply(ref)
        return ref

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_array(self, array: np.ndarray) -> sitk.Image:
        """Wrap a numpy ``(z, y, x)`` array of this grid's shape as a SimpleITK image."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} does not match the grid shape "
                             f"{self.shape} (z, y, x)")
        return self.apply(sitk.GetImageFromArray(array))


def centered_grid(grid: Grid, spacing_zyx: Sequence[float | None],
                  shape_zyx: Sequence[int | None] | None = None) -> Grid:
    """A grid with the same orientation and physical centre as ``grid``.

    ``spacing_zyx`` gives the new spacing per numpy axis (``None`` keeps the
    input's); ``shape_zyx`` the new size per axis (``None`` covers the input's
    extent at the new spacing).  An axis whose spacing and size are both kept
    maps index to index, so 2D models see exactly the input's slices.
    """
    if len(spacing_zyx) != 3:
        raise ValueError(f"spacing must have 3 entries (z, y, x), got {list(spacing_zyx)}")
    shape_zyx = [None] * 3 if shape_zyx is None else list(shape_zyx)
    if len(shape_zyx) != 3:
        raise ValueError(f"shape must have 3 entries (z, y, x), got {shape_zyx}")
    old_spacing = grid.spacing_zyx
    old_shape = grid.shape
    new_spacing, new_shape = [], []
    for axis in range(3):
        sp = old_spacing[axis] if spacing_zyx[axis] is None else float(spacing_zyx[axis])
        if sp <= 0:
            raise ValueError(f"spacing must be positive, got {sp} on axis {axis}")
        n = shape_zyx[axis]
        if n is None:
            n = max(1, int(math.ceil(old_shape[axis] * old_spacing[axis] / sp - 1e-6)))
        new_spacing.append(sp)
        new_shape.append(int(n))
    spacing_xyz = tuple(reversed(new_spacing))
    size_xyz = tuple(reversed(new_shape))
    direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    half = (np.asarray(size_xyz, dtype=float) - 1.0) / 2.0
    origin = grid.physical_center() - direction @ (half * np.asarray(spacing_xyz))
    return Grid(size_xyz, spacing_xyz, tuple(float(o) for o in origin), grid.direction)


def resample(image: sitk.Image, grid: Grid, interpolator: str = "linear",
             default: float = 0.0, antialias: bool = False) -> sitk.Image:
    """Resample ``image`` onto ``grid``.

    ``antialias`` smooths along every axis that gets coarser (Gaussian with a
    standard deviation of 0.4 * sqrt(new^2 - old^2) mm), so that downsampling a
    fine CT averages its noise the way a thicker reconstruction would instead
    of picking single noisy voxels.
    """
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {sorted(_INTERPOLATORS)}, "
                         f"got {interpolator!r}")
    if antialias:
        variance = []
        for old, new in zip(image.GetSpacing(), grid.spacing):
            sigma = 0.4 * math.sqrt(max(new * new - old * old, 0.0))
            variance.append(sigma * sigma)
        if any(v > 0 for v in variance):
            smoother = sitk.DiscreteGaussianImageFilter()
            smoother.SetVariance(variance)
            smoother.SetUseImageSpacing(True)
            smoother.SetMaximumKernelWidth(64)
            image = smoother.Execute(sitk.Cast(image, sitk.sitkFloat32))
    return sitk.Resample(image, grid.reference(), sitk.Transform(), _INTERPOLATORS[interpolator],
                         float(default), image.GetPixelID())


def resample_array(array: np.ndarray, source: Grid, target: Grid, default: float = 0.0) -> np.ndarray:
    """Linearly resample a float ``(z, y, x)`` array on ``source`` onto ``target``.

    Grids that share a direction (every model grid of :func:`centered_grid` shares the
    input's) map index to index along each axis by a scale and an offset, so trilinear
    interpolation splits into one two-tap pass per axis: several times cheaper than
    ``sitk.Resample`` on the full input grid, with the same values (ITK's linear rule:
    neighbours clamped at the border, ``default`` outside half a voxel beyond the edge).
    Other grids go through ``sitk.Resample``.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.shape != source.shape:
        raise ValueError(f"array shape {array.shape} does not match the grid shape "
                         f"{source.shape} (z, y, x)")
    direction = np.asarray(source.direction, dtype=float).reshape(3, 3)
    if not np.allclose(direction, np.asarray(target.direction, dtype=float).reshape(3, 3),
                       rtol=0.0, atol=1e-9):
        return sitk.GetArrayFromImage(resample(source.image_from_array(array), target, "linear",
                                               default))
    # Physical point of target index i (xyz): o_t + D S_t i; source continuous index of it:
    # S_s^-1 D^-1 (o_t - o_s) + S_s^-1 S_t i, one scale and one offset per axis.
    offset = np.linalg.solve(direction, np.asarray(target.origin) - np.asarray(source.origin))
    inside = np.ones(target.shape, dtype=bool) if default != 0.0 else None
    out = array
    for xyz in range(3):
        axis = 2 - xyz
        index = (offset[xyz] + np.arange(target.size[xyz]) * target.spacing[xyz]) / source.spacing[xyz]
        if out.shape[axis] == target.size[xyz] and np.allclose(index, np.arange(target.size[xyz]),
                                                              rtol=0.0, atol=1e-6):
            continue
        out, valid = _linear_along(out, index, axis)
        if inside is not None:
            shape = [1, 1, 1]
            shape[axis] = -1
            inside &= valid.reshape(shape)
    if out is array:
        out = array.copy()
    if inside is not None:
        out[~inside] = default
    return out


def _linear_along(array: np.ndarray, index: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-tap linear interpolation of ``array`` at continuous ``index`` along ``axis``.

    Returns the values (0 where the index falls outside ``[-0.5, n - 0.5)``) and that
    validity per index. Works through slabs of another axis with one reused scratch slab,
    so a full-size temporary (and its fresh pages) is never made.
    """
    n = array.shape[axis]
    valid = (index >= -0.5) & (index < n - 0.5)
    below = np.floor(index)
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = (index - below).astype(np.float32).reshape(shape)
    low_index = np.clip(below, 0, n - 1).astype(np.intp)
    high_index = np.clip(below + 1, 0, n - 1).astype(np.intp)
    out_shape = list(array.shape)
    out_shape[axis] = len(index)
    out = np.empty(out_shape, dtype=np.float32)
    along = 1 if axis == 0 else 0
    row_bytes = out.nbytes // max(out_shape[along], 1)
    step = max(1, min(out_shape[along], _SLAB_BYTES // max(row_bytes, 1)))
    scratch = np.empty([step if a == along else s for a, s in enumerate(out_shape)], dtype=np.float32)
    for begin in range(0, out_shape[along], step):
        part = (slice(None),) * along + (slice(begin, begin + step),)
        low = out[part]
        high = scratch[(slice(None),) * along + (slice(0, low.shape[along]),)]
        np.take(array[part], low_index, axis=axis, out=low, mode="clip")
        np.take(array[part], high_index, axis=axis, out=high, mode="clip")
        np.subtract(high, low, out=high)
        np.multiply(high, weight, out=high)
        np.add(low, high, out=low)
    if not valid.all():  # the index is monotonic: only slabs at the two ends are outside
        out[(slice(None),) * axis + (~valid,)] = 0.0
    return out, valid


#: Size of the scratch slab of :func:`_linear_along` (a few MB stay in the allocator's heap).
_SLAB_BYTES = 4 * 2**20


#: Tolerance on spacing, origin (relative to the largest spacing, at least 1 mm) and direction
#: under which two grids are the same grid (header rounding, not a different sampling).
GRID_TOLERANCE = 1e-4


def grid_mismatch(image: sitk.Image, reference: sitk.Image) -> str:
    """How ``image``'s grid differs from ``reference``'s, or ``""`` when they agree (2D or 3D).

    The one rule for "on the same grid": a mask on its image, an output on its input,
    a channel image on the first channel's (:mod:`.channels`).
    """
    if image.GetDimension() != reference.GetDimension():
        return f"{image.GetDimension()}D vs {reference.GetDimension()}D"
    if image.GetSize() != reference.GetSize():
        return f"size {_show(image.GetSize(), 'd')} vs {_show(reference.GetSize(), 'd')}"
    scale = max(max(reference.GetSpacing()), 1.0)
    for name, a, b, tol in (("spacing", image.GetSpacing(), reference.GetSpacing(), scale),
                            ("origin", image.GetOrigin(), reference.GetOrigin(), scale),
                            ("direction", image.GetDirection(), reference.GetDirection(), 1.0)):
        if not np.allclose(a, b, rtol=0.0, atol=GRID_TOLERANCE * tol):
            return f"{name} {_show(a, 'g')} vs {_show(b, 'g')}"
    return ""


def _show(values, fmt: str) -> str:
    return "(" + ", ".join(format(v, fmt if fmt == "d" else ".6g") for v in values) + ")"


def as_volume(image: sitk.Image) -> tuple[sitk.Image, bool]:
    """Lift a 2D image to a one-slice 3D image; returns it and whether it was 2D."""
    if image.GetDimension() == 3:
        return image, False
    if image.GetDimension() == 2:
        return sitk.JoinSeries([image]), True
    raise ValueError(f"expected a 2D or 3D image, got {image.GetDimension()}D")


def image_from_numpy(volume: np.ndarray, spacing_zyx: Sequence[float] | None = None) -> sitk.Image:
    """A SimpleITK image from a numpy ``(z, y, x)`` array and its spacing in the same order."""
    volume = np.asarray(volume)
    if volume.ndim not in (2, 3):
        raise ValueError(f"expected a (z, y, x) or (y, x) array, got shape {volume.shape}")
    image = sitk.GetImageFromArray(volume)
    if spacing_zyx is not None:
        spacing_zyx = [float(s) for s in spacing_zyx]
        if len(spacing_zyx) != volume.ndim or any(s <= 0 for s in spacing_zyx):
            raise ValueError(f"spacing must hold {volume.ndim} positive numbers in numpy axis "
                             f"order, got {spacing_zyx}")
        image.SetSpacing(tuple(reversed(spacing_zyx)))
    return image
