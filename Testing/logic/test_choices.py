"""logic.choices: the one description of a model's choices that the Slicer panel and the web page read."""
from __future__ import annotations

import pytest

from XAIExplainLib.logic import XAIExplainLogic, choices


def test_targets_offer_a_segment_only_to_segmenters_and_a_point_to_segmenters_and_2d_models():
    assert choices.target_choices("classification", 3, ["a", "b"]) == (
        (choices.PREDICTED_ITEM, ""), ("a", "a"), ("b", "b"))
    assert [v for _, v in choices.target_choices("classification", 2, ["a"])] == ["", "a", "point"]
    assert [v for _, v in choices.target_choices("segmentation", 3, ["bg", "nodule"])] == \
        ["", "bg", "nodule", "roi", "point"]


@pytest.mark.parametrize("task", ["classification", "segmentation"])
@pytest.mark.parametrize("per_slice", [False, True])
def test_the_menu_offers_the_scene_targets_the_check_accepts(task, per_slice):
    offered = {value for _, value in choices.target_choices(task, 2 if per_slice else 3, ["a", "b"])}
    for kind, text in choices.SCENE_TARGETS.items():
        accepted = kind in choices.target_kinds(task, per_slice)
        assert (kind in offered) == accepted
        assert ((text, kind) in choices.target_choices(task, 2 if per_slice else 3, [])) == accepted
        if not accepted:
            with pytest.raises(ValueError, match="as target"):
                choices.check_target_kind(kind, task, per_slice)
        else:
            choices.check_target_kind(kind, task, per_slice)


def test_label_threshold_menu_values_become_the_logics_argument():
    assert choices.label_threshold_argument("") is None
    assert choices.label_threshold_argument("otsu") == "otsu"
    assert choices.label_threshold_argument("fixed", 0.3) == 0.3
    with pytest.raises(ValueError, match="label map must be one of"):
        choices.label_threshold_argument("0.3")


@pytest.mark.parametrize("model", ["lung-nodule-2d", "lung-nodule-seg-3d"])
def test_model_choices_are_the_catalogues_answers(model):
    logic = XAIExplainLogic()
    offered = choices.model_choices(logic, model)
    rows = logic.methodsForModel(model)
    assert [(m.value, m.text, m.enabled, m.reason) for m in offered.methods] == [
        (name, label, bool(enabled), reason or "") for name, label, enabled, reason in rows]
    # MethodInfo.applicable decides: a 3D segmenter gets Seg-Grad-CAM, a 2D classifier CAM and no Seg-Grad-CAM
    enabled = set(offered.enabled_methods())
    if model == "lung-nodule-2d":
        assert {"gradcam", "cam", "sam", "crm"} <= enabled
    else:
        assert "gradcam" in enabled and "cam" not in enabled
    assert list(offered.layers) == logic.layersForModel(model)
    assert offered.default_layer == logic.describeModel(model)["defaultLayer"]
    assert offered.modes == choices.MODES


def test_a_torchscript_model_is_described_with_no_layers_and_its_layer_methods_refused(tmp_path):
    """A TorchScript model cannot be hooked: listing its layers used to raise ("register_forward_hook is
    not supported on ScriptModules"), so neither face could describe a trusted TorchScript model."""
    import json

    import torch

    from XAIExplainLib.models.architectures import SliceClassifier

    torch.manual_seed(0)
    network = SliceClassifier(in_channels=1, num_classes=2, widths=[4, 4, 8, 8]).eval()
    torch.jit.save(torch.jit.script(network), str(tmp_path / "net.pt"))
    (tmp_path / "net.json").write_text(json.dumps({
        "name": "scripted", "task": "classification", "spatial_dims": 2,
        "input": {"channels": 1, "size": [32, 32], "intensity": {"mode": "zscore"}}, "classes": ["normal", "lesion"]}))
    logic = XAIExplainLogic()
    logic.loadModel(str(tmp_path / "net.pt"), trust=True)
    offered = choices.model_choices(logic, str(tmp_path / "net.pt"))
    assert offered.layers == () and offered.description.startswith("scripted: classification (2D)")
    methods = {m.value: m for m in offered.methods}
    assert methods["saliency"].enabled and not methods["gradcam"].enabled
    assert "TorchScript" in methods["gradcam"].reason
