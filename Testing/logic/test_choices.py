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
