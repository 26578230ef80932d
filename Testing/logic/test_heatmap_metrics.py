"""The logic computes metrics of a heatmap node against a label map or a segment into a table node."""
import numpy as np
import pytest
import torch

from Testing.support.slicer_scene import add_volume, ijk_to_ras, rotation, scene  # noqa: F401  (fixture)

import XAIExplainLib as xai
from XAIExplainLib.logic import XAIExplainLogic
from XAIExplainLib.mrml import labels, tables

GRID = ijk_to_ras(spacing=(0.8, 0.8, 2.5), directions=rotation("z", 30), origin=(10, -5, 3))


def _heatmap_and_truth():
    truth = np.zeros((10, 16, 18), np.uint8)
    truth[3:6, 4:9, 5:11] = 1
    heat = np.zeros(truth.shape, np.float32)
    heat[3:6, 4:9, 5:11] = 0.8
    heat[4, 6, 7] = 1.0           # the peak inside the object
    heat[8, 12, 14] = 0.3         # a weaker false alarm elsewhere
    return heat, truth


def test_metrics_of_a_heatmap_against_a_label_map(scene):  # noqa: F811
    heat, truth = _heatmap_and_truth()
    heat_node = add_volume(heat, GRID, name="CT Grad-CAM")
    label_node = labels.write_labelmap(scene, truth.astype(bool), heat_node, "nodule")
    nodes_before = scene.GetNumberOfNodes()
    table = XAIExplainLogic().evaluateHeatmap(heat_node, label_node)
    assert scene.GetNumberOfNodes() == nodes_before + 1
    rows = tables.read_table(table)
    expected = xai.evaluate(None, None, torch.from_numpy(heat)[None], mask=torch.from_numpy(truth)[None],
                            metrics=["dice_sweep", "pointing_game", "energy_pointing_game"])
    assert rows["pointing_game"] == 1.0
    assert rows["dice_best"] == pytest.approx(1.0)  # any threshold between 0.3 and 0.8 separates them
    assert rows["energy_pointing_game"] == pytest.approx(expected["energy_pointing_game"][0], rel=1e-6)
    assert rows["energy_pointing_game"] < 1.0  # the false alarm carries some energy
    assert table.GetName() == "CT Grad-CAM metrics vs nodule"
    # re-running into the same table updates it instead of adding another node
    XAIExplainLogic().evaluateHeatmap(heat_node, label_node, tableNode=table)
    assert scene.GetNumberOfNodes() == nodes_before + 1


def test_metrics_against_one_segment_match_the_label_map(scene):  # noqa: F811
    heat, truth = _heatmap_and_truth()
    heat_node = add_volume(heat, GRID, name="CT saliency")
    segmentation = labels.write_segmentation(scene, truth * 2, heat_node, "organs",
                                             [(1, "liver", (1, 0, 0)), (2, "nodule", (0, 1, 0))])
    logic = XAIExplainLogic()
    with pytest.raises(ValueError, match=r"has 2 segments \['liver', 'nodule'\]; say which one"):
        logic.evaluateHeatmap(heat_node, segmentation)
    nodule_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("nodule")
    from_segment = tables.read_table(logic.evaluateHeatmap(heat_node, segmentation, segmentId=nodule_id))
    label_node = labels.write_labelmap(scene, truth.astype(bool), heat_node, "nodule label")
    from_label = tables.read_table(logic.evaluateHeatmap(heat_node, label_node))
    assert from_segment == pytest.approx(from_label)
    liver_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver")
    with pytest.raises(ValueError, match="is empty on the heatmap's grid"):
        logic.evaluateHeatmap(heat_node, segmentation, segmentId=liver_id)


def test_a_label_map_on_another_grid_is_refused(scene):  # noqa: F811
    heat, truth = _heatmap_and_truth()
    heat_node = add_volume(heat, GRID, name="CT Grad-CAM")
    other = add_volume(truth.astype(np.float32), ijk_to_ras(spacing=(1, 1, 1)), name="mask elsewhere")
    nodes_before = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="is not on the grid of heatmap 'CT Grad-CAM'"):
        XAIExplainLogic().evaluateHeatmap(heat_node, other)
    assert scene.GetNumberOfNodes() == nodes_before


def test_the_table_shows_relevance_mass_and_rank_by_default(scene):  # noqa: F811
    from XAIExplainLib.evaluation import MAP_ONLY_METRICS

    heat, truth = _heatmap_and_truth()
    heat_node = add_volume(heat, GRID, name="CT Grad-CAM")
    label_node = labels.write_labelmap(scene, truth.astype(bool), heat_node, "nodule")
    rows = tables.read_table(XAIExplainLogic().evaluateHeatmap(heat_node, label_node))
    expected = xai.evaluate(None, None, torch.from_numpy(heat)[None], mask=torch.from_numpy(truth)[None],
                            metrics=["relevance_mass", "relevance_rank"])
    assert rows["relevance_mass"] == pytest.approx(expected["relevance_mass"][0], rel=1e-6)
    assert rows["relevance_rank"] == pytest.approx(expected["relevance_rank"][0])
    assert rows["relevance_mass"] == pytest.approx(rows["energy_pointing_game"])
    assert rows["relevance_rank"] == 1.0  # the object's voxels are the map's top |mask| voxels
    # the one map-only list, the CLI's default too (the table lacked specificity and sensitivity before)
    assert set(rows) >= set(MAP_ONLY_METRICS) - {"dice_sweep"} and {"specificity", "sensitivity", "dice_best"} <= set(rows)
