"""MONAI bundles beyond the 3D segmenter: 2D networks, classifiers, several input keys, YAML configs.

Each bundle is written as MONAI writes one (``ConfigParser.export_config_file`` for the config, a
state dict in ``models/model.pt``) and the reference runs it as MONAI's workflow would: ConfigParser
instantiates its preprocessing, inferer, network and postprocessing, and the case goes in as files
(one 2D file per slice for a 2D network, one file per input key). Grad-CAM is compared with MONAI's
own ``monai.visualize.GradCAM`` on the bundle's preprocessed tensor.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("monai")
pytest.importorskip("nibabel")
pytest.importorskip("yaml")
import SimpleITK as sitk  # noqa: E402

from XAIExplainLib.engine import explain_volume  # noqa: E402
from XAIExplainLib.models.errors import ModelCardError, UntrustedModelError  # noqa: E402
from XAIExplainLib.models.monai_bundle import load_bundle  # noqa: E402
from XAIExplainLib.models.pipeline import explain_image, predict_image  # noqa: E402

pytestmark = pytest.mark.usefixtures("two_torch_threads")

LOAD = [{"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"}]
CLASSIFIER_2D = {"_target_": "DenseNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3,
                 "init_features": 4, "growth_rate": 4, "block_config": [2, 2], "bn_size": 2}
SEGMENTER_2D = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                "channels": [4, 8], "strides": [2], "num_res_units": 1}
CLASSIFIER_3D = dict(CLASSIFIER_2D, spatial_dims=3, out_channels=2)
SEGMENTER_2CH = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 2, "out_channels": 2,
                 "channels": [4, 8], "strides": [2], "num_res_units": 1}
SOFTMAX = {"_target_": "Activationsd", "keys": "pred", "softmax": True}
INVERT = {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
          "nearest_interp": False, "to_tensor": True}
ARGMAX = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}


def _config(network, transforms, inferer=None, post=(SOFTMAX,)):
    return {"imports": ["$import torch"], "bundle_root": ".", "device": "$torch.device('cpu')",
            "network_def": network, "network": "$@network_def.to(@device)",
            "preprocessing": {"_target_": "Compose", "transforms": list(transforms)},
            "inferer": inferer or {"_target_": "SimpleInferer"},
            "postprocessing": {"_target_": "Compose", "transforms": list(post)}}


def _metadata(name, shape, classes, channels=1):
    return {"name": name, "version": "0.1", "description": "written by the test",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "num_channels": channels, "spatial_shape": list(shape)}},
                "outputs": {"pred": {"type": "probabilities" if len(classes) > 2 or "normal" in classes else "image",
                                     "num_channels": len(classes),
                                     "channel_def": {str(i): c for i, c in enumerate(classes)}}}}}


def _write_bundle(folder, config, metadata, fmt="json", seed=0):
    """A bundle as MONAI writes one: its configs through ConfigParser.export_config_file, the weights
    of the network the config builds as a state dict."""
    from monai.bundle import ConfigParser
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    ConfigParser.export_config_file(config, str(folder / "configs" / f"inference.{fmt}"), fmt=fmt)
    ConfigParser.export_config_file(metadata, str(folder / "configs" / "metadata.json"), fmt="json")
    parser = ConfigParser(config)
    torch.manual_seed(seed)
    torch.save(parser.get_parsed_content("network_def").state_dict(), folder / "models" / "model.pt")
    return folder


def _bundle(bundle, fmt="json"):
    """(preprocessing, inferer, network, postprocessing) built by MONAI from the bundle's files."""
    from monai.bundle import ConfigParser
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / f"inference.{fmt}"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    return (parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer"), network.eval(),
            parser.get_parsed_content("postprocessing"))


def _run(parts, files: dict):
    """The bundle's own pipeline on a case given as files: (preprocessed item, postprocessed item)."""
    preprocessing, inferer, network, postprocessing = parts
    data = preprocessing(files)
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], network)[0]
    return data, postprocessing(dict(data))


