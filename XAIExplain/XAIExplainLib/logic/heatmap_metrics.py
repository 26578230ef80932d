"""Metrics of a heatmap node against a label map or a segment, shown as a table node.

The Slicer-facing side of ``XAIExplainLib.evaluation``: the user picks a heatmap and
the ground truth (a label map volume, or one segment of a segmentation) and gets the
map-only metrics (``evaluation.MAP_ONLY_METRICS``) in a table. The scene is changed only by the
one table node created (or updated) at the end.
"""
from __future__ import annotations

import numpy as np

from ..mrml import geometry, labels, tables, volumes


def ground_truth_mask(mask_node, reference_node, segment_id=None, label_value=None) -> np.ndarray:
    """Boolean (z, y, x) mask on the heatmap's grid from a label map or one segment."""
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        segmentation = mask_node.GetSegmentation()
        if segment_id is None:
            if segmentation.GetNumberOfSegments() != 1:
                names = [segmentation.GetNthSegment(i).GetName()
                         for i in range(segmentation.GetNumberOfSegments())]
                raise ValueError(f"'{mask_node.GetName()}' has {len(names)} segments {names}; "
                                 "say which one with segmentId")
            segment_id = segmentation.GetNthSegmentID(0)
        return labels.segment_mask(mask_node, segment_id, reference_node)
    volumes.check_scalar_volume(mask_node)
    array = volumes.volume_array(mask_node)
    if not geometry.same_grid(volumes.node_ijk_to_ras(mask_node), array.shape,
                              volumes.node_ijk_to_ras(reference_node),
                              tuple(reversed(reference_node.GetImageData().GetDimensions()))):
        raise ValueError(f"label map '{mask_node.GetName()}' is not on the grid of heatmap "
                         f"'{reference_node.GetName()}'; resample it onto the heatmap (or its input volume) first")
    return array == label_value if label_value is not None else array != 0


def evaluate_heatmap_node(scene, heatmap_node, mask_node, segment_id=None, label_value=None,
                          metrics=None, tolerance_mm: float = 0.0, table_node=None):
    """Compute ``metrics`` of the heatmap against the mask; return (table node, {metric: value}).

    ``metrics`` None: evaluation's ``MAP_ONLY_METRICS`` (the one list of what needs no model;
    the command line's default too), the mask standing for the voxels used (specificity)."""
    import torch

    from ..evaluation import MAP_ONLY_METRICS, evaluate

    volumes.check_scalar_volume(heatmap_node)
    heatmap = volumes.volume_array(heatmap_node).astype(np.float32)
    mask = ground_truth_mask(mask_node, heatmap_node, segment_id, label_value)
    if not mask.any():
        raise ValueError(f"the ground truth '{mask_node.GetName()}' is empty on the heatmap's grid; "
                         "pick a non-empty segment or label")
    spacing = tuple(reversed(heatmap_node.GetSpacing()))  # (z, y, x) like the array
    columns = evaluate(None, None, torch.from_numpy(heatmap)[None], mask=torch.from_numpy(mask)[None],
                           metrics=list(MAP_ONLY_METRICS if metrics is None else metrics), spacing=spacing, tolerance_mm=tolerance_mm)
    rows = {key: values[0] for key, values in columns.items()}
    name = f"{heatmap_node.GetName()} metrics vs {mask_node.GetName()}"
    return tables.write_table(scene, rows, name, node=table_node), rows
