"""XAIExplainLogic with a 4-channel (BraTS-like) nnU-Net model on a real MRML scene: one volume per channel, in the
model's channel order; the outputs land on the first volume's grid and the prediction is the API's."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.multichannel import BRATS_CHANNELS, MSD_LABELS, brats_like, write_brats_folder
from Testing.support.slicer_scene import scene, scene_state  # noqa: F401

pytest.importorskip("nnunetv2")
import slicer.util  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.logic import XAIExplainLogic  # noqa: E402


@pytest.fixture(scope="module")
def brats_folder(tmp_path_factory):
    return str(write_brats_folder(tmp_path_factory.mktemp("brats") / "Dataset001_BrainTumourlike", regions=False))


def _channel_nodes(scene, images):
    return [mrml.sitk_to_volume(scene, image, name) for image, name in zip(images, BRATS_CHANNELS)]


def test_one_volume_per_channel_gives_the_apis_prediction_on_the_first_grid(scene, brats_folder,
                                                                           two_torch_threads):
    from XAIExplainLib.models import predict_image

    from XAIExplainLib.logic import choices

    logic = XAIExplainLogic(scene)
    assert logic.describeModel(brats_folder)["channels"] == list(BRATS_CHANNELS)
    # the panel's selectors, in the order explainVolume takes the volumes
    assert choices.model_choices(logic, brats_folder).inputs == ("T1 volume:", "T1ce volume:", "T2 volume:",
                                                                 "FLAIR volume:")
    images = brats_like()
    nodes = _channel_nodes(scene, images)
    out = logic.explainVolume(nodes, brats_folder, methods=["gradcam"], device="cpu")
    heatmap = out.heatmaps["gradcam"]
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(heatmap), mrml.node_ijk_to_ras(nodes[0]))
    assert heatmap.GetName().startswith("T1 Grad-CAM")
    assert slicer.util.arrayFromVolume(heatmap).max() > 0.9
    labels = sitk.GetArrayFromImage(predict_image(logic.loadModel(brats_folder), images, device="cpu"))
    segmentation = out.prediction.GetSegmentation()
    found = 0
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        value = MSD_LABELS[segmentation.GetSegment(segment_id).GetName()]
        np.testing.assert_array_equal(mrml.segment_mask(out.prediction, segment_id, nodes[0]), labels == value)
        found += int((labels == value).any())
    assert found >= 2


def test_wrong_channel_volumes_are_refused_and_change_nothing(scene, brats_folder):
    logic = XAIExplainLogic(scene)
    images = brats_like()
    nodes = _channel_nodes(scene, images)
    moved = sitk.Image(images[3])
    moved.SetOrigin((-20.0, 14.0, 9.5))  # the FLAIR 6 mm off: voxel-by-voxel stacking would misalign it
    shifted = mrml.sitk_to_volume(scene, moved, "FLAIR moved")
    before = scene_state(scene)
    with pytest.raises(ValueError, match=r"takes 4 input volume\(s\) \(T1, T1ce, T2, FLAIR\); got 3: T1, T1ce, T2"):
        logic.explainVolume(nodes[:3], brats_folder, methods=["gradcam"], device="cpu")
    with pytest.raises(ValueError, match=r"takes 4 images, one per input channel \(T1, T1ce, T2, FLAIR\); got one"):
        logic.explainVolume(nodes[0], brats_folder, methods=["gradcam"], device="cpu")
    with pytest.raises(ValueError, match=r"volume 'FLAIR moved' \(FLAIR\) is not on the grid of volume 'T1' \(T1\)"):
        logic.explainVolume(nodes[:3] + [shifted], brats_folder, methods=["gradcam"], device="cpu")
    assert scene_state(scene) == before


def test_a_region_models_segments_are_named_by_the_region_each_label_value_stands_for(scene, tmp_path,
                                                                                     two_torch_threads):
    """A region-trained nnU-Net has no background channel: channel k writes ``regions_class_order[k]``.
    The segments were named by channel index (the first region skipped as "background", the others one
    off, the last value shown as "label 3")."""
    from XAIExplainLib.models import predict_image
    from Testing.support.multichannel import BRATS_LABELS

    folder = str(write_brats_folder(tmp_path / "Dataset002_BrainTumourRegions", regions=True))
    logic = XAIExplainLogic(scene)
    images = brats_like()
    nodes = _channel_nodes(scene, images)
    out = logic.explainVolume(nodes, folder, methods=["gradcam"], device="cpu")
    labels = sitk.GetArrayFromImage(predict_image(logic.loadModel(folder), images, device="cpu"))
    segmentation = out.prediction.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    regions = [name for name in BRATS_LABELS if name != "background"]
    assert names == regions
    for index, value in enumerate((1, 2, 3)):  # regions_class_order
        segment_id = segmentation.GetNthSegmentID(index)
        np.testing.assert_array_equal(mrml.segment_mask(out.prediction, segment_id, nodes[0]), labels == value)
