"""Models with several input channels take one image per channel: a BraTS-like 4-channel nnU-Net folder against
nnU-Net's own reader and predictor, and a 2-channel (CT + PET) card model against a forward written here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from Testing.support.multichannel import BRATS_CHANNELS, nnunet_predicts, write_brats_case, write_brats_folder
from XAIExplainLib.models import explain_image, load_model, predict_image
from XAIExplainLib.models.architectures import UNet



@pytest.fixture(scope="module")
def brats_folder(tmp_path_factory):
    pytest.importorskip("nnunetv2")
    return write_brats_folder(tmp_path_factory.mktemp("brats") / "Dataset137_BraTSlike")


@pytest.fixture(scope="module")
def brats_case(tmp_path_factory):
    return write_brats_case(tmp_path_factory.mktemp("case"), "CASE")


def _nnunet_preprocesses(model, files) -> np.ndarray:
    """nnU-Net's reader and preprocessor on the channel files: the network input nnU-Net builds."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    array, properties = SimpleITKIO().read_images(files)
    pipeline = model.pipeline
    preprocessor = pipeline.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case_npy(array, None, properties, pipeline.plans_manager,
                                           pipeline.configuration_manager, pipeline.dataset_json)
    return data


def test_four_channel_nnunet_agrees_with_nnunets_predictor(brats_folder, brats_case, two_torch_threads):
    model = load_model(brats_folder)
    assert model.card.input.channel_labels == BRATS_CHANNELS
    expected = nnunet_predicts(brats_folder, brats_case)
    result = explain_image(model, brats_case, ["gradcam", "saliency"], device="cpu")
    labels = sitk.GetArrayFromImage(result.prediction)
    assert labels.shape == expected.shape and len(np.unique(expected)) > 2
    # nnU-Net accumulates its windows in float16 (Testing/models/test_nnunet_agreement.py): voxels at a region's
    # 0.5 threshold may flip; the input the network sees is nnU-Net's to float32 rounding
    agreement = (labels == expected).mean()
    assert agreement >= 0.99, agreement
    np.testing.assert_allclose(result.prepared.array, _nnunet_preprocesses(model, brats_case), rtol=1e-6, atol=1e-6)
    first = sitk.ReadImage(brats_case[0])
    for out in [result.prediction, *result.maps.values()]:
        assert out.GetSize() == first.GetSize() and out.GetOrigin() == first.GetOrigin()
        assert out.GetSpacing() == first.GetSpacing() and out.GetDirection() == first.GetDirection()
    # a dict by channel name is the same input; the channels in another order are not
    by_name = predict_image(model, dict(zip(reversed(BRATS_CHANNELS), reversed(brats_case))), device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(by_name), labels)
    swapped = predict_image(model, [brats_case[i] for i in (2, 1, 0, 3)], device="cpu")
    assert (sitk.GetArrayFromImage(swapped) != labels).any()


def test_nnunet_channels_must_share_the_first_grid(brats_folder, brats_case, tmp_path):
    model = load_model(brats_folder)
    moved = sitk.ReadImage(brats_case[2])
    moved.SetOrigin((-18.0, 14.0, 3.5))  # 2 mm off: voxel-by-voxel stacking would misalign it
    path = tmp_path / "t2_moved.nii.gz"
    sitk.WriteImage(moved, str(path))
    files = [brats_case[0], brats_case[1], str(path), brats_case[3]]
    with pytest.raises(ValueError, match=r"t2_moved.nii.gz \(T2\) is not on the grid of .*CASE_0000.nii.gz \(T1\) "
                                         r"\(origin"):
        predict_image(model, files, device="cpu")
    with pytest.raises(ValueError, match=r"takes 4 images, one per input channel \(T1, T1ce, T2, FLAIR\); got one "
                                         "image with one value per voxel"):
        predict_image(model, brats_case[0], device="cpu")
    with pytest.raises(ValueError, match=r"takes 4 images.*got a list of 3"):
        predict_image(model, brats_case[:3], device="cpu")
    with pytest.raises(ValueError, match=r"missing FLAIR; unknown flair"):
        predict_image(model, dict(zip(("T1", "T1ce", "T2", "flair"), brats_case)), device="cpu")


# ---- a 2-channel card model (CT + PET), resampled onto the CT's grid ------------------------------------------

