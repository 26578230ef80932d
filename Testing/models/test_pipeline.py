"""explain_image end to end with small card models: geometry, ranges, targets and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import XAIExplainLib.models as models
from XAIExplainLib.engine import SegmentationTarget
from XAIExplainLib.models import explain_image, load_model, predict_image
from XAIExplainLib.models.architectures import SliceClassifier, UNet

FLIP_Y = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _save(folder, module, card):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(module.state_dict(), str(folder / "weights.safetensors"))
    card["weights"] = "weights.safetensors"
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 3, "widths": [4, 4, 8, 8]}
    card = {"name": "tiny-2d", "task": "classification", "spatial_dims": 2,
            "input": {"channels": 1, "spacing": [2.0, 2.0], "size": [24, 24],
                      "intensity": {"mode": "window", "window": [-100, 200]}, "pad_value": -1000},
            "classes": ["low", "mid", "high"],
            "architecture": {"class": "XAIExplainLib.models.architectures:SliceClassifier",
                             "kwargs": kwargs},
            "target_layers": {"default": "features.block4"}}
    return _save(tmp_path_factory.mktemp("m") / "tiny-2d", SliceClassifier(**kwargs).eval(), card)


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory):
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8], "bottleneck_width": 8}
    card = {"name": "tiny-3d", "task": "segmentation", "spatial_dims": 3,
            "input": {"channels": 1, "spacing": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16],
                      "intensity": {"mode": "window", "window": [-100, 200]}},
            "classes": ["background", {"name": "blob", "color": [255, 0, 0]}],
            "architecture": {"class": "XAIExplainLib.models.architectures:UNet", "kwargs": kwargs},
            "target_layers": {"default": "decoder.up2"}}
    module = UNet(**kwargs).eval()
    with torch.no_grad():  # make the head predict "blob" where the input is bright
        module.head.weight.zero_()
        module.head.bias.copy_(torch.tensor([0.0, -1.0]))
    return _save(tmp_path_factory.mktemp("m") / "tiny-3d", module, card)


def _image(shape=(5, 30, 34), spacing=(3.0, 1.5, 1.2)):
    rng = np.random.default_rng(1)
    array = rng.normal(0, 40, shape).astype(np.float32)
    array[1:4, 10:18, 12:20] = 180.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing)))
    image.SetDirection(FLIP_Y)
    image.SetOrigin((12.0, -7.0, 30.0))
    return image


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing())
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin())
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection())


def test_classifier_maps_on_input_grid_and_probabilities_per_slice(classifier_dir):
    image = _image()
    res = explain_image(str(classifier_dir), image, methods=["gradcam", "saliency"], device="cpu")
    assert set(res.maps) == {"gradcam", "saliency"}
    for heat in res.maps.values():
        _same_grid(heat, image)
        values = sitk.GetArrayFromImage(heat)
        assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1
    assert res.prediction.shape == (5, 3)
    np.testing.assert_allclose(res.prediction.sum(1), 1.0, atol=1e-5)
    assert res.layer == "features.block4" and res.card.name == "tiny-2d"
    assert {"preprocess", "explain", "postprocess", "total"} <= set(res.timings)


def test_class_name_target_and_image_path(classifier_dir, tmp_path):
    path = tmp_path / "image.nrrd"
    sitk.WriteImage(_image(), str(path))
    res = explain_image(load_model(classifier_dir), path, methods="gradcam", target="high")
    assert res.target == 2
    with pytest.raises(ValueError, match="unknown class 'huge'; classes of 'tiny-2d': 0 low, 1 mid, 2 high"):
        explain_image(load_model(classifier_dir), path, methods="gradcam", target="huge")


def test_predict_image_matches_explain_image(classifier_dir):
    model = load_model(classifier_dir)
    image = _image()
    np.testing.assert_allclose(predict_image(model, image),
                               explain_image(model, image, "cam").prediction, atol=1e-6)


def test_segmenter_sliding_windows_label_map_on_input_grid(segmenter_dir):
    image = _image(shape=(12, 40, 44), spacing=(2.5, 1.0, 1.0))
    model = load_model(segmenter_dir)
    res = explain_image(model, image, methods=["gradcam"])
    _same_grid(res.maps["gradcam"], image)
    labels = res.prediction
    _same_grid(labels, image)
    assert labels.GetPixelID() == sitk.sitkUInt8
    values = sitk.GetArrayFromImage(labels)
    assert set(np.unique(values)) <= {0, 1}


def test_segmentation_roi_on_input_grid_is_mapped(segmenter_dir):
    image = _image(shape=(12, 40, 44), spacing=(2.5, 1.0, 1.0))
    roi = np.zeros((12, 40, 44), bool)
    roi[4:8, 15:25, 15:25] = True
    res = explain_image(load_model(segmenter_dir), image, methods=["gradcam"],
                        target=SegmentationTarget(1, region=roi))
    assert isinstance(res.target, SegmentationTarget) and res.target.class_index == 1
    region = res.target._mask
    assert tuple(region.shape) == res.prepared.spatial_shape and region.any()
    by_name = explain_image(load_model(segmenter_dir), image, methods=["gradcam"], target="blob")
    assert by_name.target.class_index == 1
    with pytest.raises(ValueError, match="mask has shape .* image's own grid"):
        explain_image(load_model(segmenter_dir), image, methods=["gradcam"],
                      target=SegmentationTarget(1, region=roi[:, :10]))


def test_torchscript_model_allows_input_gradients_only(classifier_dir, tmp_path):
    folder = tmp_path / "scripted"
    folder.mkdir()
    loaded = load_model(classifier_dir)
    torch.jit.script(loaded.module).save(str(folder / "model.ts"))
    card = json.loads((classifier_dir / "card.json").read_text(encoding="utf-8"))
    del card["architecture"]
    card["weights"] = "model.ts"
    (folder / "card.json").write_text(json.dumps(card))
    scripted = load_model(folder, trust=True)  # TorchScript is code: loading it needs trust
    res = explain_image(scripted, _image(), methods="saliency")
    assert "saliency" in res.maps
    for method in ("gradcam", "guided_backprop"):
        with pytest.raises(ValueError, match=rf"method '{method}' needs hooks on the network's layers, which a "
                                             r"TorchScript module does not allow; methods that work on TorchScript: "
                                             r"saliency, input_x_gradient, gradient_shap, occlusion, rise, smoothgrad, integrated_gradients \(model 'tiny-2d'\)"):
            explain_image(scripted, _image(), methods=method)


def test_errors_name_the_problem(classifier_dir, segmenter_dir):
    with pytest.raises(TypeError, match="bare torch.nn.Module"):
        explain_image(torch.nn.Conv2d(1, 1, 3), _image())
    with pytest.raises(TypeError, match="SimpleITK.Image or a path"):
        explain_image(load_model(classifier_dir), np.zeros((3, 8, 8)))
    with pytest.raises(FileNotFoundError, match="image not found"):
        explain_image(load_model(classifier_dir), "no/such/image.nrrd")
    with pytest.raises(ValueError, match="2D model, so it runs in mode 'slices'"):
        explain_image(load_model(classifier_dir), _image(), mode="volume")
    with pytest.raises(ValueError, match=r"method 'cam' explains classification models, not segmentation models "
                                         r"\(model 'tiny-3d'\)"):
        explain_image(load_model(segmenter_dir), _image(), methods="cam")
    with pytest.raises(ValueError, match="unknown method 'gradcam2'"):
        explain_image(load_model(classifier_dir), _image(), methods="gradcam2")
    with pytest.raises(ValueError, match="method 'gradcam' is asked for twice"):  # was dropped silently
        explain_image(load_model(classifier_dir), _image(), methods=["gradcam", "gradcam"])


def test_models_package_exports_the_pipeline():
    for name in ("explain_image", "predict_image", "load_model", "list_models", "ExplainResult"):
        assert hasattr(models, name)


def _counting_forwards(module):
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("which", ["classifier", "segmenter"])
def test_explain_image_predicts_and_explains_in_one_pass(which, classifier_dir, segmenter_dir):
    """The prediction comes from the explaining forward: no second pass over the volume for it."""
    loaded = load_model(classifier_dir if which == "classifier" else segmenter_dir)
    image = _image(shape=(5, 30, 34)) if which == "classifier" else _image(shape=(20, 30, 34))
    calls, handle = _counting_forwards(loaded.module)
    try:
        target = 0 if which == "classifier" else None  # a class given: nothing to predict first
        result = explain_image(loaded, image, methods=["gradcam"], device="cpu", target=target)
        explaining = len(calls)
        calls.clear()
        alone = predict_image(loaded, image, device="cpu")
        predicting = len(calls)
    finally:
        handle.remove()
    assert explaining == predicting  # one forward per batch / window, as a plain prediction
    if which == "classifier":
        # Without an explicit class or a card's class_of_interest, a per-slice classifier's one
        # explained class (models.explained_class) needs the prediction first: one extra pass.
        calls, handle = _counting_forwards(loaded.module)
        try:
            default = explain_image(loaded, image, methods=["gradcam"], device="cpu", target=None)
        finally:
            handle.remove()
        assert default.target == int(np.unravel_index(np.argmax(alone), alone.shape)[1])
        assert len(calls) == 2 * predicting
        np.testing.assert_allclose(result.prediction, alone, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(result.prediction), sitk.GetArrayFromImage(alone))


def test_an_ensemble_averages_the_networks_outputs_and_maps(segmenter_dir):
    """Fold ensembles (nnU-Net): the prediction from the mean logits, each map the mean of the per-network maps."""
    import dataclasses

    first = load_model(segmenter_dir)
    second = load_model(segmenter_dir)
    torch.manual_seed(4)
    with torch.no_grad():  # two different "folds", both with a live head
        for network, scale in ((first.module, 0.05), (second.module, 0.1)):
            for parameter in network.parameters():
                parameter.add_(scale * torch.randn_like(parameter))
    both = dataclasses.replace(first, ensemble=(second.module,))
    image = _image(shape=(20, 30, 34))
    methods = ["gradcam", "saliency"]
    target = SegmentationTarget(1, region="all")
    singles = [explain_image(m, image, methods=methods, target=target, normalize=False, device="cpu")
               for m in (first, second)]
    ensemble = explain_image(both, image, methods=methods, target=target, normalize=False, device="cpu")
    for name in methods:
        per_network = [sitk.GetArrayFromImage(r.maps[name]) for r in singles]
        assert all(m.max() > 0 for m in per_network) and not np.allclose(per_network[0], per_network[1])
        expected = np.mean(per_network, axis=0)
        np.testing.assert_allclose(sitk.GetArrayFromImage(ensemble.maps[name]), expected, rtol=1e-4, atol=1e-6)
    prepared = first.preprocess(image)
    logits = np.mean([models.pipeline.run_networks(m, prepared.array, "volume", None, torch.device("cpu"), None,
                                                   None)[1] for m in (first, second)], axis=0)
    expected_labels = prepared.restore_labels(first.activate(logits[None], axis=1)[0], "softmax")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ensemble.prediction), sitk.GetArrayFromImage(expected_labels))
    normalised = explain_image(both, image, methods=methods, target=target, device="cpu")
    for name in methods:
        values = sitk.GetArrayFromImage(normalised.maps[name])
        assert values.min() >= 0 and values.max() <= 1 and values.max() > 0.5
