"""The value every phantom generator returns: HU volume, geometry and ground-truth masks."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk


@dataclass
class Phantom:
    """A synthetic CT volume with the mask of every structure in it.

    ``array`` is float32 HU in numpy order ``(z, y, x)``; ``spacing`` is in the
    same order (mm); ``origin`` is the physical ``(x, y, z)`` position of voxel
    ``(0, 0, 0)`` (SimpleITK order, LPS, identity direction: rows run from the
    patient's front to back, columns from the patient's right to left, the
    radiological view).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    masks: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    def mask(self, *names: str) -> np.ndarray:
        """Union of the named structures' masks (absent structures contribute nothing)."""
        vocabulary = set(self.info.get("structures", ())) | set(self.masks)
        unknown = [n for n in names if n not in vocabulary]
        if unknown:
            raise KeyError(f"unknown structure(s) {unknown}; known structures: "
                           f"{', '.join(sorted(vocabulary))}")
        out = np.zeros(self.array.shape, dtype=bool)
        for name in names:
            if name in self.masks:
                out |= self.masks[name]
        return out

    def image(self) -> sitk.Image:
        """The volume as an int16 ``SimpleITK.Image`` with spacing and origin set."""
        return self._geometry(sitk.GetImageFromArray(self.array.astype(np.int16)))

    def mask_image(self, *names: str) -> sitk.Image:
        """A uint8 label image (0/1) of the union of ``names`` on the same grid."""
        return self._geometry(sitk.GetImageFromArray(self.mask(*names).astype(np.uint8)))

    def _geometry(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(tuple(float(s) for s in reversed(self.spacing)))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        return image


def check_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Validate a requested output grid; a scalar spacing means isotropic."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be 3 positive integers (z, y, x), got {shape}")
    if np.ndim(spacing) == 0:
        spacing = (float(spacing),) * 3
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not s > 0 or not math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be 3 positive numbers (z, y, x) in mm, got {spacing}")
    return shape, spacing


def supersampling(spacing: Sequence[float], factors: Sequence[int] | int | None) -> tuple[int, int, int]:
    """Fine-grid factors: enough to resolve ~1 mm in-plane and ~1.25 mm along z, at most 4."""
    if factors is None:
        z, y, x = spacing
        return (min(4, max(1, math.ceil(z / 1.25 - 1e-6))), min(3, max(1, math.ceil(y / 1.0 - 1e-6))),
                min(3, max(1, math.ceil(x / 1.0 - 1e-6))))
    if np.ndim(factors) == 0:
        factors = (int(factors),) * 3
    factors = tuple(int(f) for f in factors)
    if len(factors) != 3 or any(f < 1 or f > 8 for f in factors):
        raise ValueError(f"supersample must be 1..8 per axis (z, y, x), got {factors}")
    return factors
