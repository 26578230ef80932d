"""Masks from heatmaps, and segmentations from masks and model predictions.

A thresholded heatmap is how a scientist compares "where the model looked"
with an expert contour (heatmap-as-segmentation Dice); the model's own
prediction as a segmentation shows what the explanation explains. Both land
on the input volume's grid, with named and coloured segments.
"""
from __future__ import annotations

import numpy as np

from ..imaging.thresholds import resolve_threshold, threshold_map  # noqa: F401  (the one rule, re-exported)
from .colors import fallback_color, parse_color
from .volumes import node_ijk_to_ras


def oriented_image_from_array(array: np.ndarray, ijk_to_ras: np.ndarray):
    """A vtkOrientedImageData (segmentation's image type) from a (z, y, x) array."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    array = np.ascontiguousarray(array, dtype=np.uint8)
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    target = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    target[:] = array.ravel()
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(ijk_to_ras[row][column]))
    image.SetImageToWorldMatrix(matrix)
    return image


def class_entries(classes, label_values=None) -> list:
    """``(label value, name, colour)`` for every foreground class of a model card.

    ``classes`` is a list of names, of dicts with ``name`` and optional
    ``color`` / ``value``, or of objects with ``name`` and ``color``
    attributes (the model card's ClassSpec, whose ``value`` is used when set). Value 0 is background and gets
    no segment unless the card gives it an explicit non-background value.
    """
    entries = []
    for index, item in enumerate(classes or []):
        if isinstance(item, str):
            name, color, value = item, None, index
        elif isinstance(item, dict):
            if "name" not in item:
                raise ValueError(f"class entry {item!r} has no 'name'")
            name = str(item["name"])
            color = item.get("color", item.get("colour"))
            value = int(item.get("value", item.get("label", index)))
        elif hasattr(item, "name"):
            value = getattr(item, "value", None)
            name, color, value = str(item.name), getattr(item, "color", None), index if value is None else int(value)
        else:
            raise TypeError(f"class entries must be names, dicts or class specs, got {type(item).__name__}")
        if value == 0:
            continue
        entries.append((value, name, parse_color(color) if color is not None else fallback_color(value - 1)))
    if label_values is not None:
        known = {entry[0] for entry in entries}
        for value in sorted(int(v) for v in label_values if int(v) != 0 and int(v) not in known):
            entries.append((value, f"label {value}", fallback_color(value - 1)))
    return entries


def write_segmentation(scene, label_array: np.ndarray, reference_node, name: str, entries,
                       node=None):
    """Write a label array as a segmentation: one named, coloured segment per entry.

    ``entries`` are ``(label value, name, (r, g, b))``. Classes absent from
    the array still get an (empty) segment, so the segment list always
    matches the model's classes. An existing ``node`` is cleared and reused.
    """
    label_array = np.asarray(label_array)
    expected = tuple(reversed(reference_node.GetImageData().GetDimensions()))
    if label_array.shape != expected:
        raise ValueError(f"label array shape {label_array.shape} does not match the volume {expected}")
    import slicer

    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    else:
        node.SetName(name)
        node.GetSegmentation().RemoveAllSegments()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    ijk_to_ras = node_ijk_to_ras(reference_node)
    segmentation = node.GetSegmentation()
    for value, segment_name, color in entries:
        segment_id = segmentation.AddEmptySegment("", segment_name, list(color))
        mask = oriented_image_from_array(label_array == value, ijk_to_ras)
        if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(mask, node, segment_id):
            raise RuntimeError(f"Could not write segment '{segment_name}' into '{name}'")
    return node


def write_labelmap(scene, mask: np.ndarray, reference_node, name: str, node=None):
    """Write a 0/1 mask as a label map volume on the reference grid."""
    from .volumes import write_volume

    return write_volume(scene, np.asarray(mask, dtype=np.uint8), reference_node, name, node=node,
                        class_name="vtkMRMLLabelMapVolumeNode")


def segment_mask(segmentation_node, segment_id: str, reference_node) -> np.ndarray:
    """Boolean (z, y, x) mask of one segment on the reference volume's grid.

    Used as a region of interest (the Seg-Grad-CAM target). The segment is
    resampled onto the reference grid whatever its own geometry.
    """
    import slicer

    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSegment(segment_id) is None:
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        raise ValueError(f"Segmentation '{segmentation_node.GetName()}' has no segment '{segment_id}' "
                         f"(segments: {names})")
    node_shape = tuple(reversed(reference_node.GetImageData().GetDimensions()))
    segmentation_node.CreateBinaryLabelmapRepresentation()
    segment_image = slicer.vtkOrientedImageData()
    if not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, segment_image):
        raise RuntimeError(f"Could not read segment '{segment_id}' of '{segmentation_node.GetName()}'")
    reference = oriented_image_from_array(np.zeros(node_shape, np.uint8), node_ijk_to_ras(reference_node))
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            segment_image, reference, resampled, False, True):
        raise RuntimeError(f"Could not resample segment '{segment_id}' onto '{reference_node.GetName()}'")
    return _array_in_extent(resampled, node_shape) > 0


def _array_in_extent(image, shape) -> np.ndarray:
    """Voxels of an image placed into a (z, y, x) array of ``shape`` by the image's extent."""
    from vtk.util import numpy_support

    out = np.zeros(shape, dtype=np.float32)
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    if x1 < x0 or y1 < y0 or z1 < z0 or image.GetPointData().GetScalars() is None:
        return out
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    values = values.reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    lo = (max(z0, 0), max(y0, 0), max(x0, 0))
    hi = (min(z1 + 1, shape[0]), min(y1 + 1, shape[1]), min(x1 + 1, shape[2]))
    if any(h <= l for l, h in zip(lo, hi)):
        return out
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = values[lo[0] - z0:hi[0] - z0, lo[1] - y0:hi[1] - y0,
                                                        lo[2] - x0:hi[2] - x0]
    return out