@pytest.fixture(scope="module")
def ct_pet_dir(tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    kwargs = {"in_channels": 2, "num_classes": 2, "widths": [4, 4, 8], "bottleneck_width": 8}
    module = UNet(**kwargs).eval()
    ct, pet = _ct_and_pet()
    x = torch.from_numpy(np.stack([sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(sitk.Resample(pet, ct))]))
    with torch.no_grad():  # move the head's bias so that about a third of the CT is "lesion"
        logits = module(x[None].float() / 100.0)[0]
        module.head.bias[1] -= torch.quantile((logits[1] - logits[0]).flatten(), 0.66)
    folder = tmp_path_factory.mktemp("m") / "ct-pet"
    folder.mkdir()
    save_file(module.state_dict(), str(folder / "weights.safetensors"))
    card = {"name": "ct-pet", "task": "segmentation", "spatial_dims": 3,
            "input": {"channels": 2, "channel_names": ["CT", "PET"], "intensity": {"mode": "scale", "mean": 0,
                                                                                    "std": 100}},
            "classes": ["background", "lesion"], "weights": "weights.safetensors",
            "architecture": {"class": "XAIExplainLib.models.architectures:UNet", "kwargs": kwargs},
            "target_layers": {"default": "decoder.up2"}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder, module


def _ct_and_pet():
    """A CT at (1.2, 1, 2) mm and a PET of the same region on a coarser, shifted grid (as scanners write them)."""
    rng = np.random.default_rng(3)
    ct_array = rng.normal(0, 40, (12, 24, 20)).astype(np.float32)
    ct_array[3:8, 8:16, 6:14] = 150.0
    ct = sitk.GetImageFromArray(ct_array)
    ct.SetSpacing((1.2, 1.0, 2.0))
    ct.SetOrigin((10.0, -5.0, 40.0))
    pet_array = rng.gamma(2.0, 30.0, (9, 14, 12)).astype(np.float32)
    pet_array[3:6, 5:10, 4:9] += 400.0
    pet = sitk.GetImageFromArray(pet_array)
    pet.SetSpacing((2.4, 2.0, 3.0))
    pet.SetOrigin((8.0, -7.0, 37.0))
    return ct, pet


def test_two_channel_card_model_equals_a_forward_on_the_resampled_channels(ct_pet_dir, two_torch_threads):
    folder, module = ct_pet_dir
    ct, pet = _ct_and_pet()
    model = load_model(folder)
    result = explain_image(model, {"PET": pet, "CT": ct}, ["gradcam", "integrated_gradients"], device="cpu")
    # the forward written out: PET linearly onto the CT's grid, the card's scaling, the network, the argmax
    pet_on_ct = sitk.GetArrayFromImage(sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                     sitk.sitkFloat32))
    x = np.stack([sitk.GetArrayFromImage(ct), pet_on_ct]) / 100.0
    with torch.no_grad():
        logits = module(torch.from_numpy(x.astype(np.float32))[None])[0]
    expected = logits.argmax(0).numpy()
    labels = sitk.GetArrayFromImage(result.prediction)
    assert 0 < expected.mean() < 1
    assert (labels == expected).mean() >= 0.999
    np.testing.assert_allclose(result.prepared.array, x, rtol=1e-5, atol=1e-5)
    for out in [result.prediction, *result.maps.values()]:
        assert out.GetSize() == ct.GetSize() and out.GetOrigin() == ct.GetOrigin()
        assert out.GetSpacing() == ct.GetSpacing()
    # a list in channel order is the same input
    same = predict_image(model, [ct, pet], device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(same), labels)


def test_a_channel_that_does_not_cover_the_first_is_refused(ct_pet_dir):
    folder, _ = ct_pet_dir
    ct, pet = _ct_and_pet()
    pet.SetOrigin((8.0, -7.0, 80.0))  # another bed position: 40 mm above the CT
    with pytest.raises(ValueError, match=r"the PET image does not cover the region of the CT image .*mm outside"):
        predict_image(load_model(folder), [ct, pet], device="cpu")
    with pytest.raises(ValueError, match="the PET image has 2 components per voxel"):
        predict_image(load_model(folder), [ct, sitk.Compose([pet, pet])], device="cpu")


def test_card_channel_names_are_checked():
    from XAIExplainLib.models.card import ModelCard, ModelCardError

    base = {"name": "x", "task": "segmentation", "spatial_dims": 3, "classes": ["a", "b"],
            "architecture": {"class": "XAIExplainLib.models.architectures:UNet"}, "weights": "w.safetensors"}
    card = ModelCard.from_dict({**base, "input": {"channels": 2}})
    assert card.input.channel_labels == ("channel 0", "channel 1")
    named = ModelCard.from_dict({**base, "input": {"channels": 2, "channel_names": ["CT", "PET"]}})
    assert named.input.channel_labels == ("CT", "PET")
    assert named.input.to_dict()["channel_names"] == ["CT", "PET"]
    for wrong, said in ((["CT"], "a list of 2 names"), (["CT", "CT"], "each channel once")):
        with pytest.raises(ModelCardError, match=said):
            ModelCard.from_dict({**base, "input": {"channels": 2, "channel_names": wrong}})


def test_a_bundles_channel_def_or_keys_name_its_input_channels():
    from types import SimpleNamespace

    from XAIExplainLib.models.monai_bundle import _input_channel_names

    def bundle(described, channels, keys=("image",)):
        return SimpleNamespace(inputs={"image": described}, image_key="image", channels=channels, load_keys=list(keys))

    brats = {"num_channels": 4, "channel_def": {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"}}
    assert _input_channel_names(bundle(brats, 4)) == ("T1c", "T1", "T2", "FLAIR")
    assert _input_channel_names(bundle({"num_channels": 4}, 4)) is None  # unnamed: "channel 0", ... (InputSpec)
    assert _input_channel_names(bundle({"channel_def": {"0": "T1", "1": "T2"}}, 4)) is None  # not every channel
    assert _input_channel_names(bundle({"channel_def": {"0": "T1", "1": "T1"}}, 2)) is None  # a name twice
    assert _input_channel_names(bundle({}, 2, keys=("ct", "pet"))) == ("ct", "pet")  # one LoadImaged key each


def test_a_model_files_options_name_its_channels(tmp_path):
    from XAIExplainLib.models.file_description import describe_file

    path = tmp_path / "ct_pet.safetensors"
    path.write_bytes(b"")
    card = describe_file(path, "state_dict", {"task": "segmentation", "spatial_dims": 3, "classes": ["bg", "lesion"],
                                               "channels": 2, "channel_names": ["CT", "PET"],
                                               "architecture": "XAIExplainLib.models.architectures:UNet"})
    assert card.input.channel_labels == ("CT", "PET")