def _volume(shape=(6, 36, 40), spacing=(0.8, 0.7, 3.0), seed=0, components=1):
    """A blob in noise (numpy order z, y, x), axis-aligned; several components for several channels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]]
    channels = []
    for c in range(components):
        blob = np.exp(-(((x - 15 - 4 * c) / 6.0) ** 2 + ((y - 20) / 7.0) ** 2 + ((z - shape[0] / 2) / 3.0) ** 2))
        channels.append((-50 + 250 * blob + 15 * rng.standard_normal(shape)).astype(np.float32))
    image = sitk.GetImageFromArray(np.stack(channels, -1) if components > 1 else channels[0],
                                   isVector=components > 1)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.0, 4.0, 20.0))
    return image


def _slice_file(image, axis, k, path):
    """Slice ``k`` along numpy ``axis`` as the 2D image a user would have of it (its in-plane spacing)."""
    array = np.take(sitk.GetArrayFromImage(image), k, axis=axis)
    plane = sitk.GetImageFromArray(array)
    spacing = list(reversed(image.GetSpacing()))  # numpy order
    plane.SetSpacing(tuple(reversed([s for i, s in enumerate(spacing) if i != axis])))
    sitk.WriteImage(plane, str(path))
    return str(path)


def _monai_gradcam(network, layer, tensor, class_idx):
    """MONAI's own Grad-CAM of one preprocessed item, upsampled to the input and not rescaled (MONAI's default
    rescaling maps the maximum to 0, for display)."""
    from monai.visualize import GradCAM
    cam = GradCAM(nn_module=network, target_layers=layer, postprocessing=lambda x: x)
    return cam(x=tensor[None].float(), class_idx=class_idx)[0, 0].detach()


def _correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


CLASSIFIER_2D_TRANSFORMS = LOAD + [
    {"_target_": "Spacingd", "keys": "image", "pixdim": [1.0, 1.0], "mode": "bilinear"},
    {"_target_": "Resized", "keys": "image", "spatial_size": [32, 32]},
    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 250, "b_min": 0.0, "b_max": 1.0,
     "clip": True},
    {"_target_": "EnsureTyped", "keys": "image"}]


@pytest.mark.parametrize("axis", [0, 1])
def test_2d_classifier_bundle_runs_per_slice_like_the_bundle_on_each_slice(tmp_path, axis):
    classes = ["normal", "nodule", "mass"]
    bundle = _write_bundle(tmp_path / "bundle", _config(CLASSIFIER_2D, CLASSIFIER_2D_TRANSFORMS),
                           _metadata("tiny-xray", (32, 32), classes))
    image = _volume()
    loaded = load_bundle(bundle, trust=True)
    card = loaded.card
    assert (card.task, card.spatial_dims, card.slice_axis, card.class_names) == ("classification", 2, 0, classes)
    result = explain_image(loaded, image, ["gradcam"], target="nodule", axis=axis, device="cpu")

    parts = _bundle(bundle)
    count = image.GetSize()[2 - axis]
    reference, tensors = [], []
    for k in range(count):
        data, post = _run(parts, {"image": _slice_file(image, axis, k, tmp_path / f"slice{k}.nii.gz")})
        reference.append(np.asarray(post["pred"]))
        tensors.append(data["image"])
    reference = np.stack(reference)
    assert result.prediction.shape == (count, 3)
    np.testing.assert_allclose(result.prediction, reference, atol=1e-5)
    assert reference.std(axis=0).max() > 1e-3  # the slices differ, so a slice mix-up would show

    # the model grid holds exactly the bundle's preprocessed slices; Grad-CAM of 'nodule' on each is MONAI's
    prepared = result.prepared
    for k, tensor in enumerate(tensors):
        np.testing.assert_allclose(np.take(prepared.array, k, axis=1 + axis), np.asarray(tensor), atol=1e-6)
    maps, _ = explain_volume(loaded.module, prepared.array, ["gradcam"], mode="slices", axis=axis, target=1,
                             layer=result.layer, return_outputs=True)
    for k, tensor in enumerate(tensors):
        theirs = np.asarray(_monai_gradcam(parts[2], result.layer, tensor, 1))
        ours = np.take(maps["gradcam"], k, axis=axis)
        if theirs.std() > 1e-6:
            assert _correlation(ours, theirs) >= 0.99, k

    # maps on the input grid; the bundle's own (scaled) input sent back lands where the image is
    heatmap = result.maps["gradcam"]
    for get in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(heatmap, get)() == getattr(image, get)()
    values = sitk.GetArrayFromImage(heatmap)
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.01
    back = sitk.GetArrayFromImage(prepared.restore_map(prepared.array[0], clamp=False))
    scaled = np.clip((sitk.GetArrayFromImage(image) + 100) / 350, 0, 1)
    assert _correlation(back, scaled) >= 0.9 > _correlation(back, scaled[..., ::-1]) + 0.2  # not mirrored


def test_2d_segmenter_bundle_labels_each_slice_like_the_bundle(tmp_path):
    transforms = LOAD + [
        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.2, 1.0], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 250, "b_min": 0.0,
         "b_max": 1.0, "clip": True},
        {"_target_": "DivisiblePadd", "keys": "image", "k": 4},
        {"_target_": "EnsureTyped", "keys": "image"}]
    bundle = _write_bundle(tmp_path / "bundle", _config(SEGMENTER_2D, transforms, post=(SOFTMAX, INVERT, ARGMAX)),
                           _metadata("tiny-2d-seg", (32, 32), ["background", "lesion"]), seed=3)
    image = _volume(shape=(4, 30, 34))
    loaded = load_bundle(bundle, trust=True)
    assert (loaded.card.task, loaded.card.spatial_dims) == ("segmentation", 2)
    result = explain_image(loaded, image, ["gradcam", "saliency"], target="lesion", device="cpu")
    parts = _bundle(bundle)
    reference = np.stack([np.asarray(_run(parts, {"image": _slice_file(image, 0, k, tmp_path / f"s{k}.nii")})[1]
                                     ["pred"])[0].T for k in range(4)])
    ours = sitk.GetArrayFromImage(result.prediction)
    assert ours.shape == reference.shape == sitk.GetArrayFromImage(image).shape
    assert 0.02 < reference.mean() < 0.98  # both classes present
    assert (ours == reference).mean() >= 0.99
    for heatmap in result.maps.values():
        assert heatmap.GetSize() == image.GetSize() and heatmap.GetSpacing() == image.GetSpacing()
        assert sitk.GetArrayFromImage(heatmap).std() > 0.01


def test_2d_bundle_on_a_2d_image_gives_2d_results_and_a_3d_bundle_refuses_one(tmp_path):
    bundle = _write_bundle(tmp_path / "bundle", _config(CLASSIFIER_2D, CLASSIFIER_2D_TRANSFORMS),
                           _metadata("tiny-xray", (32, 32), ["normal", "nodule", "mass"]))
    picture = _volume()[:, :, 2]
    result = explain_image(load_bundle(bundle, trust=True), picture, ["gradcam"], device="cpu")
    reference = _run(_bundle(bundle), {"image": _slice_file(_volume(), 0, 2, tmp_path / "p.nii")})[1]["pred"]
    np.testing.assert_allclose(result.prediction[0], np.asarray(reference), atol=1e-5)
    assert result.maps["gradcam"].GetDimension() == 2 and result.maps["gradcam"].GetSize() == picture.GetSize()


CLASSIFIER_3D_TRANSFORMS = LOAD + [
    {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
    {"_target_": "Resized", "keys": "image", "spatial_size": [24, 24, 16]},
    {"_target_": "ScaleIntensityd", "keys": "image"},
    {"_target_": "EnsureTyped", "keys": "image"}]


def test_3d_classifier_bundle_predicts_and_explains_a_class_like_monai(tmp_path):
    bundle = _write_bundle(tmp_path / "bundle", _config(CLASSIFIER_3D, CLASSIFIER_3D_TRANSFORMS),
                           _metadata("tiny-3d-classifier", (24, 24, 16), ["benign", "malignant"]))
    image = _volume(shape=(12, 28, 30), spacing=(1.1, 0.9, 2.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))  # stored as a permuted, flipped volume
    loaded = load_bundle(bundle, trust=True)
    assert (loaded.card.task, loaded.card.spatial_dims, loaded.card.output_activation) == \
        ("classification", 3, "softmax")
    result = explain_image(loaded, image, ["gradcam"], target="malignant", device="cpu")
    assert result.target == 1
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(path))
    parts = _bundle(bundle)
    data, post = _run(parts, {"image": str(path)})
    np.testing.assert_allclose(result.prediction, np.asarray(post["pred"]), atol=1e-5)
    np.testing.assert_allclose(result.prepared.array, np.asarray(data["image"]), atol=1e-6)
    maps, _ = explain_volume(loaded.module, result.prepared.array, ["gradcam"], mode="volume", target=1,
                             layer=result.layer, return_outputs=True)
    assert _correlation(maps["gradcam"], np.asarray(_monai_gradcam(parts[2], result.layer, data["image"], 1))) >= 0.99
    heatmap = result.maps["gradcam"]
    for get in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(heatmap, get)() == getattr(image, get)()
    # the bundle's scaled input sent back through its inverse (Resized, Orientationd) is the image again
    back = sitk.GetArrayFromImage(result.prepared.restore_map(result.prepared.array[0], clamp=False))
    array = sitk.GetArrayFromImage(image)
    assert _correlation(back, array) >= 0.9 > _correlation(back, array[:, ::-1]) + 0.2  # not mirrored


MULTI_KEY_TRANSFORMS = [
    {"_target_": "LoadImaged", "keys": ["t1", "t2"]},
    {"_target_": "EnsureChannelFirstd", "keys": ["t1", "t2"]},
    {"_target_": "Orientationd", "keys": ["t1", "t2"], "axcodes": "RAS"},
    {"_target_": "ConcatItemsd", "keys": ["t1", "t2"], "name": "image", "dim": 0},
    {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
    {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False, "channel_wise": True},
    {"_target_": "DivisiblePadd", "keys": "image", "k": 4},
    {"_target_": "EnsureTyped", "keys": "image"}]
LIST_KEY_TRANSFORMS = LOAD + MULTI_KEY_TRANSFORMS[4:]


@pytest.mark.parametrize("form", ["two keys joined by ConcatItemsd", "one key, a list of files"])
def test_two_channel_bundle_takes_a_vector_image_like_the_bundle_takes_its_files(tmp_path, form):
    transforms = MULTI_KEY_TRANSFORMS if form.startswith("two") else LIST_KEY_TRANSFORMS
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2, "overlap": 0.5}
    bundle = _write_bundle(tmp_path / "bundle", _config(SEGMENTER_2CH, transforms, inferer,
                                                        post=(SOFTMAX, INVERT, ARGMAX)),
                           _metadata("tiny-two-sequence", (16, 16, 16), ["background", "tumour"], channels=2))
    image = _volume(shape=(14, 26, 24), spacing=(1.2, 1.0, 2.5), components=2)
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0, s, c, 0, 0, 0, -1))
    loaded = load_bundle(bundle, trust=True)
    assert loaded.card.input.channels == 2
    result = explain_image(loaded, image, ["gradcam"], target="tumour", device="cpu")
    files = []
    for c in range(2):
        files.append(str(tmp_path / f"channel{c}.nii.gz"))
        sitk.WriteImage(sitk.VectorIndexSelectionCast(image, c), files[-1])
    case = {"t1": files[0], "t2": files[1]} if form.startswith("two") else {"image": files}
    data, post = _run(_bundle(bundle), case)
    np.testing.assert_allclose(result.prepared.array, np.asarray(data["image"]), atol=1e-5)
    reference = np.transpose(np.asarray(post["pred"])[0], (2, 1, 0))
    ours = sitk.GetArrayFromImage(result.prediction)
    assert 0.02 < reference.mean() < 0.98
    assert (ours == reference).mean() >= 0.99
    assert result.maps["gradcam"].GetSize() == image.GetSize()
    # one image per channel is the same input; a bundle loading one key per channel names them by key
    assert loaded.card.input.channel_labels == (("t1", "t2") if form.startswith("two") else ("channel 0", "channel 1"))
    listed = predict_image(loaded, [sitk.VectorIndexSelectionCast(image, c) for c in range(2)], device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(listed), ours)

    one_channel = sitk.VectorIndexSelectionCast(image, 0)
    with pytest.raises(ValueError, match=r"MONAI bundle 'tiny-two-sequence' takes 2 channel\(s\) .* but the image "
                                         r"has 1 component\(s\) per voxel"):
        loaded.pipeline.prepare(one_channel)


def _segmenter_3d():
    from Testing.models.test_monai_bundle import CONFIG, METADATA
    return CONFIG, METADATA


def test_yaml_bundle_is_read_by_monais_parser_and_predicts_like_the_bundle(tmp_path):
    from Testing.models.test_monai_bundle import _image
    config, metadata = _segmenter_3d()
    bundle = _write_bundle(tmp_path / "bundle", config, metadata, fmt="yaml")
    assert (bundle / "configs" / "inference.yaml").read_text().lstrip().startswith(("imports", "bundle_root"))
    with pytest.raises(UntrustedModelError, match=r"inference\.yaml: a MONAI bundle config instantiates arbitrary "
                                                  r"Python objects"):
        load_bundle(bundle)
    image = _image()
    result = explain_image(load_bundle(bundle, trust=True), image, ["gradcam"], target="spleen", device="cpu")
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(path))
    _, post = _run(_bundle(bundle, "yaml"), {"image": str(path)})
    reference = np.transpose(np.asarray(post["pred"])[0], (2, 1, 0))
    assert 0.05 < reference.mean() < 0.95
    assert (sitk.GetArrayFromImage(result.prediction) == reference).mean() >= 0.99


def test_yaml_bundle_with_a_python_tag_is_refused_before_anything_runs(tmp_path):
    config, metadata = _segmenter_3d()
    bundle = _write_bundle(tmp_path / "bundle", config, metadata, fmt="yaml")
    marker = tmp_path / "ran"
    text = (bundle / "configs" / "inference.yaml").read_text()
    (bundle / "configs" / "inference.yaml").write_text(
        text + f"hook: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n")
    for trust in (False, True):
        with pytest.raises(ModelCardError, match=r"(?s)inference\.yaml: cannot read the bundle config as YAML .*Python "
                                                 r"tags are refused"):
            load_bundle(bundle, trust=trust)
    assert not marker.exists()


def test_bundle_with_two_keys_and_no_join_says_which_key_is_missing(tmp_path):
    transforms = [t for t in MULTI_KEY_TRANSFORMS if t["_target_"] != "ConcatItemsd"]
    transforms = [dict(t, keys=["t1", "t2"]) if t["keys"] == "image" else t for t in transforms]
    metadata = _metadata("unjoined", (16, 16, 16), ["background", "tumour"], channels=2)
    metadata["network_data_format"]["inputs"] = {"flair": {"num_channels": 2, "spatial_shape": [16, 16, 16]}}
    bundle = _write_bundle(tmp_path / "bundle", _config(SEGMENTER_2CH, transforms), metadata)
    with pytest.raises(ModelCardError, match=r"LoadImaged reads the keys \['t1', 't2'\] but the preprocessing does "
                                             r"not join them \(no ConcatItemsd\) and metadata\.json's "
                                             r"network_data_format\.inputs names \['flair'\]"):
        load_bundle(bundle, trust=True)


SEGMENTER_2D_TRANSFORMS = LOAD + [
    {"_target_": "Spacingd", "keys": "image", "pixdim": [1.2, 1.0], "mode": "bilinear"},
    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 250, "b_min": 0.0,
     "b_max": 1.0, "clip": True},
    {"_target_": "DivisiblePadd", "keys": "image", "k": 4},
    {"_target_": "EnsureTyped", "keys": "image"}]


@pytest.mark.parametrize("axis", [0, 2])
def test_target_region_goes_to_each_slice_as_the_bundles_own_transforms_move_it(tmp_path, axis):
    """The per-slice ROI mapping (the tensors' affines) against MONAI moving each mask slice itself.

    The region keeps off the outermost slices: a model voxel centred less than half an input voxel beyond
    the image's edge takes the edge voxel here, where MONAI's nearest resampling pads it."""
    from monai.transforms import Compose, DivisiblePadd, EnsureChannelFirstd, LoadImaged, Spacingd
    bundle = _write_bundle(tmp_path / "bundle", _config(SEGMENTER_2D, SEGMENTER_2D_TRANSFORMS),
                           _metadata("tiny-2d-seg", (32, 32), ["background", "lesion"]))
    image = _volume(shape=(4, 30, 34))
    prepared = load_bundle(bundle, trust=True).pipeline.prepare(image, slice_axis=axis)
    z, y, x = np.mgrid[:4, :30, :34]
    mask = ((x - 12) ** 2 / 49 + (y - 17) ** 2 / 36 + (z - 1.5) ** 2) <= 1
    mask_image = sitk.GetImageFromArray(mask.astype(np.float32))
    mask_image.CopyInformation(image)
    move = Compose([LoadImaged("mask"), EnsureChannelFirstd("mask"),
                    Spacingd("mask", pixdim=[1.2, 1.0], mode="nearest"), DivisiblePadd("mask", k=4)])
    expected = np.stack([np.asarray(move({"mask": _slice_file(mask_image, axis, k, tmp_path / f"m{k}.nii")})["mask"][0])
                         for k in range(mask.shape[axis])], axis=axis) > 0.5
    ours = prepared.region_to_model_grid(mask)
    assert ours.shape == expected.shape == prepared.spatial_shape
    assert expected.sum() > 20
    assert (ours == expected).mean() >= 0.995
    assert expected[prepared.voxel_to_model_grid((2, 17, 12))]  # the region's centre lands inside it


def test_2d_bundle_refuses_a_grid_over_the_budget_and_a_3d_bundle_refuses_a_2d_image(tmp_path):
    bundle = _write_bundle(tmp_path / "bundle", _config(SEGMENTER_2D, SEGMENTER_2D_TRANSFORMS),
                           _metadata("tiny-2d-seg", (32, 32), ["background", "lesion"]))
    with pytest.raises(ValueError, match=r"MONAI bundle 'tiny-2d-seg' would resample this 34 x 30 x 4 image "
                                         r"\(spacing 0\.8 x 0\.7 x 3 mm\) to a 23 x 21 x 4 grid at 1\.2 x 1 x 3 mm"):
        load_bundle(bundle, trust=True).pipeline.prepare(_volume(shape=(4, 30, 34)), memory_budget_mb=0.001)
    with pytest.raises(ValueError, match=r"slice_axis must be 0, 1 or 2"):
        load_bundle(bundle, trust=True).pipeline.prepare(_volume(shape=(4, 30, 34)), slice_axis=3)
    config, metadata = _segmenter_3d()
    volume_bundle = _write_bundle(tmp_path / "volume", config, metadata)
    with pytest.raises(ValueError, match=r"MONAI bundle 'tiny-spleen' has a 3D network and needs a volume; got a 2D "
                                         r"image"):
        load_bundle(volume_bundle, trust=True).pipeline.prepare(_volume()[:, :, 0])
