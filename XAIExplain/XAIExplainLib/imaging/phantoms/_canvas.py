"""A supersampled painting canvas in patient millimetres.

Phantom anatomy is a list of analytic shapes in patient coordinates (LPS: x to
the patient's left, y posterior, z superior, millimetres).  Structures are
painted back to front on a grid finer than the output grid; averaging blocks of
fine voxels then gives the partial-volume effect of a real scanner, and a
structure's mask is where it covers at least half of an output voxel.  Shapes
are evaluated only inside their bounding boxes, so cost follows structure size,
not volume size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

Bounds = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # (x, y, z) ranges


@dataclass(frozen=True)
class Region:
    """Coordinates (broadcastable ``(z, 1, 1)``, ``(1, y, 1)``, ``(1, 1, x)``) of a sub-block."""

    slices: tuple[slice, slice, slice]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.shape[0], self.y.shape[1], self.x.shape[2])


class Canvas:
    """Fine HU and label grids covering an output grid ``shape`` (z, y, x) at ``spacing``.

    ``center`` is the physical (x, y, z) position of the output grid's centre.
    """

    def __init__(self, shape, spacing, center, factors):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.factors = tuple(int(f) for f in factors)
        self.fine_shape = tuple(n * f for n, f in zip(self.shape, self.factors))
        self.fine_spacing = tuple(s / f for s, f in zip(self.spacing, self.factors))
        cx, cy, cz = center
        # Physical position of fine voxel centres per axis (z, y, x order).
        self.axes = []
        for n, s, fs, f, c in zip(self.shape, self.spacing, self.fine_spacing, self.factors,
                                  (cz, cy, cx)):
            first = c - (n - 1) / 2.0 * s - s / 2.0 + fs / 2.0
            self.axes.append(first + fs * np.arange(n * f))
        self.origin_xyz = tuple(c - (n - 1) / 2.0 * s for n, s, c in
                                zip(reversed(self.shape), reversed(self.spacing), (cx, cy, cz)))
        self.hu = np.full(self.fine_shape, -1000.0, dtype=np.float32)
        self.label = np.zeros(self.fine_shape, dtype=np.uint8)
        self.names: dict[str, int] = {}
        self.extent: dict[str, list[list[int]]] = {}

    def bounds(self) -> Bounds:
        z, y, x = self.axes
        return ((x[0], x[-1]), (y[0], y[-1]), (z[0], z[-1]))

    def region(self, bounds: Bounds | None) -> Region | None:
        """The fine sub-grid inside ``bounds`` (x, y, z ranges in mm), or None if empty."""
        if bounds is None:
            bounds = ((-math.inf, math.inf),) * 3
        slices = []
        for axis, (low, high) in zip(self.axes, (bounds[2], bounds[1], bounds[0])):
            start = int(np.searchsorted(axis, low, side="left"))
            stop = int(np.searchsorted(axis, high, side="right"))
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        z = self.axes[0][slices[0]][:, None, None]
        y = self.axes[1][slices[1]][None, :, None]
        x = self.axes[2][slices[2]][None, None, :]
        return Region(tuple(slices), x, y, z)

    def _lookup(self, names) -> np.ndarray:
        """A 256-entry table: True for the label ids of ``names`` (faster than np.isin)."""
        names = (names,) if isinstance(names, str) else tuple(names)
        table = np.zeros(256, dtype=bool)
        for name in names:
            if name in self.names:
                table[self.names[name]] = True
        return table

    def label_id(self, name: str) -> int:
        if name not in self.names:
            if len(self.names) >= 254:
                raise ValueError("a phantom can hold at most 254 named structures")
            self.names[name] = len(self.names) + 1
        return self.names[name]

    def paint(self, name: str, bounds: Bounds | None,
              shape: Callable[[Region], np.ndarray], value, within: str | tuple[str, ...] | None = None):
        """Paint ``value`` (HU, scalar or callable of the region) where ``shape`` is true.

        ``within`` restricts painting to voxels currently labelled with one of
        those structure names (e.g. nodules only inside lung).
        """
        region = self.region(bounds)
        if region is None:
            return None
        mask = np.broadcast_to(shape(region), region.shape)
        if within is not None:
            mask = mask & self._lookup(within)[self.label[region.slices]]
        if not mask.any():
            return None
        hu = self.hu[region.slices]
        values = value(region) if callable(value) else value
        if np.ndim(values) == 0:
            hu[mask] = values
        else:
            hu[mask] = np.broadcast_to(values, region.shape)[mask]
        self.label[region.slices][mask] = self.label_id(name)
        self._grow_extent(name, region.slices)
        return region, mask

    def _grow_extent(self, name: str, slices) -> None:
        box = [[s.start, s.stop] for s in slices]
        if name in self.extent:
            box = [[min(a[0], b[0]), max(a[1], b[1])] for a, b in zip(self.extent[name], box)]
        self.extent[name] = box

    def add_hu(self, bounds: Bounds | None, delta: Callable[[Region], np.ndarray],
               names: tuple[str, ...]):
        """Add a texture (HU offsets) to the voxels of the named structures."""
        region = self.region(bounds)
        if region is None:
            return
        if not any(n in self.names for n in names):
            return
        mask = self._lookup(names)[self.label[region.slices]]
        if mask.any():
            self.hu[region.slices][mask] += np.broadcast_to(delta(region), region.shape)[mask]

    # ---- output ---------------------------------------------------------------------

    def _block_mean(self, array: np.ndarray) -> np.ndarray:
        """Mean over blocks of ``factors`` fine voxels (one reduction per axis: fast)."""
        fz, fy, fx = self.factors
        nz, ny, nx = (n // f for n, f in zip(array.shape, self.factors))
        out = array.astype(np.float32, copy=False)
        if fx > 1:
            out = out.reshape(-1, fx).sum(axis=1, dtype=np.float32).reshape(nz * fz, ny * fy, nx)
        if fy > 1:
            out = out.reshape(nz * fz, ny, fy, nx).sum(axis=2, dtype=np.float32)
        if fz > 1:
            out = out.reshape(nz, fz, ny, nx).sum(axis=1, dtype=np.float32)
        return out / np.float32(fz * fy * fx)

    def coarse_slices(self, fine: tuple[slice, slice, slice]) -> tuple[slice, ...]:
        """Output-grid slices covering a fine-grid box."""
        return tuple(slice(s.start // f, -(-s.stop // f)) for s, f in zip(fine, self.factors))

    def fine_slices(self, coarse: tuple[slice, ...]) -> tuple[slice, ...]:
        return tuple(slice(s.start * f, s.stop * f) for s, f in zip(coarse, self.factors))

    def upsample(self, field: np.ndarray) -> np.ndarray:
        """Repeat an output-grid field onto the fine grid (textures are smoother than a voxel)."""
        fz, fy, fx = self.factors
        return np.repeat(np.repeat(np.repeat(field, fz, 0), fy, 1), fx, 2)

    def render(self, noise_hu: float, rng: np.random.Generator, blur_mm: float = 0.6):
        """Output HU (partial volume, scanner blur and correlated noise) and masks."""
        hu = self._block_mean(self.hu)
        sigma = [blur_mm / s for s in self.spacing]
        if any(s > 0.25 for s in sigma):
            hu = ndimage.gaussian_filter(hu, [s if s > 0.25 else 0 for s in sigma])
        if noise_hu > 0:
            white = rng.standard_normal(hu.shape).astype(np.float32)
            grain = ndimage.gaussian_filter(white, [0, 0.7, 0.7])
            grain *= noise_hu / max(float(grain.std()), 1e-6)
            hu = hu + grain
        hu = np.clip(np.round(hu), -1024, 3071).astype(np.float32)
        masks = {}
        for name, idx in self.names.items():
            fine = tuple(slice(a, b) for a, b in self.extent.get(name, [[0, 0]] * 3))
            coarse = self.coarse_slices(fine)
            fine = self.fine_slices(coarse)
            mask = np.zeros(self.shape, dtype=bool)
            fraction = self._block_mean(self.label[fine] == idx)
            mask[coarse] = fraction >= 0.5
            if mask.any():
                masks[name] = mask
        return hu, masks


def smooth_noise(shape, sigma_vox, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (organ texture).

    Generate it on the output grid and :meth:`Canvas.upsample` it: filtering
    the fine grid would cost up to 64 times more for the same look.
    """
    white = rng.standard_normal(shape).astype(np.float32)
    field = ndimage.gaussian_filter(white, sigma_vox, mode="wrap")
    std = float(field.std())
    return field / std if std > 0 else field
