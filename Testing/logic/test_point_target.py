"""A markups point as the target: the map lies on the structure under the point, not on another one.

The synthetic segmenter (BrightSpotSegmenter) predicts "object" wherever the CT
is bright; the volume has two separate bright boxes. A point in box A must give
a map on box A only (the connected region of the predicted class at the point),
and on the voxel alone with ``pointVoxelOnly``. A 2D classifier run per slice
explains only the slice through the point.
"""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import GRIDS, add_volume, scene, scene_state, voxel_ras  # noqa: F401

torch = pytest.importorskip("torch")
import slicer.util  # noqa: E402

from Testing.support.slicer_scene import BACKGROUND_HU, OBJECT_HU, bright_spot_model, trusting_logic  # noqa: E402
from XAIExplainLib.logic import XAIExplainLogic  # noqa: E402
from XAIExplainLib.logic.point_target import region_at_point  # noqa: E402

SHAPE = (12, 20, 24)
BOX_A = (slice(3, 7), slice(3, 9), slice(3, 9))
BOX_B = (slice(5, 10), slice(11, 17), slice(14, 21))


def two_boxes() -> np.ndarray:
    array = np.full(SHAPE, BACKGROUND_HU, np.int16)
    array[BOX_A] = OBJECT_HU
    array[BOX_B] = OBJECT_HU
    return array


def mask(box) -> np.ndarray:
    out = np.zeros(SHAPE, bool)
    out[box] = True
    return out


def segmenter():
    from Testing.support.slicer_scene import BrightSpotSegmenter

    return BrightSpotSegmenter(dims=2, threshold=0.0).eval()


def point_at(scene, node, zyx, name="P"):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    points.AddControlPointWorld(*voxel_ras(node, zyx))
    return points


@pytest.mark.parametrize("grid", ["identity", "oblique"])
def test_a_point_in_one_object_explains_that_object_not_the_other(scene, grid):
    node = add_volume(two_boxes(), GRIDS[grid])
    points = point_at(scene, node, (5, 5, 5))
    nodes = XAIExplainLogic().explainVolume(node, segmenter(), methods=["saliency", "gradcam"], target=points,
                                            classNames=["background", "object"], mode="axial", layer="features")
    saliency = slicer.util.arrayFromVolume(nodes.heatmaps["saliency"])
    assert saliency[mask(BOX_A)].min() > 0.1 and saliency[mask(BOX_B)].max() < 1e-6
    assert saliency[~mask(BOX_A)].max() < 1e-6  # zero up to rounding on oblique grids
    # Grad-CAM weights whole channels, so within a slice it cannot tell the boxes apart; the
    # slices that hold box B alone (z = 7..9) must stay dark, those with box A must not
    gradcam = slicer.util.arrayFromVolume(nodes.heatmaps["gradcam"])
    assert gradcam[mask(BOX_A)].max() > 0.5 and gradcam[7:10].max() < 1e-6
    assert nodes.heatmaps["saliency"].GetName().endswith("object")
    # the same point on box B explains box B
    points.SetNthControlPointPositionWorld(0, *voxel_ras(node, (7, 14, 17)))
    other = XAIExplainLogic().explainVolume(node, segmenter(), methods=["saliency"], target=points,
                                            classNames=["background", "object"], mode="axial", keepExisting=True)
    values = slicer.util.arrayFromVolume(other.heatmaps["saliency"])
    assert values[mask(BOX_B)].max() > 0.5 and values[mask(BOX_A)].max() < 1e-6


def test_voxel_only_explains_the_voxel_under_the_point(scene):
    node = add_volume(two_boxes())
    points = point_at(scene, node, (5, 5, 5))
    nodes = XAIExplainLogic().explainVolume(node, segmenter(), methods=["saliency"], target=points,
                                            classNames=["background", "object"], mode="axial", pointVoxelOnly=True)
    values = slicer.util.arrayFromVolume(nodes.heatmaps["saliency"])
    # the segmenter is voxel-wise (1x1 convolutions): the only input that moves that voxel's score is itself
    assert np.unravel_index(np.argmax(values), SHAPE) == (5, 5, 5)
    assert np.count_nonzero(values) == 1


def test_a_point_for_a_2d_classifier_explains_the_slice_through_it(scene):
    node = add_volume(two_boxes())
    points = point_at(scene, node, (6, 14, 17))
    nodes = XAIExplainLogic().explainVolume(node, bright_spot_model(2), methods=["gradcam"], target=points,
                                            classNames=["dark", "bright"], mode="axial", layer="features")
    values = slicer.util.arrayFromVolume(nodes.heatmaps["gradcam"])
    assert values[6].max() > 0.5 and np.delete(values, 6, axis=0).max() == 0.0
    assert "Grad-CAM bright" in nodes.heatmaps["gradcam"].GetName()


