"""Voxel-grid geometry shared by MRML volume nodes and SimpleITK images.

Slicer describes a volume by one 4 x 4 IJK-to-RAS matrix; SimpleITK (and ITK,
DICOM, NRRD files) by origin, spacing and a direction matrix in LPS. The two
differ only by the sign of the first two world axes, but getting that sign,
the column order or the spacing normalisation wrong silently shifts a heatmap
off the anatomy, so every conversion goes through this one module.

Pure numpy: no Slicer, no VTK, so it is testable anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Multiplying a RAS point by this matrix gives the LPS point (and vice versa).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class GridGeometry:
    """Geometry of a voxel grid in LPS, the convention of SimpleITK images.

    ``direction`` is a 3 x 3 matrix whose *columns* are the unit vectors of the
    i, j and k voxel axes (SimpleITK stores the same matrix row-major).
    """

    origin: tuple
    spacing: tuple
    direction: np.ndarray

    def direction_flat(self) -> tuple:
        """Row-major 9-tuple, the form ``SimpleITK.Image.SetDirection`` takes."""
        return tuple(float(v) for v in self.direction.ravel())


def geometry_from_ijk_to_ras(ijk_to_ras) -> GridGeometry:
    """Split a 4 x 4 IJK-to-RAS matrix into LPS origin, spacing and direction.

    Flipped axes (negative direction columns) and oblique (rotated) grids are
    preserved exactly; a matrix with a zero-length axis is rejected because
    no image library can represent it.
    """
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError(f"IJK-to-RAS must be a 4 x 4 matrix, got shape {matrix.shape}")
    linear = matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"IJK-to-RAS matrix has a degenerate or non-finite axis: {matrix.tolist()}")
    direction_ras = linear / spacing
    direction_lps = RAS_TO_LPS @ direction_ras
    origin_lps = RAS_TO_LPS @ matrix[:3, 3]
    return GridGeometry(
        origin=tuple(float(v) for v in origin_lps),
        spacing=tuple(float(v) for v in spacing),
        direction=direction_lps,
    )


def ijk_to_ras_from_geometry(origin, spacing, direction) -> np.ndarray:
    """Compose the 4 x 4 IJK-to-RAS matrix from LPS origin, spacing and direction.

    ``direction`` may be a 3 x 3 matrix (columns = axes) or the row-major
    9-tuple that ``SimpleITK.Image.GetDirection`` returns.
    """
    direction_lps = np.asarray(direction, dtype=float).reshape(3, 3)
    spacing = np.asarray(spacing, dtype=float)
    origin = np.asarray(origin, dtype=float)
    if spacing.shape != (3,) or origin.shape != (3,):
        raise ValueError("origin and spacing must have three components (a 3D grid)")
    matrix = np.eye(4)
    matrix[:3, :3] = RAS_TO_LPS @ direction_lps @ np.diag(spacing)
    matrix[:3, 3] = RAS_TO_LPS @ origin
    return matrix


def ijk_to_ras_from_sitk(image) -> np.ndarray:
    """IJK-to-RAS matrix of a 3D SimpleITK image (duck-typed: no import needed)."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    return ijk_to_ras_from_geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def same_grid(ijk_to_ras_a, shape_a, ijk_to_ras_b, shape_b, tolerance: float = 1e-4) -> bool:
    """True when two grids have the same voxel count and the same voxel positions.

    The tolerance is relative to the voxel size, so sub-micrometre rounding in
    a file header does not count as a different grid.
    """
    if tuple(shape_a) != tuple(shape_b):
        return False
    a = np.asarray(ijk_to_ras_a, dtype=float)
    b = np.asarray(ijk_to_ras_b, dtype=float)
    scale = max(float(np.abs(a[:3, :3]).max()), 1e-12)
    return bool(np.allclose(a, b, rtol=0.0, atol=tolerance * scale))


def voxel_to_ras(ijk_to_ras, ijk) -> np.ndarray:
    """RAS position of voxel index (i, j, k) (or an N x 3 array of them)."""
    matrix = np.asarray(ijk_to_ras, dtype=float)
    points = np.atleast_2d(np.asarray(ijk, dtype=float))
    ras = points @ matrix[:3, :3].T + matrix[:3, 3]
    return ras[0] if np.ndim(ijk) == 1 else ras


#: Anatomical orientation of a slice -> the RAS axis normal to it (0 = R, 1 = A, 2 = S).
