"""What a 2D classifier decided slice by slice: a table and a plot chart of its class probabilities.

A per-slice run gives (n_slices, K) probabilities; a user sees them best as one
curve per class over the slice index (``vtkMRMLPlotChartNode`` with one
``vtkMRMLPlotSeriesNode`` per class, shown in a plot view) next to the table they
are read from. :func:`top_slices` names the slices with the highest scores for
the status text. Nodes are created or refilled inside the caller's
:class:`~.transaction.SceneTransaction` (existing ones are protected first).
"""
from __future__ import annotations

import numpy as np

#: the column holding the slice index
SLICE_COLUMN = "slice"


def check_slice_probabilities(probabilities, class_names) -> np.ndarray:
    """(n_slices, K) float array; a clear error when shapes and names disagree."""
    values = np.asarray(probabilities, dtype=float)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"per-slice probabilities must be (n_slices, K), got shape {values.shape}")
    if class_names and len(class_names) != values.shape[1]:
        raise ValueError(f"{values.shape[1]} probability columns but {len(class_names)} class names")
    return values


def column_names(class_names, count: int) -> list:
    """One column name per class: the class names, else ``class 0`` ..."""
    return list(class_names) if class_names else [f"class {k}" for k in range(count)]


def publish_slice_probabilities(scene, transaction, probabilities, class_names, name: str,
                                table_node=None, chart_node=None):
    """Table (slice, one column per class) and plot chart (one series per class); returns ``(table, chart)``.

    ``table_node`` / ``chart_node``: the nodes of an earlier run to refill (the chart's
    series of the same classes are reused), or None for new nodes.
    """
    import vtk

    values = check_slice_probabilities(probabilities, class_names)
    names = column_names(class_names, values.shape[1])
    for node in (table_node, chart_node):
        transaction.protect(node)
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
    else:
        table_node.RemoveAllColumns()
    table = table_node.GetTable()
    index = vtk.vtkIntArray()
    index.SetName(SLICE_COLUMN)
    for row in range(values.shape[0]):
        index.InsertNextValue(row)
    table.AddColumn(index)
    for k, column in enumerate(names):
        array = vtk.vtkDoubleArray()
        array.SetName(column)
        for row in range(values.shape[0]):
            array.InsertNextValue(float(values[row, k]))
        table.AddColumn(array)
    table_node.Modified()

    existing = {}
    if chart_node is None:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
    else:
        for i in range(chart_node.GetNumberOfPlotSeriesNodes()):
            series = chart_node.GetNthPlotSeriesNode(i)
            if series is not None:
                transaction.protect(series)
                existing[series.GetYColumnName()] = series
    chart_node.SetTitle(f"{name}: class probability per slice")
    chart_node.SetXAxisTitle("slice")
    chart_node.SetYAxisTitle("probability")
    for column in names:
        series = existing.get(column)  # a re-run refills the same series (nothing is removed)
        if series is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(SLICE_COLUMN)
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeLine)
    return table_node, chart_node


def top_slices(probabilities, class_names, count: int = 3) -> str:
    """``"nodule: slices 33 (0.97), 32 (0.91), 34 (0.88)"`` for every class but the first (background)."""
    values = check_slice_probabilities(probabilities, class_names)
    names = column_names(class_names, values.shape[1])
    parts = []
    for k in range(1 if values.shape[1] > 1 else 0, values.shape[1]):
        order = np.argsort(-values[:, k], kind="stable")[:count]
        parts.append(f"{names[k]}: slices " + ", ".join(f"{int(i)} ({values[i, k]:.2f})" for i in order))
    return "; ".join(parts)
