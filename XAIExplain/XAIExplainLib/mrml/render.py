"""Render a slice view to an RGBA array or PNG, without OpenGL.

``vtkMRMLSliceLogic`` composes exactly what a Slicer slice view shows
(background, foreground with its opacity, label layer) into an RGBA image.
Tests use it to check what a user would see, and the README's screenshots
come from it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .context import application_logic


def slice_logic(scene, view: str = "Red"):
    """The slice logic of a named view (``Red``, ``Yellow``, ``Green``)."""
    app = application_logic(scene)
    logic = app.GetSliceLogicByLayoutName(view) if app is not None else None
    if logic is None:
        raise ValueError(f"The scene has no slice view named '{view}'")
    return logic


def render_slice(scene, view: str = "Red", through=None, size=(256, 256), fit: bool = True) -> np.ndarray:
    """RGBA uint8 image (rows top to bottom) of a slice view as Slicer composes it.

    ``through`` is a RAS point the slice plane is moved to contain (None
    keeps the current slice); ``fit`` zooms to show all visible volumes.
    """
    from vtk.util import numpy_support

    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {size}")
    logic = slice_logic(scene, view)
    slice_node = logic.GetSliceNode()
    slice_node.SetDimensions(width, height, 1)
    if fit:
        logic.FitSliceToAll(width, height)
    if through is not None:
        point = [float(v) for v in through]
        if len(point) != 3:
            raise ValueError(f"'through' must be a RAS point (3 numbers), got {through!r}")
        slice_node.JumpSliceByOffsetting(*point)
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    columns, rows, _ = image.GetDimensions()
    components = image.GetNumberOfScalarComponents()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, components)
    return np.ascontiguousarray(array[::-1])


def ras_to_pixel(scene, view: str, ras) -> tuple:
    """(row, column) in :func:`render_slice`'s image of a RAS point on the current slice."""
    import vtk

    slice_node = slice_logic(scene, view).GetSliceNode()
    xy_to_ras = vtk.vtkMatrix4x4()
    xy_to_ras.DeepCopy(slice_node.GetXYToRAS())
    xy_to_ras.Invert()
    x, y, _, _ = xy_to_ras.MultiplyPoint([float(ras[0]), float(ras[1]), float(ras[2]), 1.0])
    height = slice_node.GetDimensions()[1]
    return int(round(height - 1 - y)), int(round(x))


def save_png(rgba: np.ndarray, path) -> Path:
    """Write an (H, W, 3 or 4) uint8 image (row 0 = top) as PNG; returns the path."""
    import vtk
    from vtk.util import numpy_support

    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4) or rgba.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {rgba.shape} {rgba.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flipped = np.ascontiguousarray(rgba[::-1]).reshape(-1, rgba.shape[2])
    image = vtk.vtkImageData()
    image.SetDimensions(rgba.shape[1], rgba.shape[0], 1)
    scalars = numpy_support.numpy_to_vtk(flipped, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()
    return path


def color_bar(color_node, height: int, width: int = 14) -> np.ndarray:
    """(height, width, 3) uint8 strip of a colour table, high values at the top."""
    count = color_node.GetNumberOfColors()
    if count < 1:
        raise ValueError(f"colour node '{color_node.GetName()}' has no colours")
    rgba = [0.0] * 4
    rows = []
    for row in range(height):
        index = int(round((height - 1 - row) / max(height - 1, 1) * (count - 1)))
        color_node.GetColor(index, rgba)
        rows.append([int(round(255 * c)) for c in rgba[:3]])
    return np.repeat(np.asarray(rows, dtype=np.uint8)[:, np.newaxis, :], width, axis=1)


def render_montage(scene, views=("Red", "Green", "Yellow"), through=None, size=(256, 256),
                   gap: int = 4, legend: bool = True) -> np.ndarray:
    """The slice views side by side (over black), plus the heatmap's colour bar: an RGB uint8 image.

    What a Slicer user sees in the conventional layout, for documentation
    and test artefacts. The colour bar is that of the foreground volume of
    the first view, when it has one.
    """
    panels = []
    for view in views:
        rgba = render_slice(scene, view, through=through, size=size).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0 if rgba.shape[2] == 4 else 1.0
        panels.append(np.round(rgba[..., :3] * alpha).astype(np.uint8))
    height = panels[0].shape[0]
    spacer = np.zeros((height, gap, 3), np.uint8)
    parts = []
    for panel in panels:
        parts += [panel, spacer]
    if legend:
        composite = slice_logic(scene, views[0]).GetSliceCompositeNode()
        foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        display = foreground.GetDisplayNode() if foreground is not None else None
        if display is not None and display.GetColorNode() is not None:
            margin = max(height // 10, 1)
            bar = np.zeros((height, 14, 3), np.uint8)
            bar[margin:height - margin] = color_bar(display.GetColorNode(), height - 2 * margin)
            parts += [bar, spacer]
    return np.concatenate(parts[:-1], axis=1)
