"""The heatmap metrics table shows the map-only Quantus metrics (issue 24) with hand-computed values."""
import math

import pytest

from Testing.logic.test_heatmap_metrics import GRID, _heatmap_and_truth
from Testing.support.slicer_scene import add_volume, scene  # noqa: F401  (fixture)

from XAIExplainLib.logic import XAIExplainLogic
from XAIExplainLib.mrml import labels, tables


def test_the_table_shows_the_map_only_quantus_metrics(scene):  # noqa: F811
    heat, truth = _heatmap_and_truth()  # 90 object voxels at 0.8 (one at 1.0), one 0.3 outside, zeros
    heat_node = add_volume(heat, GRID, name="CT Grad-CAM")
    label_node = labels.write_labelmap(scene, truth.astype(bool), heat_node, "nodule")
    rows = tables.read_table(XAIExplainLogic().evaluateHeatmap(heat_node, label_node))
    inside = 0.8 * 89 + 1.0
    assert rows["auc"] == pytest.approx(1.0)  # every object voxel outranks every other voxel
    assert rows["top_k_intersection"] == pytest.approx(90 / 1000)  # k = 1000 of 2880 voxels, all 90 inside
    assert rows["attribution_localisation"] == pytest.approx(inside / (inside + 0.3), rel=1e-6)
    assert rows["effective_complexity"] == 91
    assert rows["sparseness"] > 0.9 and 0 < rows["complexity"] < math.log(91)  # 91 voxels carry relevance
    assert "focus" not in rows and "avg_sensitivity" not in rows  # they need a mosaic / the model
