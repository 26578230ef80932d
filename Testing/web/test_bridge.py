"""The bridge without a browser: the ROI menu lists the scene's segments and becomes the logic's
``(segmentationNode, segmentId)`` target; a stale or missing choice is a one-line refusal."""
from __future__ import annotations

import pytest
import SimpleITK as sitk

from .browser import require_web


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    require_web()
    from trame.app import get_server

    from XAIExplainLib.imaging.phantoms import chest_phantom
    from XAIExplainLib.web.bridge import Bridge
    from XAIExplainLib.web.scene_app import SceneApp
    from XAIExplainLib.web.security import AllowedPaths

    path = tmp_path_factory.mktemp("bridge") / "chest.nrrd"
    sitk.WriteImage(chest_phantom(seed=2, shape=(8, 64, 64), spacing=(5.0, 3.0, 3.0)).image(), str(path))
    server = get_server("bridge-test", client_type="vue3")
    bridge = Bridge(server, SceneApp(server), AllowedPaths(files=[path]))
    bridge.open_image(str(path))
    assert bridge.volume is not None and bridge.state.error == ""
    return bridge


def test_roi_target_is_a_segment_of_the_scene(bridge):
    state = bridge.state
    state.model, state.methods, state.target = "lung-nodule-seg-3d", ["gradcam"], "roi"
    with pytest.raises(ValueError, match="choose a segment as region"):
        bridge.run_arguments()
    segmentation = bridge.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "chest prediction")
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "nodule")
    bridge.refresh_segments()
    assert state.segment_items == [{"title": "chest prediction: nodule",
                                    "value": f"{segmentation.GetID()}|{segment_id}"}]
    assert state.segment == f"{segmentation.GetID()}|{segment_id}"
    arguments = bridge.run_arguments()
    assert arguments["target"] == (segmentation, segment_id) and arguments["inputVolumeNode"] is bridge.volume
    bridge.scene.RemoveNode(segmentation)  # the menu's value now names a node that left the scene
    with pytest.raises(ValueError, match="choose a segment as region"):
        bridge.run_arguments()
    state.target = ""


def test_a_path_outside_the_named_ones_is_refused_and_the_scene_kept(bridge, tmp_path):
    other = tmp_path / "other.nrrd"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(other))
    before = bridge.scene.GetNumberOfNodes()
    bridge.open_image(str(other))
    assert bridge.state.error.startswith("Cannot open the image: ") and "is not one of the images" in bridge.state.error
    assert bridge.scene.GetNumberOfNodes() == before


def test_the_modality_menu_is_offered_for_a_ct_and_mr_model_and_reaches_the_logic(bridge):
    state = bridge.state
    state.model = "liver-seg-3d"
    bridge.on_model("liver-seg-3d")
    assert [(m["title"], m["value"]) for m in state.modality_items] == [
        ("Auto (DICOM header, else intensities)", ""), ("CT", "CT"), ("MR", "MR")]
    state.methods, state.modality = ["gradcam"], "MR"
    assert bridge.run_arguments()["modality"] == "MR"
    state.modality = ""
    assert bridge.run_arguments()["modality"] is None  # Auto: the logic lets the image decide
    state.model = "lung-nodule-seg-3d"  # one pipeline: no menu, and a stale choice is dropped
    state.modality = "MR"
    bridge.on_model("lung-nodule-seg-3d")
    assert state.modality_items == [] and state.modality == ""
