"""XAIExplainLogic with the nnU-Net ``2d`` and ``3d_cascade_fullres`` configurations on a real MRML scene:
the heatmap lands on the input node's grid and the prediction's segments are the API's labels
(``predict_image`` on the same volume; the API itself is checked against nnU-Net's own predictor in
Testing/models/test_nnunet_configurations.py). The cascade's ``3d_lowres`` stage is the folder beside it."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import scene  # noqa: F401

pytest.importorskip("nnunetv2")
import slicer.util  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from Testing.models.test_nnunet_configurations import PLANE  # noqa: E402
from Testing.support.nnunet_folders import ct_image, write_cascade, write_nnunet_folder  # noqa: E402
from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.logic import XAIExplainLogic  # noqa: E402

LABELS = {"organ": 1, "lesion": 2}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    _, cascade = write_cascade(root / "cascade" / "Dataset999_Tiny")
    return {"2d": str(write_nnunet_folder(root / "plane" / "Dataset999_Tiny" / "nnUNetTrainer__nnUNetPlans__2d",
                                          **PLANE)),
            "3d_cascade_fullres": str(cascade)}


@pytest.mark.parametrize("configuration", ["2d", "3d_cascade_fullres"])
def test_logic_explains_the_configuration_on_the_nodes_grid_with_the_apis_prediction(scene, folders, configuration,
                                                                                    two_torch_threads):
    from XAIExplainLib.models import explain_image, predict_image

    folder = folders[configuration]
    image = ct_image(oblique=True)
    node = mrml.sitk_to_volume(scene, image, "CT")
    logic = XAIExplainLogic(scene)
    out = logic.explainVolume(node, folder, methods=["gradcam"], device="cpu")
    heatmap = out.heatmaps["gradcam"]
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(heatmap), mrml.node_ijk_to_ras(node))
    maps = slicer.util.arrayFromVolume(heatmap)
    assert maps.shape == slicer.util.arrayFromVolume(node).shape and maps.max() > 0.9
    model = logic.loadModel(folder)
    assert model.card.extra["nnunet"]["configuration"] == configuration
    labels = sitk.GetArrayFromImage(predict_image(model, image, device="cpu"))
    reference = sitk.GetArrayFromImage(explain_image(model, image, "gradcam", device="cpu").maps["gradcam"])
    np.testing.assert_allclose(maps, reference, atol=1e-4)
    segmentation = out.prediction.GetSegmentation()
    found = 0
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        value = LABELS[segmentation.GetSegment(segment_id).GetName()]
        np.testing.assert_array_equal(mrml.segment_mask(out.prediction, segment_id, node), labels == value)
        found += int((labels == value).any())
    assert found == 2 and segmentation.GetNumberOfSegments() == 2


@pytest.mark.parametrize("configuration", ["2d", "3d_cascade_fullres"])
def test_the_panels_layer_choices_probe_the_network_with_the_channels_it_takes(scene, folders, configuration,
                                                                             two_torch_threads):
    """The panel lists a model's layers by running its network once on zeros. A cascade stage's network takes
    the image plus the first stage's one-hot segmentation (3 channels here, the card's input 1): probing it
    with the card's channel count failed in conv3d, so choosing the model in the panel raised."""
    import torch

    from XAIExplainLib.engine.layers import list_layers
    from XAIExplainLib.logic import choices

    folder = folders[configuration]
    logic = XAIExplainLogic(scene)
    model = logic.loadModel(folder)
    channels = 3 if configuration == "3d_cascade_fullres" else 1
    assert model.card.input.channels == 1
    probe = torch.zeros((1, channels) + model.card.input.patch_size)
    offered = choices.model_choices(logic, folder)
    layers = list_layers(model.module, probe)
    assert sorted(offered.layers) == sorted(layers) and len(layers) > 5
    assert offered.layers[0] == model.card.target_layers.default
    assert offered.default_layer == model.card.target_layers.default
