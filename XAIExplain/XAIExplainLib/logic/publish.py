"""Publishing a run: its maps and prediction become scene nodes, named for what they show.

Runs on the main thread inside the scene transaction that ``ExplainJob.finish`` opens, from a
frozen :class:`~.request.ExplainRequest` and the compute phase's result; names follow
``<volume> <method> <class> <layer>`` and a re-run with the same choices updates its nodes.
"""
from __future__ import annotations

import numpy as np

from .. import mrml
from ..mrml import naming, outputs, plots
from . import point_target


class OutputNodes(list):
    """The nodes a run created or updated (a list), with named access.

    ``heatmaps``      method name -> heatmap volume node
    ``masks``         method name -> thresholded label map / segmentation node
    ``prediction``    the model's prediction as a segmentation node (segmenters) or None
    ``probabilities`` classifier probabilities, (K,) or (n_slices, K), or None
    ``classNames``    the model's class names
    ``probabilityTable``, ``probabilityChart``  per-slice classifier runs: the class
                      probabilities per slice as a table node and a plot chart node (also
                      created or updated by the run; not in the list, which holds the volumes
                      and segmentations shown over the input)
    ``summary``       one line for the status text (per-slice runs: the top-scoring slices)
    ``timings``       seconds per phase
    """

    def __init__(self):
        super().__init__()
        self.heatmaps: dict = {}
        self.masks: dict = {}
        self.prediction = None
        self.probabilities = None
        self.classNames: list = []
        self.probabilityTable = None
        self.probabilityChart = None
        self.summary = ""
        self.timings: dict = {}


def on_input_grid(request, result) -> dict:
    """Main thread: the result with its maps and prediction checked against the input node's grid,
    a point target's maps kept to the slice through the point, and ``targetLabel`` set."""
    node = request.node
    result = dict(result)
    result["maps"] = {name: mrml.array_on_node_grid(value, node, f"map '{name}'")
                      for name, value in result["maps"].items()}
    if result["labels"] is not None:
        result["labels"] = mrml.array_on_node_grid(result["labels"], node, "prediction")
    label = request.target_label
    point, names = request.point, request.class_names
    if not label and result.get("explainedClass") is not None and names:
        label = names[int(result["explainedClass"])]  # one class for the whole volume (models.explained_class)
    if point is not None and result.get("pointClass") is not None:  # a segmenter's region at the point
        label = names[result["pointClass"]] if names else f"class {result['pointClass']}"
    elif point is not None:  # a 2D classifier per slice: the slice through the point
        inside = point_target.slice_region(next(iter(result["maps"].values())).shape, point, request.axis)
        result["maps"] = {name: np.where(inside, value, 0).astype(value.dtype)
                          for name, value in result["maps"].items()}
        probabilities = np.atleast_2d(result["probabilities"])
        if probabilities.shape[0] > point[request.axis]:
            winner = int(np.argmax(probabilities[point[request.axis]]))
            label = names[winner] if names else f"class {winner}"
    result["targetLabel"] = label
    return result


def class_label(request, result) -> str:
    """The class named in the output nodes: the target's, or the one predicted everywhere, or "predicted"."""
    if result.get("targetLabel"):
        return result["targetLabel"]
    names, probabilities = request.class_names, result["probabilities"]
    if probabilities is None or not names:
        return "predicted"
    winners = np.unique(np.argmax(np.atleast_2d(probabilities), axis=-1))
    # one class predicted everywhere (the volume, or every slice): name it; else each slice its own
    return names[int(winners[0])] if len(winners) == 1 else "predicted"


def publish(scene, transaction, request, result, report) -> OutputNodes:
    """Create or update the run's nodes inside ``transaction``; ``report(fraction, message)``."""
    from ..engine import METHODS

    node = request.node
    nodes = OutputNodes()
    nodes.classNames = list(request.class_names)
    nodes.probabilities = result["probabilities"]
    label_of_class = class_label(request, result)
    choices = {"model": request.model_name, "target": request.target_key, "mode": request.mode_key,
               "axis": request.axis}
    total = len(request.methods)
    for index, method in enumerate(request.methods):
        report(0.9 + 0.08 * index / total, f"Writing {method}")
        info = METHODS[method]
        label = info.label
        layer_label = request.layer_label if info.needs_layer else ""
        name = naming.output_name(node.GetName(), label, label_of_class, layer_label)
        key_choices = dict(choices, method=method, layer=layer_label)
        attributes = {"Model": request.model_name, "Method": method, "Target": label_of_class,
                      "Layer": layer_label, "Mode": request.mode, "Axis": request.axis}
        description = (f"{label} of model '{request.model_name}' for {label_of_class or 'the prediction'}"
                       + (f" at layer {layer_label}" if layer_label else "") + f" on '{node.GetName()}'")
        heatmap = outputs.publish_heatmap(
            scene, transaction, node, result["maps"][method], name,
            naming.output_key(node, "heatmap", **key_choices), attributes, description,
            legend_title=" ".join(filter(None, (label, label_of_class, layer_label))) if request.color_legend
            else None,
            display_threshold=request.display_threshold, keep_existing=request.keep_existing)
        nodes.heatmaps[method] = heatmap
        nodes.append(heatmap)
        if request.label_threshold is not None:
            mask, _ = outputs.publish_mask(
                scene, transaction, node, result["maps"][method], request.label_threshold, name,
                naming.output_key(node, "mask", **key_choices),
                as_segmentation=request.label_output == "segmentation", attributes=attributes,
                keep_existing=request.keep_existing)
            nodes.masks[method] = mask
            nodes.append(mask)
    if request.prediction_segmentation and result["labels"] is not None:
        report(0.98, "Writing the prediction")
        entries = mrml.class_entries(request.model.card.classes, label_values=np.unique(result["labels"]))
        nodes.prediction = outputs.publish_prediction(
            scene, transaction, node, result["labels"], entries,
            naming.output_name(node.GetName(), request.model_name, "prediction"),
            naming.output_key(node, "prediction", **choices), {"Model": request.model_name},
            keep_existing=request.keep_existing)
        nodes.append(nodes.prediction)
    probabilities = result["probabilities"]
    if probabilities is not None and np.ndim(probabilities) == 2 and len(probabilities) > 1:
        report(0.99, "Writing the per-slice probabilities")
        base = naming.output_name(node.GetName(), request.model_name, "probabilities")
        key = naming.output_key(node, "probabilities", **choices)
        table, chart = plots.publish_slice_probabilities(
            scene, transaction, probabilities, list(request.class_names), base,
            table_node=None if request.keep_existing else naming.find_output(scene, key, "vtkMRMLTableNode"),
            chart_node=None if request.keep_existing else naming.find_output(scene, key, "vtkMRMLPlotChartNode"))
        for output in (table, chart):
            naming.tag_output(output, node, "probabilities", key, Model=request.model_name)
        nodes.probabilityTable, nodes.probabilityChart = table, chart
        nodes.summary = "Highest scores: " + plots.top_slices(probabilities, list(request.class_names))
    first = nodes.heatmaps[request.methods[0]]
    first_mask = nodes.masks.get(request.methods[0])
    label_layer = first_mask if first_mask is not None and first_mask.IsA("vtkMRMLLabelMapVolumeNode") else None
    mrml.show_in_slice_views(scene, background=node, foreground=first, opacity=request.opacity, label=label_layer)
    if label_layer is not None:
        mrml.display.configure_label_display(label_layer, scene=scene, outline=True)
    return nodes
