"""MONAI bundles: prediction and maps against the bundle's own pipeline run by MONAI, trust, bad bundles.

The reference runs the bundle as MONAI's workflow would: ConfigParser instantiates the
bundle's preprocessing (LoadImaged of a NIfTI file, Orientationd, Spacingd,
ScaleIntensityRanged), its SlidingWindowInferer and its postprocessing (Activationsd,
Invertd, AsDiscreted). The image has a rotated, flipped direction and anisotropic spacing.
"""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("monai")
pytest.importorskip("nibabel")
import SimpleITK as sitk  # noqa: E402

from XAIExplainLib.engine import explain_volume, predict_volume  # noqa: E402
from XAIExplainLib.models.errors import ModelCardError, UntrustedModelError  # noqa: E402
from XAIExplainLib.models.monai_bundle import is_bundle, load_bundle  # noqa: E402

NETWORK = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
           "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
CONFIG = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "network_def": NETWORK,
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 200, "b_min": 0.0,
         "b_max": 1.0, "clip": True},
        {"_target_": "EnsureTyped", "keys": "image"}]},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2,
                "overlap": 0.5, "mode": "gaussian"},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]},
}
METADATA = {"name": "tiny-spleen", "version": "0.1", "description": "a bundle written by the test",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [16, 16, 16]}},
                "outputs": {"pred": {"type": "image", "num_channels": 2,
                                     "channel_def": {"0": "background", "1": "spleen"}}}}}


def _write_bundle(folder, config=CONFIG, seed=0):
    from monai.networks.nets import UNet
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    torch.manual_seed(seed)
    network = UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"})
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    return folder


def _image():
    """A bright blob in noise, 24 x 28 x 20 voxels of 1.2 x 0.9 x 2.5 mm, rotated and z-flipped."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:20, :28, :24]
    array = (-50 + 220 * np.exp(-(((x - 14) / 5.0) ** 2 + ((y - 12) / 6.0) ** 2 + ((z - 9) / 4.0) ** 2))
             + 10 * rng.standard_normal((20, 28, 24))).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.2, 0.9, 2.5))
    image.SetOrigin((-10.0, 5.0, 30.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0, s, c, 0, 0, 0, -1))
    return image


def _files(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*"))


def _bundle_reference(bundle, image, tmp_path):
    """The bundle run by MONAI itself: (labels, foreground probability) on the image's grid, numpy order."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    data = preprocessing({"image": str(path)})
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], network)[0]
    probabilities = Compose(postprocessing.transforms[:2])(dict(data))["pred"]  # Activationsd, Invertd
    labels = postprocessing(dict(data))["pred"]
    to_numpy_order = lambda t: np.transpose(np.asarray(t), (2, 1, 0))  # noqa: E731  (x, y, z) -> (z, y, x)
    return to_numpy_order(labels[0]), to_numpy_order(probabilities[1])


def test_bundle_prediction_and_maps_follow_the_bundles_own_pipeline(tmp_path):
    bundle = _write_bundle(tmp_path / "bundle")
    image = _image()
    loaded = load_bundle(bundle, trust=True)
    assert loaded.card.class_names == ["background", "spleen"]
    assert loaded.card.task == "segmentation" and loaded.card.output_activation == "softmax"
    assert loaded.card.input.patch_size == (16, 16, 16)
    assert loaded.card.target_layers.default in dict(loaded.module.named_modules())
    pipeline = loaded.pipeline
    prepared = pipeline.prepare(image)
    options = pipeline.volume_options()
    assert options["patch_size"] == (16, 16, 16) and options["overlap"] == 0.5
    maps, logits = explain_volume(loaded.module, prepared.array, ["gradcam", "saliency"], mode="volume",
                                  target=1, return_outputs=True, **options)  # maps and prediction: one pass
    np.testing.assert_allclose(logits, predict_volume(loaded.module, prepared.array, mode="volume", **options),
                               atol=1e-5)
    probabilities = torch.softmax(torch.from_numpy(logits), 0).numpy()
    labels = prepared.restore_labels(probabilities, "softmax")

    reference_labels, reference_foreground = _bundle_reference(bundle, image, tmp_path)
    ours = sitk.GetArrayFromImage(labels)
    assert 0.05 < reference_labels.mean() < 0.95  # both classes present
    assert (ours == reference_labels).mean() >= 0.99
    for get in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(labels, get)() == getattr(image, get)()

    # a map goes back with the prediction's spatial inverse: the foreground probability as a "map"
    foreground = sitk.GetArrayFromImage(prepared.restore_map(probabilities[1]))
    np.testing.assert_allclose(foreground, reference_foreground, atol=1e-5)
    restored = prepared.restore_map(maps["gradcam"])
    assert restored.GetSize() == image.GetSize() and restored.GetDirection() == image.GetDirection()
    values = sitk.GetArrayFromImage(restored)
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.01


