"""XAIExplainLogic with models described by a card: preprocessing (resampling, window) and back.

The architectures have known attribution (slicer_scene.BrightSpot*): after the
card's intensity window the bright object is above 0.5 and only it drives
the score. The card asks for another spacing than the volume's, so the maps
go through explain_image's resampling to the model grid and back; the hot
spot must still be on the object in RAS, on every grid.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from Testing.support.slicer_scene import (GRIDS, add_volume, box_mask, box_volume, ras_centroid,  # noqa: F401
                                          scene, scene_state, trusting_logic, write_card)

torch = pytest.importorskip("torch")
import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("dims, spacing", [(2, [1.3, 1.3]), (3, [2.0, 1.3, 1.3])])
def test_card_model_heatmap_is_on_the_object_after_resampling(scene, tmp_path, grid, dims, spacing):
    card = write_card(tmp_path / "model", dims=dims, spacing=spacing)
    node = add_volume(box_volume(), GRIDS[grid])
    nodes = trusting_logic().explainVolume(node, str(card), methods=["gradcam"], target="bright")
    heatmap = nodes.heatmaps["gradcam"]
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(heatmap), mrml.node_ijk_to_ras(node))
    assert heatmap.GetImageData().GetDimensions() == node.GetImageData().GetDimensions()
    values = slicer.util.arrayFromVolume(heatmap)
    assert 0.0 <= values.min() and values.max() <= 1.0
    assert box_mask()[np.unravel_index(np.argmax(values), values.shape)]
    hot = values > 0.5 * values.max()
    distance = np.linalg.norm(ras_centroid(heatmap, hot) - ras_centroid(node, box_mask()))
    assert distance < max(spacing) + max(node.GetSpacing())
    assert heatmap.GetName() == "CT Grad-CAM bright features"


def test_card_segmenter_prediction_has_the_cards_names_and_colours(scene, tmp_path):
    card = write_card(tmp_path / "seg", task="segmentation", dims=2, spacing=None)
    node = add_volume(box_volume(), GRIDS["flipped"])
    nodes = trusting_logic().explainVolume(node, str(card), methods=["gradcam"])
    seg = nodes.prediction
    assert seg is not None and seg.GetName() == "CT bright-spot-segmentation-2d prediction"
    segment = seg.GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "object"
    np.testing.assert_allclose(segment.GetColor(), (1.0, 64 / 255, 0.0), atol=1e-6)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    np.testing.assert_array_equal(mrml.segment_mask(seg, segment_id, node), box_mask())
    values = slicer.util.arrayFromVolume(nodes.heatmaps["gradcam"])
    assert box_mask()[np.unravel_index(np.argmax(values), values.shape)]


def test_card_segmenter_explains_a_segment_roi(scene, tmp_path):
    card = write_card(tmp_path / "seg", task="segmentation", dims=2)
    node = add_volume(box_volume())
    logic = trusting_logic()
    first = logic.explainVolume(node, str(card), methods=["saliency"])
    seg = first.prediction
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    roi = logic.explainVolume(node, str(card), methods=["saliency"], target=(seg, segment_id),
                              predictionSegmentation=False)
    assert roi.heatmaps["saliency"].GetName() == "CT Saliency ROI object"
    values = slicer.util.arrayFromVolume(roi.heatmaps["saliency"])
    assert box_mask()[np.unravel_index(np.argmax(values), values.shape)]


def test_card_model_cancel_leaves_the_scene_unchanged(scene, tmp_path):
    card = write_card(tmp_path / "model", spacing=[1.3, 1.3])
    node = add_volume(box_volume())
    before = scene_state(scene)

    class Stop(Exception):
        pass

    def progress(fraction, message):
        if fraction > 0.05:
            raise Stop()

    with pytest.raises(Stop):
        trusting_logic().explainVolume(node, str(card), methods=["gradcam", "hirescam"], progress=progress)
    assert scene_state(scene) == before


def test_model_helpers_describe_a_card_model(tmp_path):
    card = write_card(tmp_path / "seg", task="segmentation", dims=2, spacing=[1.3, 1.3])
    logic = trusting_logic()
    info = logic.describeModel(str(card))
    assert info["task"] == "segmentation" and info["classes"] == ["background", "object"]
    assert "spacing 1.3 x 1.3 mm" in info["input"] and "window -1000..400" in info["input"]
    assert logic.layersForModel(str(card))[0] == "features"
    enabled = {name for name, _, ok, _ in logic.methodsForModel(str(card)) if ok}
    assert "gradcam" in enabled and "cam" not in enabled


BRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "brain1_image.nrrd"


@pytest.mark.skipif(not BRAIN.is_file(), reason=f"real data folder absent ({BRAIN.name} not in ../shared/data)")
def test_real_flipped_mri_loaded_by_slicer_gets_a_heatmap_on_its_bright_voxels(scene, tmp_path):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "brain1")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(BRAIN))
    assert storage.ReadData(node)
    node.CreateDefaultDisplayNodes()
    # card model: window 0..2000 then ReLU(x - 0.5): attribution exactly where the MRI is above 1000
    card = write_card(tmp_path / "mri", spacing=[1.2, 1.2], window=(0.0, 2000.0))
    nodes = trusting_logic().explainVolume(node, str(card), methods=["gradcam"], target="bright")
    heatmap = nodes.heatmaps["gradcam"]
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(heatmap), mrml.node_ijk_to_ras(node))
    heat = slicer.util.arrayFromVolume(heatmap)
    voxels = slicer.util.arrayFromVolume(node)
    hot = heat > 0.5 * heat.max()
    assert hot.sum() > 1000
    assert (voxels[hot] > 900).mean() > 0.8


def test_a_torchscript_model_offers_only_the_methods_that_work_on_it(tmp_path):
    """The panel offered guided methods on TorchScript (it tested needs_layer), the pipeline refused them."""
    import json

    import torch

    from XAIExplainLib.models import load_model

    card_path = write_card(tmp_path / "model", task="classification", dims=2)
    scripted = torch.jit.script(load_model(card_path, trust=True).module)
    scripted.save(str(tmp_path / "model" / "model.ts"))
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card.pop("architecture")
    card["weights"] = {"file": "model.ts", "format": "torchscript"}
    card_path.write_text(json.dumps(card), encoding="utf-8")
    logic = trusting_logic()
    rows = {name: (enabled, reason) for name, _, enabled, reason in logic.methodsForModel(str(card_path))}
    assert {name for name, (enabled, _) in rows.items() if enabled} == {
        "saliency", "input_x_gradient", "gradient_shap", "occlusion", "rise", "smoothgrad",
        "integrated_gradients"}
    assert "TorchScript module does not allow" in rows["guided_backprop"][1]
    assert "TorchScript module does not allow" in rows["guided_gradcam"][1]


def test_engine_options_reach_the_engine_for_card_models_too(scene, tmp_path):
    """engineOptions were passed only for plain modules; a card model's run ignored them silently."""
    card = write_card(tmp_path / "model", task="classification", dims=2)
    node = add_volume(box_volume(), GRIDS["identity"])
    logic = trusting_logic()
    few = logic.explainVolume(node, str(card), methods=["smoothgrad"], engineOptions={"samples": 2, "seed": 1},
                              keepExisting=True)
    many = logic.explainVolume(node, str(card), methods=["smoothgrad"], engineOptions={"samples": 2, "seed": 2},
                               keepExisting=True)
    a = slicer.util.arrayFromVolume(few.heatmaps["smoothgrad"])
    b = slicer.util.arrayFromVolume(many.heatmaps["smoothgrad"])
    assert not np.allclose(a, b)  # another noise seed, another map
    with pytest.raises(TypeError, match="unknown option"):
        logic.explainVolume(node, str(card), methods=["gradcam"], engineOptions={"samples": 2})


def test_a_plain_module_is_a_loaded_model_described_by_itself():
    from Testing.support.slicer_scene import bright_spot_model

    logic = trusting_logic()
    loaded = logic.loadModel(bright_spot_model(3))
    assert loaded.kind == "module" and loaded.card.task == "classification" and loaded.card.spatial_dims == 3
    assert logic.describeModel(bright_spot_model(2))["input"] == "1 channel(s), voxels as they are"


def test_a_plain_module_is_described_once_per_class_names():
    """The description runs a probe forward and hashes the weights: the catalogue keeps it."""
    from Testing.support.slicer_scene import bright_spot_model

    logic = trusting_logic()
    module = bright_spot_model(2)
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    try:
        first = logic.loadModel(module)
        assert logic.loadModel(module) is first and logic.describeModel(module)["task"] == "classification"
        assert len(calls) == 1
        named = logic.models.get(module, class_names=["dark", "bright"])
        assert named is not first and named.card.class_names == ["dark", "bright"] and len(calls) == 2
    finally:
        handle.remove()
