"""Masks from heatmaps, segmentations from masks and predictions, and segments as ROIs."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import GRIDS, add_volume, box_volume, scene  # noqa: F401

import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.mrml import outputs  # noqa: E402


def two_level_map(shape=(12, 20, 24)) -> np.ndarray:
    values = np.zeros(shape, np.float32)
    values[2:10, 4:16, 4:20] = 0.3
    values[4:8, 6:12, 14:20] = 0.9
    return values


def segment_names_and_colors(node) -> list:
    segmentation = node.GetSegmentation()
    found = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        found.append((segment.GetName(), tuple(round(c, 3) for c in segment.GetColor())))
    return found


def test_numeric_and_otsu_thresholds():
    values = two_level_map()
    mask, used = mrml.threshold_map(values, 0.5)
    assert used == 0.5
    np.testing.assert_array_equal(mask, (values > 0.5).astype(np.uint8))
    mask, used = mrml.threshold_map(values, "otsu")
    assert 0.0 <= used < 0.9
    assert mask.sum() >= (values == 0.9).sum()


@pytest.mark.parametrize("bad, error", [("median", ValueError), (True, TypeError), (None, TypeError),
                                        (float("nan"), ValueError)])
def test_bad_thresholds_are_refused(bad, error):
    with pytest.raises(error, match="threshold"):
        mrml.threshold_map(two_level_map(), bad)


def test_constant_map_gives_an_empty_otsu_mask_and_a_non_finite_map_an_error():
    mask, used = mrml.threshold_map(np.zeros((3, 4, 5), np.float32), "otsu")
    assert used == 0.0 and not mask.any()
    with pytest.raises(ValueError, match="finite"):
        mrml.threshold_map(np.full((3, 4, 5), np.nan, np.float32), "otsu")


@pytest.mark.parametrize("grid", GRIDS)
def test_label_map_output_is_the_thresholded_map_on_the_input_grid(scene, grid):
    node = add_volume(box_volume(), GRIDS[grid])
    with mrml.SceneTransaction(scene) as transaction:
        mask_node, used = outputs.publish_mask(scene, transaction, node, two_level_map(), 0.5, "CT Grad-CAM", "k")
    assert mask_node.IsA("vtkMRMLLabelMapVolumeNode")
    assert mask_node.GetName() == "CT Grad-CAM mask (>0.5)"
    assert mask_node.GetAttribute("XAIExplain.Threshold") == "0.5"
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(mask_node), mrml.node_ijk_to_ras(node))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(mask_node), (two_level_map() > 0.5))


@pytest.mark.parametrize("grid", ["identity", "oblique"])
def test_mask_as_segmentation_reads_back_as_the_same_voxels(scene, grid):
    node = add_volume(box_volume(), GRIDS[grid])
    with mrml.SceneTransaction(scene) as transaction:
        seg, used = outputs.publish_mask(scene, transaction, node, two_level_map(), "otsu", "CT Grad-CAM", "k",
                                         as_segmentation=True)
    assert seg.IsA("vtkMRMLSegmentationNode")
    assert seg.GetName().startswith("CT Grad-CAM mask (Otsu ")
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    np.testing.assert_array_equal(mrml.segment_mask(seg, segment_id, node), two_level_map() > used)


def test_prediction_segmentation_has_one_named_coloured_segment_per_class(scene):
    node = add_volume(box_volume(), GRIDS["flipped"])
    predicted = np.zeros(box_volume().shape, np.uint8)
    predicted[4:8, 6:12, 14:20] = 1
    predicted[1:3, 1:3, 1:3] = 2
    classes = [{"name": "background"}, {"name": "tumour", "color": [255, 0, 0]},
               {"name": "oedema", "color": "#00ff00"}, {"name": "necrosis"}]
    with mrml.SceneTransaction(scene) as transaction:
        seg = outputs.publish_prediction(scene, transaction, node, predicted, mrml.class_entries(classes),
                                         "CT model prediction", "k")
    names = segment_names_and_colors(seg)
    assert [n for n, _ in names] == ["tumour", "oedema", "necrosis"]
    assert names[0][1] == (1.0, 0.0, 0.0) and names[1][1] == (0.0, 1.0, 0.0)
    for index, value in ((0, 1), (1, 2), (2, 3)):
        segment_id = seg.GetSegmentation().GetNthSegmentID(index)
        np.testing.assert_array_equal(mrml.segment_mask(seg, segment_id, node), predicted == value)


def test_class_entries_accept_names_specs_and_unknown_labels():
    class Spec:
        def __init__(self, name, color=None):
            self.name, self.color = name, color

    entries = mrml.class_entries([Spec("bg"), Spec("liver", (0, 0, 255))], label_values=[0, 1, 5])
    assert [(v, n) for v, n, _ in entries] == [(1, "liver"), (5, "label 5")]
    assert entries[0][2] == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="name"):
        mrml.class_entries([{"color": "#ffffff"}])


def test_unknown_segment_is_refused_with_the_segment_list(scene):
    node = add_volume(box_volume())
    with mrml.SceneTransaction(scene) as transaction:
        seg = outputs.publish_prediction(scene, transaction, node, np.zeros(box_volume().shape, np.uint8),
                                         mrml.class_entries(["bg", "tumour"]), "p", "k")
    with pytest.raises(ValueError, match="tumour"):
        mrml.segment_mask(seg, "nope", node)


def test_republishing_updates_the_same_node_and_keep_existing_adds_one(scene):
    node = add_volume(box_volume())
    with mrml.SceneTransaction(scene) as transaction:
        first = outputs.publish_heatmap(scene, transaction, node, two_level_map(), "CT Grad-CAM", "key")
    count = scene.GetNumberOfNodes()
    with mrml.SceneTransaction(scene) as transaction:
        again = outputs.publish_heatmap(scene, transaction, node, two_level_map() * 0.5, "CT Grad-CAM", "key")
    assert again is first and scene.GetNumberOfNodes() == count
    np.testing.assert_allclose(slicer.util.arrayFromVolume(first), two_level_map() * 0.5)
    with mrml.SceneTransaction(scene) as transaction:
        kept = outputs.publish_heatmap(scene, transaction, node, two_level_map(), "CT Grad-CAM", "key",
                                       keep_existing=True)
    assert kept is not first and kept.GetName() != first.GetName()
    with mrml.SceneTransaction(scene) as transaction:
        other = outputs.publish_heatmap(scene, transaction, node, two_level_map(), "CT Grad-CAM", "other key")
    assert other is not first
