"""The logic's run request: its arguments written once, checked once into a frozen request.

``explainVolume`` and ``startExplainVolume`` show one signature (``request.explain_arguments``);
``build_request`` turns a call into a frozen ``ExplainRequest`` that neither the worker thread
nor publishing can change (the logic passed a 25-key dict that four methods mutated before).
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from Testing.support.slicer_scene import add_volume, box_volume, bright_spot_model, scene, scene_state  # noqa: F401

torch = pytest.importorskip("torch")

from XAIExplainLib.logic import XAIExplainLogic  # noqa: E402
from XAIExplainLib.logic.model_catalogue import ModelCatalogue  # noqa: E402
from XAIExplainLib.logic.request import ARGUMENTS, ExplainRequest, build_request  # noqa: E402


def test_both_entry_points_show_the_one_signature():
    for method in (XAIExplainLogic.explainVolume, XAIExplainLogic.startExplainVolume):
        parameters = list(inspect.signature(method).parameters.values())
        assert parameters[0].name == "self" and parameters[1:] == list(ARGUMENTS.parameters.values())
    # the public camelCase names the panel, the console and the web face use
    assert {"inputVolumeNode", "model", "methods", "target", "layer", "mode", "axis", "device", "labelThreshold",
            "progress", "classNames", "labelOutput", "predictionSegmentation", "opacity", "displayThreshold",
            "colorLegend", "keepExisting", "engineOptions", "pointVoxelOnly", "modality"} == set(ARGUMENTS.parameters)


def test_the_request_is_checked_normalised_and_frozen(scene):  # noqa: F811
    node = add_volume(box_volume())
    request = build_request(scene, ModelCatalogue(), node, bright_spot_model(2), "gradcam", "bright",
                            mode="axial", labelThreshold=" OTSU ", classNames=["dark", "bright"],
                            engineOptions={"output_key": None})
    assert isinstance(request, ExplainRequest)
    assert request.methods == ("gradcam",) and request.target == 1 and request.target_label == "bright"
    assert request.mode == "slices" and request.axis == 0 and request.mode_key == "axial"
    assert request.label_threshold == "otsu" and request.device == "cpu"
    assert request.node_name == node.GetName() and request.image.GetSize() == node.GetImageData().GetDimensions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.target_label = "other"
    with pytest.raises(TypeError):
        request.engine_options["output_key"] = "logits"


def test_a_wrong_call_is_refused_before_anything_is_created(scene):  # noqa: F811
    node = add_volume(box_volume())
    before = scene_state(scene)
    logic = XAIExplainLogic()
    with pytest.raises(TypeError, match="explainVolume: .*'colour'"):
        logic.explainVolume(node, bright_spot_model(2), colour="red")
    with pytest.raises(TypeError, match="explainVolume: "):
        logic.startExplainVolume(node, bright_spot_model(2), "gradcam", None, None, None, None, "cpu", None, None,
                                 "labelmap")  # labelOutput is keyword-only
    assert scene_state(scene) == before and not logic.isRunning


def test_positional_and_keyword_calls_run_the_same(scene):  # noqa: F811
    import slicer.util

    node = add_volume(box_volume())
    model = bright_spot_model(2)
    first = XAIExplainLogic().explainVolume(node, model, ["gradcam"], "bright", None, "axial",
                                            classNames=["dark", "bright"])
    first_values = slicer.util.arrayFromVolume(first.heatmaps["gradcam"]).copy()
    second = XAIExplainLogic().explainVolume(inputVolumeNode=node, model=model, methods=["gradcam"], target="bright",
                                             mode="axial", classNames=["dark", "bright"])
    assert second.heatmaps["gradcam"] is first.heatmaps["gradcam"]  # same choices: the earlier node, updated
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(second.heatmaps["gradcam"]), first_values)
