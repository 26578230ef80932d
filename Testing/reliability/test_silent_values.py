"""Values that used to corrupt a result silently are refused with the thing to blame named (issue 20 class 5).

* float64 weights beyond float32's range loaded as ``inf`` and every map came out zero;
* complex weights lost their imaginary part with only torch's warning, float8 weights failed with
  ``NotImplementedError: "isfinite" not implemented``, integer tensors were cast silently;
* ``+Inf`` voxels were explained through the API and the Slicer logic (a window clipped them);
* a model returning fewer (or more) rows than it was given left blank maps and no error.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.engine import batching, inference_copy
from XAIExplainLib.models import WeightsError, explain_image, load_model, predict_image

from Testing.support.models import SmallCNN, make, small_inputs as inputs
from .hostile import model_folder, network, volume

RUNNING_VAR = "features.stem.norm.running_var"
ARCH = "XAIExplainLib.models.architectures:SliceClassifier"
FILE_OPTIONS = {"architecture": ARCH, "architecture_kwargs": {"in_channels": 1, "num_classes": 2,
                                                              "widths": [4, 4, 8, 8]},
                "task": "classification", "spatial_dims": 2, "classes": ["a", "b"], "size": [16, 16]}


# ---- weights -----------------------------------------------------------------------------------------------

def _overflowing_state():
    state = {k: v.double() if v.is_floating_point() else v for k, v in network().state_dict().items()}
    state[RUNNING_VAR] = torch.full_like(state[RUNNING_VAR], 1e300)
    return state


def test_float64_weights_that_overflow_float32_are_refused_naming_the_tensor(tmp_path):
    with pytest.raises(WeightsError, match=rf"weights\.pt: 1 tensor\(s\) hold values the network cannot represent: "
                                           rf"{RUNNING_VAR} \(float64 values up to 1e\+300 overflow the network's "
                                           r"float32\)"):
        load_model(model_folder(tmp_path / "m", state=_overflowing_state()))


def test_the_same_overflow_through_a_bare_state_dict_file(tmp_path):
    path = tmp_path / "net.pt"
    torch.save(_overflowing_state(), path)
    with pytest.raises(WeightsError, match=rf"net\.pt: .*{RUNNING_VAR} \(float64 values up to 1e\+300"):
        load_model(path, **FILE_OPTIONS)


def test_float64_weights_within_range_still_load_and_give_the_float32_networks_outputs(tmp_path):
    state = {k: v.double() if v.is_floating_point() else v for k, v in network().state_dict().items()}
    loaded = load_model(model_folder(tmp_path / "m", state=state))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), network()(x))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2, torch.int32, torch.bool],
                         ids=str)
def test_weights_that_are_not_real_floats_are_refused_naming_the_tensor(tmp_path, dtype):
    state = network().state_dict()
    key = "features.stem.conv.weight"
    state[key] = state[key].to(dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(WeightsError, match=rf"1 tensor\(s\) have a type the network cannot take without losing values: "
                                           rf"{key} \({name}, network float32\)"):
        load_model(model_folder(tmp_path / "m", state=state))


def test_a_float_tensor_for_an_integer_buffer_is_refused(tmp_path):
    state = network().state_dict()
    key = "features.stem.norm.num_batches_tracked"
    state[key] = state[key].float() + 0.5
    with pytest.raises(WeightsError, match=rf"{key} \(float32, network int64\)"):
        load_model(model_folder(tmp_path / "m", state=state))


def test_torchscript_weights_follow_the_same_rules(tmp_path):
    scripted = torch.jit.script(network())
    with torch.no_grad():
        dict(scripted.named_buffers())[RUNNING_VAR].fill_(float("inf"))
    path = tmp_path / "net.ts"
    torch.jit.save(scripted, str(path))
    options = {k: v for k, v in FILE_OPTIONS.items() if not k.startswith("architecture")}
    with pytest.raises(WeightsError, match=rf"net\.ts: 1 tensor\(s\) hold NaN or infinite values \({RUNNING_VAR}\)"):
        load_model(path, trust=True, **options)


# ---- input voxels ------------------------------------------------------------------------------------------

def _windowed_model(tmp_path):
    folder = model_folder(tmp_path / "w")
    card = json.loads((folder / "card.json").read_text())
    card["input"]["intensity"] = {"mode": "window", "window": [0.0, 100.0]}  # would clip +Inf to 1
    (folder / "card.json").write_text(json.dumps(card))
    return load_model(folder)


def _with(value, shape=(6, 16, 16)) -> sitk.Image:
    array = sitk.GetArrayFromImage(volume(shape))
    array[2, 5, 7] = value
    return sitk.GetImageFromArray(array)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["+inf", "-inf", "nan"])
def test_explain_image_and_predict_image_refuse_non_finite_voxels(tmp_path, value):
    model = _windowed_model(tmp_path)
    with pytest.raises(ValueError, match=r"the image has 1 NaN or infinite voxel\(s\); fix or mask them"):
        explain_image(model, _with(value), "gradcam", device="cpu")
    with pytest.raises(ValueError, match=r"the image has 1 NaN or infinite voxel\(s\)"):
        predict_image(model, _with(value), device="cpu")
    path = tmp_path / "inf.nrrd"
    sitk.WriteImage(_with(value), str(path))
    with pytest.raises(ValueError, match=rf"{path}: has 1 NaN or infinite voxel\(s\)|{path} has 1 NaN"):
        explain_image(model, path, "gradcam", device="cpu")


def test_the_engine_volume_calls_refuse_them_before_blaming_the_model():
    model = make(SmallCNN, dims=2)
    data = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    data[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match=r"the volume has 1 NaN or infinite voxel\(s\)"):
        xai.predict_volume(model, data)
    with pytest.raises(ValueError, match=r"the volume has 1 NaN or infinite voxel\(s\)"):
        xai.explain_volume(model, data, "gradcam")


def test_the_slicer_logic_refuses_an_infinite_voxel(tmp_path):
    pytest.importorskip("slicer")
    from XAIExplainLib import mrml
    from XAIExplainLib.logic import XAIExplainLogic
    from Testing.support.slicer_scene import add_volume, box_volume

    scene = mrml.create_headless_scene(set_current=True)
    try:
        array = box_volume(dtype=np.float32)
        array[1, 2, 3] = np.inf
        node = add_volume(array)
        before = scene.GetNumberOfNodes()
        with pytest.raises(ValueError, match=r"has 1 NaN or infinite voxel\(s\)"):
            XAIExplainLogic().explainVolume(node, str(model_folder(tmp_path / "m")), methods=["gradcam"])
        assert scene.GetNumberOfNodes() == before
    finally:
        mrml.release_headless_scene(scene)


# ---- output rows -------------------------------------------------------------------------------------------

class FirstRowOnly(SmallCNN):
    def forward(self, x):
        return super().forward(x)[:1]


class ScriptedFirstRow(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make(SmallCNN, dims=2)

    def forward(self, x):
        return self.net(x)[:1]


class TwiceTheRows(SmallCNN):
    def forward(self, x):
        out = super().forward(x)
        return torch.cat([out, out])


@pytest.mark.parametrize("cls", [FirstRowOnly, TwiceTheRows], ids=["fewer", "more"])
@pytest.mark.parametrize("method", ["gradcam", "saliency", "rise", "occlusion"])
def test_a_model_returning_another_number_of_rows_is_an_error_naming_it(cls, method, monkeypatch):
    model = make(cls, dims=2)
    x = inputs(2, n=2, size=16)
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 4 * x.numel())  # RISE/occlusion batches on the copy
    inference_copy._COPIES.clear()
    options = {"rise": {"masks": 16, "cells": 4}, "occlusion": {"window": 4, "stride": 4}}.get(method, {})
    with pytest.raises(ValueError, match=rf"model {cls.__name__} returned \d+ row\(s\) for a batch of \d+ \(output"):
        xai.explain(model, x, method, target=torch.tensor([0, 1]), **options)


def test_the_volume_calls_and_a_torchscript_model_check_the_rows_too():
    data = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"model FirstRowOnly returned 1 row\(s\) for a batch of 4"):
        xai.predict_volume(make(FirstRowOnly, dims=2), data)
    with pytest.raises(ValueError, match=r"model FirstRowOnly returned 1 row\(s\) for a batch of 4"):
        xai.explain_volume(make(FirstRowOnly, dims=2), data, "gradcam")
    scripted = torch.jit.script(ScriptedFirstRow().eval())
    with pytest.raises(ValueError, match=r"returned 1 row\(s\) for a batch of 2"):
        xai.explain(scripted, inputs(2, n=2, size=16), "saliency", target=torch.tensor([0, 1]))


def test_a_model_with_the_right_rows_is_untouched_by_the_check():
    """Independent reference: the plain model's own Grad-CAM through captum's LayerGradCam."""
    captum = pytest.importorskip("captum.attr")
    model = make(SmallCNN, dims=2).eval()
    x = inputs(2, n=2, size=16)
    ours = xai.explain(model, x, "gradcam", target=torch.tensor([0, 1]), layer="features.5", normalize=False)
    theirs = captum.LayerGradCam(model, model.features[5]).attribute(x, target=torch.tensor([0, 1]),
                                                                      relu_attributions=True)
    theirs = nn.functional.interpolate(theirs, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-6)
