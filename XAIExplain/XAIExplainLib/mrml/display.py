"""How heatmaps, label maps and predictions look in the slice views.

A heatmap is only useful over the anatomy it explains: it becomes the
foreground layer of every slice view over its input volume, with a heat
colour table, a fixed window (so two maps compare by colour) and a lower
threshold that makes near-zero attribution transparent.
"""
from __future__ import annotations

from .context import color_logic, register_extra_node_classes

DEFAULT_OPACITY = 0.4
DEFAULT_DISPLAY_THRESHOLD = 0.05


def _check_fraction(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value}")
    return value


def configure_heatmap_display(node, color_node, window=(0.0, 1.0),
                              threshold: float | None = DEFAULT_DISPLAY_THRESHOLD):
    """Colour table, fixed window ``(low, high)`` and lower threshold of a heatmap node.

    ``threshold`` is a fraction of the window: voxels below
    ``low + threshold * (high - low)`` are transparent. None shows every
    voxel: signed maps need it, because a lower threshold would hide their
    negative half (their colour table is black at zero instead).
    """
    low, high = (float(v) for v in window)
    if not high > low:
        raise ValueError(f"window must satisfy low < high, got {window}")
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    was_modifying = display.StartModify()
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
    display.AutoThresholdOff()
    if threshold is None:
        display.ApplyThresholdOff()
    else:
        fraction = _check_fraction(threshold, "display threshold")
        display.SetThreshold(low + fraction * (high - low), max(high, 1.0) * 1e6)
        display.ApplyThresholdOn()
    display.SetInterpolate(True)
    display.SetVisibility(True)
    display.EndModify(was_modifying)
    return display


def slice_composite_nodes(scene) -> list:
    """Every slice view's composite node (which volumes are shown in that view)."""
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")
    return [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(count)]


def show_in_slice_views(scene, background=None, foreground=None, opacity: float | None = None,
                        label=None) -> list:
    """Put volumes into the background / foreground / label layer of all slice views.

    None leaves a layer as it is. Returns the composite nodes changed, so a
    caller that must undo can snapshot exactly those.
    """
    if opacity is not None:
        opacity = _check_fraction(opacity, "opacity")
    composites = slice_composite_nodes(scene)
    for composite in composites:
        was_modifying = composite.StartModify()
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if opacity is not None:
            composite.SetForegroundOpacity(opacity)
        if label is not None:
            composite.SetLabelVolumeID(label.GetID())
        composite.EndModify(was_modifying)
    return composites


def set_heatmap_opacity(scene, opacity: float) -> None:
    """Change the foreground opacity in every slice view (the widget's slider)."""
    show_in_slice_views(scene, opacity=opacity)


def add_color_legend(scene, node, title: str):
    """Show a colour legend for ``node`` in the slice views; reuse an existing one."""
    register_extra_node_classes(scene)
    logic = color_logic(scene)
    legend = logic.GetColorLegendDisplayNode(node)
    if legend is None:
        legend = logic.AddDefaultColorLegendDisplayNode(node)
    if legend is None:
        raise RuntimeError(f"Could not add a colour legend to '{node.GetName()}'")
    legend.SetTitleText(title)
    legend.SetVisibility(True)
    return legend


def configure_label_display(node, color_node=None, outline: bool = True, scene=None) -> None:
    """Label map colours and outline mode in the slice views (contour over the heatmap)."""
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    if color_node is not None:
        display.SetAndObserveColorNodeID(color_node.GetID())
    if scene is not None:
        count = scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")
        for i in range(count):
            scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").SetUseLabelOutline(outline)