def test_bundle_refused_without_trust_and_nothing_written(tmp_path):
    bundle = _write_bundle(tmp_path / "bundle")
    before = _files(bundle)
    assert is_bundle(bundle) and not is_bundle(bundle / "configs")
    with pytest.raises(UntrustedModelError, match=r"inference\.json: a MONAI bundle config instantiates arbitrary "
                                                  r"Python objects \(_target_\) and evaluates expressions "
                                                  r"\(\$\.\.\.\), which runs code on this machine; load it with "
                                                  r"trust=True"):
        load_bundle(bundle)
    assert _files(bundle) == before


def test_bundle_without_network_def_names_the_file_and_what_to_do(tmp_path):
    config = {k: v for k, v in CONFIG.items() if k not in ("network_def", "network")}
    bundle = _write_bundle(tmp_path / "bundle", config=config)
    before = _files(bundle)
    with pytest.raises(ModelCardError, match=r"configs/inference\.json: has no 'network_def' \(the network's "
                                             r"_target_ and its arguments\), so the network for model\.pt cannot "
                                             r"be built; add network_def to the config, or export the network "
                                             r"as models/model\.ts"):
        load_bundle(bundle, trust=True)
    assert _files(bundle) == before


def test_bundle_without_weights_says_where_they_go(tmp_path):
    bundle = _write_bundle(tmp_path / "bundle")
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"models: the bundle has neither model\.pt \(state dict\) nor "
                                                r"model\.ts \(TorchScript\)"):
        load_bundle(bundle, trust=True)


def test_torchscript_bundle_without_network_def_loads_the_export(tmp_path):
    config = {k: v for k, v in CONFIG.items() if k not in ("network_def", "network")}
    bundle = _write_bundle(tmp_path / "bundle", config=config)
    from monai.networks.nets import UNet
    torch.manual_seed(0)
    network = UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"}).eval()
    (bundle / "models" / "model.pt").unlink()
    torch.jit.script(network).save(str(bundle / "models" / "model.ts"))
    with pytest.raises(UntrustedModelError, match="runs code on this machine"):
        load_bundle(bundle)
    loaded = load_bundle(bundle, trust=True)
    assert loaded.scripted and loaded.card.weights.format == "torchscript"
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), network(x))


def test_bundle_whose_class_names_do_not_fit_the_network_is_refused(tmp_path):
    bundle = _write_bundle(tmp_path / "bundle")
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    metadata["network_data_format"]["outputs"]["pred"]["channel_def"]["2"] = "liver"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelCardError, match=r"metadata\.json: network_data_format\.outputs\.pred\.channel_def "
                                             r"names 3 classes but the network outputs 2 channel\(s\)"):
        load_bundle(bundle, trust=True)


def test_load_model_and_explain_image_run_a_bundle_like_the_bundle(tmp_path):
    from XAIExplainLib.models.loading import load_model
    from XAIExplainLib.models.pipeline import explain_image
    bundle = _write_bundle(tmp_path / "bundle")
    image = _image()
    loaded = load_model(bundle, trust=True)
    assert loaded.kind == "monai-bundle" and loaded.source == bundle and len(loaded.weights_sha256) == 64
    result = explain_image(loaded, image, ["gradcam", "hirescam"], target="spleen", device="cpu")
    reference_labels, _ = _bundle_reference(bundle, image, tmp_path)
    assert (sitk.GetArrayFromImage(result.prediction) == reference_labels).mean() >= 0.99
    for name, heatmap in result.maps.items():
        for get in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
            assert getattr(heatmap, get)() == getattr(image, get)(), name
        values = sitk.GetArrayFromImage(heatmap)
        assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.01, name
    with pytest.raises(UntrustedModelError, match="runs code on this machine"):
        load_model(bundle)


def test_target_region_goes_to_the_model_grid_as_the_bundles_own_transforms_move_it(tmp_path):
    """The ROI mapping (geometry of the preprocessed tensor) against MONAI moving the mask itself."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd
    bundle = _write_bundle(tmp_path / "bundle")
    image = _image()
    prepared = load_bundle(bundle, trust=True).pipeline.prepare(image)
    z, y, x = np.mgrid[:20, :28, :24]
    mask = ((x - 10) ** 2 / 36 + (y - 15) ** 2 / 49 + (z - 8) ** 2 / 9) <= 1
    mask_image = sitk.GetImageFromArray(mask.astype(np.float32))
    mask_image.CopyInformation(image)
    path = tmp_path / "mask.nii.gz"
    sitk.WriteImage(mask_image, str(path))
    moved = Compose([LoadImaged("mask"), EnsureChannelFirstd("mask"), Orientationd("mask", axcodes="RAS"),
                     Spacingd("mask", pixdim=[1.5, 1.5, 2.0], mode="nearest")])({"mask": str(path)})["mask"]
    expected = np.asarray(moved[0]) > 0.5
    ours = prepared.region_to_model_grid(mask)
    assert ours.shape == expected.shape == prepared.spatial_shape
    assert expected.sum() > 20
    assert (ours == expected).mean() >= 0.995
    centre = tuple(int(v) for v in np.argwhere(expected).mean(axis=0).round())
    assert ours[prepared.voxel_to_model_grid((8, 15, 10))] and expected[centre]
