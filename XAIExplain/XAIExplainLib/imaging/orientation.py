"""Which voxel axis of a volume its axial, coronal or sagittal slices run along.

"axial" is not always numpy axis 0: a volume acquired sagittally, or stored with permuted
axes, has its axial slices along another voxel axis. The voxel axis most parallel to the
orientation's normal wins. The direction may be LPS (SimpleITK) or RAS (Slicer's
IJK-to-RAS, spacing included): only which axis, not its sign, matters.
"""
from __future__ import annotations

import numpy as np

ORIENTATIONS = ("axial", "coronal", "sagittal")
_NORMALS = {"axial": 2, "coronal": 1, "sagittal": 0}  # physical axis of each orientation's normal


def slice_axis_for_orientation(direction, orientation: str) -> int:
    """Numpy axis (of the (z, y, x) voxel array) whose slices are closest to ``orientation``.

    ``direction`` is a 3 x 3 (or 4 x 4) matrix whose columns are the voxel axes i, j, k in
    physical space.
    """
    key = str(orientation).strip().lower()
    if key not in _NORMALS:
        raise ValueError(f"orientation must be 'axial', 'coronal' or 'sagittal', got {orientation!r}")
    linear = np.asarray(direction, dtype=float)[:3, :3]
    directions = linear / np.linalg.norm(linear, axis=0)
    ijk_axis = int(np.argmax(np.abs(directions[_NORMALS[key], :])))
    return 2 - ijk_axis
