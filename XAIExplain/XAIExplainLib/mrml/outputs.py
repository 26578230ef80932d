"""Publishing results into the scene: create-or-update output nodes with their display.

Each ``publish_*`` function finds the output made earlier with the same
choices (unless ``keep_existing``), protects it in the transaction before
overwriting it, writes the voxels on the input's grid, tags the node with
its provenance and sets up how it looks. The caller owns the
:class:`~.transaction.SceneTransaction`, so a failure anywhere undoes all.
"""
from __future__ import annotations

import numpy as np

from .colors import heat_color_node
from .display import DEFAULT_DISPLAY_THRESHOLD, add_color_legend, configure_heatmap_display, configure_label_display
from .labels import threshold_map, write_labelmap, write_segmentation
from .naming import find_output, tag_output, unique_name
from .volumes import write_volume


def _reusable(scene, transaction, key: str, class_name: str, keep_existing: bool):
    node = None if keep_existing else find_output(scene, key, class_name)
    transaction.protect(node)
    return node


def heatmap_window(values: np.ndarray) -> tuple:
    """``(low, high, signed)``: [0, 1] for maps in [0, 1], else a symmetric or data window.

    Maps from the engine are normalised to [0, 1]; raw or signed maps get a
    window that covers their values (symmetric about 0 when signed) so that
    zero always maps to the same colour.
    """
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 1.0
    if low < 0.0:
        bound = max(abs(low), abs(high), 1e-12)
        return -bound, bound, True
    if high <= 1.0:
        return 0.0, 1.0, False
    return 0.0, high, False


def publish_heatmap(scene, transaction, input_node, values: np.ndarray, name: str, key: str,
                    attributes: dict | None = None, description: str = "", legend_title: str | None = None,
                    display_threshold: float | None = DEFAULT_DISPLAY_THRESHOLD, keep_existing: bool = False):
    """A scalar volume for one attribution map, coloured and thresholded; returns the node."""
    values = np.asarray(values, dtype=np.float32)
    node = _reusable(scene, transaction, key, "vtkMRMLScalarVolumeNode", keep_existing)
    name = unique_name(scene, name, keep=node)
    node = write_volume(scene, values, input_node, name, node=node)
    tag_output(node, input_node, "heatmap", key, **(attributes or {}))
    node.SetDescription(description)
    low, high, signed = heatmap_window(values)
    color_node = heat_color_node(scene, signed=signed)
    configure_heatmap_display(node, color_node, (low, high), None if signed else display_threshold)
    if legend_title is not None:
        add_color_legend(scene, node, legend_title)
    return node


def publish_mask(scene, transaction, input_node, values: np.ndarray, threshold, name: str, key: str,
                 as_segmentation: bool = False, color=(1.0, 0.85, 0.2), attributes: dict | None = None,
                 keep_existing: bool = False):
    """The map thresholded at a value or Otsu, as a label map or a one-segment segmentation.

    Returns ``(node, threshold used)``; the threshold is also recorded on the node.
    """
    mask, used = threshold_map(values, threshold)
    rule = f"Otsu {used:.3g}" if isinstance(threshold, str) else f">{used:.3g}"
    full_name = f"{name} mask ({rule})"
    attributes = dict(attributes or {}, Threshold=f"{used:.6g}", ThresholdRule=str(threshold))
    if as_segmentation:
        node = _reusable(scene, transaction, key, "vtkMRMLSegmentationNode", keep_existing)
        full_name = unique_name(scene, full_name, keep=node)
        node = write_segmentation(scene, mask, input_node, full_name, [(1, f"{name} > {used:.3g}", color)],
                                  node=node)
    else:
        node = _reusable(scene, transaction, key, "vtkMRMLLabelMapVolumeNode", keep_existing)
        full_name = unique_name(scene, full_name, keep=node)
        node = write_labelmap(scene, mask, input_node, full_name, node=node)
        configure_label_display(node)
    tag_output(node, input_node, "mask", key, **attributes)
    return node, used


def publish_prediction(scene, transaction, input_node, labels: np.ndarray, entries, name: str, key: str,
                       attributes: dict | None = None, keep_existing: bool = False):
    """The model's label prediction as a segmentation with one segment per class."""
    node = _reusable(scene, transaction, key, "vtkMRMLSegmentationNode", keep_existing)
    name = unique_name(scene, name, keep=node)
    node = write_segmentation(scene, np.asarray(labels), input_node, name, entries, node=node)
    tag_output(node, input_node, "prediction", key, **(attributes or {}))
    return node
