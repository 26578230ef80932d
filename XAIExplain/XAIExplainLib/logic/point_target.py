"""A markups point as the target: "explain the structure I clicked on".

A user places a point (``vtkMRMLMarkupsFiducialNode``) on a structure. For a
segmentation model the explained region is the connected region of the class
the model predicts at that point (or, ``voxel_only``, that voxel alone); for a 2D
model run per slice it is the slice through the point, explained for that
slice's predicted class. The point's voxel is found on the main thread
(:func:`point_voxel` reads the scene); the region is made from the prediction on
the worker (:func:`region_at_point`, :func:`slice_region`, plain numpy).
"""
from __future__ import annotations

import numpy as np


def is_point_target(target) -> bool:
    """True for a markups point node, or ``(markupsNode, pointIndex)``."""
    node = target[0] if isinstance(target, tuple) and len(target) == 2 else target
    return hasattr(node, "IsA") and node.IsA("vtkMRMLMarkupsNode")


def point_voxel(target, input_node) -> tuple:
    """``(z, y, x)`` voxel of the input volume under the target point; ValueError when there is none."""
    from .. import mrml

    node, index = target if isinstance(target, tuple) else (target, 0)
    if not node.IsA("vtkMRMLMarkupsFiducialNode"):
        raise TypeError(f"a point target is a markups point list (vtkMRMLMarkupsFiducialNode); "
                        f"got a {node.GetClassName()}")
    count = node.GetNumberOfControlPoints()
    if count == 0:
        raise ValueError(f"'{node.GetName()}' has no point: place a point on the structure to explain")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < count:
        raise ValueError(f"point index {index!r} is out of range: '{node.GetName()}' has {count} point(s)")
    ras = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(int(index), ras)
    ijk = np.linalg.solve(mrml.node_ijk_to_ras(input_node), np.append(ras, 1.0))[:3]
    zyx = tuple(int(v) for v in np.round(ijk[::-1]))
    shape = tuple(reversed(input_node.GetImageData().GetDimensions()))
    if not all(0 <= v < s for v, s in zip(zyx, shape)):
        raise ValueError(f"point {index + 1} of '{node.GetName()}' (RAS {np.round(ras, 1).tolist()}) lies outside "
                         f"the volume '{input_node.GetName()}'; place it on the structure to explain")
    return zyx


def region_at_point(labels: np.ndarray, voxel: tuple, voxel_only: bool = False) -> tuple:
    """``(class index, region mask)``: the predicted class at ``voxel`` and its connected region there.

    ``labels`` is the segmenter's prediction (z, y, x) on the input grid. A point on
    background (label 0) is an error: there is no structure to explain.
    """
    import scipy.ndimage

    label = int(labels[voxel])
    if label == 0:
        raise ValueError("the model predicts background at the target point: place the point on a structure "
                         "the model segments, or choose a class as target")
    region = np.zeros(labels.shape, bool)
    if voxel_only:
        region[voxel] = True
        return label, region
    components, _ = scipy.ndimage.label(labels == label)  # face-connected components
    return label, components == components[voxel]


def slice_region(shape: tuple, voxel: tuple, axis: int) -> np.ndarray:
    """Mask of the slice along numpy ``axis`` that contains ``voxel`` (2D models run per slice)."""
    region = np.zeros(shape, bool)
    index = [slice(None)] * len(shape)
    index[axis] = voxel[axis]
    region[tuple(index)] = True
    return region
