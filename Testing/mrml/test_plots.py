"""Per-slice class probabilities of a 2D classifier as a table node and a plot chart (one series per class).

The reference is the model itself, run slice by slice in the test (softmax of its
logits); the table must hold exactly those numbers, the chart one line series per
class reading that table, and the summary must name the slices with the object.
"""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import add_volume, box_volume, scene, scene_state  # noqa: F401

torch = pytest.importorskip("torch")

from Testing.support.slicer_scene import bright_spot_model  # noqa: E402
from XAIExplainLib.logic import XAIExplainLogic  # noqa: E402
from XAIExplainLib.mrml import SceneTransaction, plots  # noqa: E402

CLASSES = ["dark", "bright"]


def table_columns(table_node) -> dict:
    table = table_node.GetTable()
    return {table.GetColumn(c).GetName(): np.array([table.GetColumn(c).GetValue(r)
                                                    for r in range(table.GetNumberOfRows())])
            for c in range(table.GetNumberOfColumns())}


def reference_probabilities(model, array) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(array.astype(np.float32))[:, None])
    return torch.softmax(logits.double(), dim=1).numpy()


def test_a_per_slice_run_writes_a_probability_table_and_a_chart_with_one_series_per_class(scene):
    array = (box_volume() > 0).astype(np.int16) * 3 - 1  # -1 outside, 2 in the box: probabilities not saturated
    array[:, 0, 0] = np.arange(12) % 3  # a little per-slice variation
    node = add_volume(array)
    model = bright_spot_model(2)
    nodes = XAIExplainLogic().explainVolume(node, model, methods=["gradcam"], classNames=CLASSES, mode="axial")
    expected = reference_probabilities(model, array)
    columns = table_columns(nodes.probabilityTable)
    assert list(columns) == ["slice", "dark", "bright"]
    np.testing.assert_array_equal(columns["slice"], np.arange(12))
    np.testing.assert_allclose(np.stack([columns["dark"], columns["bright"]], axis=1), expected, atol=1e-6)
    chart = nodes.probabilityChart
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert [s.GetYColumnName() for s in series] == CLASSES
    assert all(s.GetTableNode() is nodes.probabilityTable and s.GetXColumnName() == "slice" for s in series)
    top = [int(i) for i in np.argsort(-expected[:, 1], kind="stable")[:3]]
    assert nodes.summary == "Highest scores: bright: slices " + ", ".join(
        f"{i} ({expected[i, 1]:.2f})" for i in top)
    assert set(top) <= set(range(4, 8))  # the box's slices

    # a re-run refills the same table and chart; a failed re-run leaves them as they were
    again = XAIExplainLogic().explainVolume(node, model, methods=["gradcam"], classNames=CLASSES, mode="axial")
    assert again.probabilityTable is nodes.probabilityTable and again.probabilityChart is chart
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    before = scene_state(scene)
    with pytest.raises(RuntimeError, match="stop"):
        with SceneTransaction(scene) as transaction:
            plots.publish_slice_probabilities(scene, transaction, np.zeros((12, 2)), CLASSES, "x",
                                              table_node=nodes.probabilityTable, chart_node=chart)
            raise RuntimeError("stop")
    assert scene_state(scene) == before


def test_heatmaps_carry_a_colour_legend_and_a_description_naming_method_class_and_layer(scene):
    node = add_volume(box_volume(), name="CT")
    nodes = XAIExplainLogic().explainVolume(node, bright_spot_model(2), methods=["gradcam", "saliency"],
                                            classNames=CLASSES, target="bright", mode="axial", layer="features")
    for method, title in (("gradcam", "Grad-CAM bright features"), ("saliency", "Saliency bright")):
        heatmap = nodes.heatmaps[method]
        legends = [heatmap.GetNthDisplayNode(i) for i in range(heatmap.GetNumberOfDisplayNodes())
                   if heatmap.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode")]
        assert len(legends) == 1 and legends[0].GetTitleText() == title, method
        assert "bright" in heatmap.GetDescription() and heatmap.GetDescription().startswith(title.split()[0])
    assert "at layer features" in nodes.heatmaps["gradcam"].GetDescription()


@pytest.mark.parametrize("values, names, match", [
    (np.zeros(3), ["a"], r"\(n_slices, K\)"),
    (np.zeros((4, 2)), ["a", "b", "c"], "2 probability columns but 3 class names"),
])
def test_bad_probabilities_are_refused(values, names, match):
    with pytest.raises(ValueError, match=match):
        plots.check_slice_probabilities(values, names)