@pytest.mark.parametrize("where, error, match", [
    ("background", ValueError, "background at the target point"),
    ("outside", ValueError, "outside the volume"),
    ("empty", ValueError, "has no point"),
])
def test_bad_points_are_refused_and_nothing_changes(scene, where, error, match):
    node = add_volume(two_boxes())
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "P")
    if where == "background":
        points.AddControlPointWorld(*voxel_ras(node, (0, 0, 0)))
    elif where == "outside":
        points.AddControlPointWorld(*voxel_ras(node, (0, 0, 100)))
    before = scene_state(scene)
    with pytest.raises(error, match=match):
        XAIExplainLogic().explainVolume(node, segmenter(), methods=["saliency"], target=points,
                                        classNames=["background", "object"], mode="axial")
    assert scene_state(scene) == before


def test_region_at_point_is_the_connected_component_of_the_class_there():
    labels = np.zeros((1, 5, 9), np.uint8)
    labels[0, 1:4, 1:3] = 1
    labels[0, 1:4, 5:8] = 1  # same class, not connected
    labels[0, 2, 4] = 2      # a different class touching neither
    label, region = region_at_point(labels, (0, 2, 1))
    assert label == 1 and region.sum() == 6 and region[0, 1:4, 1:3].all() and not region[0, :, 4:].any()


@pytest.mark.parametrize("dims, spacing", [(2, [1.3, 1.3]), (3, [2.0, 1.3, 1.3])])
def test_a_point_on_a_card_segmenter_explains_the_object_under_it(scene, tmp_path, dims, spacing):
    """The model-card path: the prediction is resampled to the input grid before the region is taken."""
    from Testing.support.slicer_scene import write_card

    card = write_card(tmp_path / "seg", task="segmentation", dims=dims, spacing=spacing, window=(-1000.0, 400.0))
    node = add_volume(two_boxes(), GRIDS["anisotropic"])
    points = point_at(scene, node, (5, 5, 5))
    nodes = trusting_logic().explainVolume(node, str(card), methods=["saliency"], target=points)
    values = slicer.util.arrayFromVolume(nodes.heatmaps["saliency"])
    assert values[mask(BOX_A)].mean() > 10 * max(values[mask(BOX_B)].mean(), 1e-6)
    hottest = np.unravel_index(np.argmax(values), SHAPE)
    assert all(box.start - 1 <= i <= box.stop for i, box in zip(hottest, BOX_A)), hottest  # on A (+- resampling)
    assert "object" in nodes.heatmaps["saliency"].GetName()


@pytest.mark.parametrize("dims", [2, 3])
def test_the_logic_refuses_exactly_the_scene_targets_the_menu_leaves_out(scene, dims):
    """One rule (``choices.target_kinds``) for the target menu and the logic's check: every
    scene-object target the menu does not offer a classifier is refused, with the rule's
    words and nothing added to the scene (the offered ones run in the tests above)."""
    import re

    from XAIExplainLib.logic import choices

    node = add_volume(two_boxes())
    targets = {"point": point_at(scene, node, (5, 5, 5)),
               "roi": (scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "S"), "segment")}
    offered = {value for _, value in choices.target_choices("classification", dims, ["dark", "bright"])}
    refused = set(targets) - offered
    assert refused == ({"roi"} if dims == 2 else {"roi", "point"})
    for kind in sorted(refused):
        with pytest.raises(ValueError) as error:
            choices.check_target_kind(kind, "classification", per_slice=dims == 2)
        before = scene_state(scene)
        with pytest.raises(ValueError, match=re.escape(str(error.value))):
            XAIExplainLogic().explainVolume(node, bright_spot_model(dims), methods=["saliency"],
                                            target=targets[kind], classNames=["dark", "bright"])
        assert scene_state(scene) == before


def test_a_point_on_a_3d_classifier_is_refused(scene):
    node = add_volume(two_boxes())
    points = point_at(scene, node, (5, 5, 5))
    before = scene_state(scene)
    with pytest.raises(ValueError, match="a point as target needs a segmentation model or a 2D model run per slice"):
        XAIExplainLogic().explainVolume(node, bright_spot_model(3), methods=["saliency"], target=points,
                                        classNames=["dark", "bright"])
    assert scene_state(scene) == before
