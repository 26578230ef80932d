"""Volume nodes <-> numpy arrays and SimpleITK images, with exact geometry.

Pulling never modifies the input node (voxels are copied, nothing is written
back). Pushing writes a new or existing output node whose grid is copied from
the input node, so that a heatmap overlays the voxel it explains even for
oblique, flipped or anisotropic volumes.
"""
from __future__ import annotations

import numpy as np

from .geometry import geometry_from_ijk_to_ras, ijk_to_ras_from_sitk, same_grid

# Classes whose voxels are one scalar each. Subclasses of vtkMRMLScalarVolumeNode
# that hold vectors (RGB, diffusion, multi-volume frames) are rejected.
_SCALAR_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode")


def check_scalar_volume(node) -> None:
    """Raise a clear error unless ``node`` is a scalar volume with voxels.

    TypeError for the wrong kind of node (vector/RGB, tensor, 4D, not a
    volume), ValueError for a scalar volume that has no voxels.
    """
    if node is None:
        raise ValueError("No input volume: select a scalar volume node")
    is_a = getattr(node, "IsA", None)
    if is_a is None or not is_a("vtkMRMLScalarVolumeNode"):
        kind = node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__
        raise TypeError(f"Input must be a scalar volume node (vtkMRMLScalarVolumeNode), got {kind}")
    image = node.GetImageData()
    components = image.GetNumberOfScalarComponents() if image is not None else 1
    if node.GetClassName() not in _SCALAR_CLASSES or components != 1:
        raise TypeError(
            f"Volume '{node.GetName()}' is a {node.GetClassName()} with {components} value(s) per voxel; "
            "vector, RGB, tensor and 4D (multi-volume) nodes cannot be explained. Select a scalar "
            "volume, or extract one component or time frame first (e.g. with the Vector to Scalar "
            "Volume or Sequences modules)."
        )
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"Volume '{node.GetName()}' has no voxel data")
    if min(image.GetDimensions()) < 1 or image.GetNumberOfPoints() == 0:
        raise ValueError(f"Volume '{node.GetName()}' is empty: dimensions {image.GetDimensions()}")


def node_ijk_to_ras(node) -> np.ndarray:
    """The node's IJK-to-RAS matrix as a 4 x 4 numpy array."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_array(node) -> np.ndarray:
    """A copy of the node's voxels in numpy (K, J, I) = (z, y, x) order.

    A copy, not slicer.util's view: the engine may cast or normalise it
    without any chance of writing into the user's data.
    """
    import slicer.util

    check_scalar_volume(node)
    return np.array(slicer.util.arrayFromVolume(node), copy=True)


def volume_to_sitk(node):
    """The node as a SimpleITK image in LPS with exactly the node's grid.

    Single-slice volumes give a 3D image with one slice; integer voxels keep
    their type (the model card's preprocessing decides how to cast).
    """
    import SimpleITK as sitk

    array = volume_array(node)
    geometry = geometry_from_ijk_to_ras(node_ijk_to_ras(node))
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction_flat())
    return image


def array_on_node_grid(image, reference_node, what: str = "map") -> np.ndarray:
    """Voxels of ``image`` (SimpleITK image or numpy array) checked against the node's grid.

    The engine promises maps on the input grid; checking it here turns a
    silent misregistration into a clear error.
    """
    shape = tuple(reversed(reference_node.GetImageData().GetDimensions()))
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2 and shape[0] == 1:
            array = array[np.newaxis]
        if array.shape != shape:
            raise ValueError(f"{what} has shape {array.shape}, the input volume {shape} (z, y, x)")
        return array
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{what} must be a 3D image with one value per voxel")
    array = sitk.GetArrayFromImage(image)
    if not same_grid(ijk_to_ras_from_sitk(image), array.shape, node_ijk_to_ras(reference_node), shape):
        raise ValueError(
            f"{what} is not on the input volume's grid (size {image.GetSize()}, origin {image.GetOrigin()}, "
            f"spacing {image.GetSpacing()}); the engine must return maps on the input grid"
        )
    return array


def write_volume(scene, array: np.ndarray, reference_node, name: str, node=None,
                 class_name: str = "vtkMRMLScalarVolumeNode"):
    """Write ``array`` (z, y, x) into ``node`` (or a new node) on the reference node's grid.

    The grid (origin, spacing, axis directions) is copied with
    ``CopyOrientation`` so it is bit-identical to the reference, and the
    output goes under the same parent transform so it stays aligned when
    the input is moved. Returns the node.
    """
    import slicer.util

    array = np.ascontiguousarray(array)
    expected = tuple(reversed(reference_node.GetImageData().GetDimensions()))
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match the reference volume {expected} (z, y, x)")
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    else:
        node.SetName(name)
    node.CopyOrientation(reference_node)
    node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(node, array)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def sitk_to_volume(scene, image, name: str, node=None, class_name: str = "vtkMRMLScalarVolumeNode"):
    """A volume node holding a 3D SimpleITK image with its exact geometry (LPS -> RAS).

    The inverse of :func:`volume_to_sitk`, for images that come from files
    or from SimpleITK processing rather than from the scene.
    """
    import slicer.util
    import SimpleITK as sitk
    import vtk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("sitk_to_volume takes a 3D scalar SimpleITK image")
    matrix = ijk_to_ras_from_sitk(image)
    vtk_matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            vtk_matrix.SetElement(row, column, float(matrix[row, column]))
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(vtk_matrix)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node
