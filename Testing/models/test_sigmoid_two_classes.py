"""A one-channel sigmoid segmenter whose card lists ``[background, X]``.

Channel 0 is P(X) and the background is 1 - P(X): both classes are explained by name and
by index (Seg-Grad-CAM of X over {P(X) > 0.5} on z, of the background over {P(X) < 0.5} on
-z), the label map is ``P(X) > 0.5``, and outside the model grid every voxel is background
(P(X) = 0). The references are Seg-Grad-CAM and the label rule written out here by hand.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.models import explain_image, predict_image
from XAIExplainLib.models.card import ModelCard
from XAIExplainLib.models.plain_module import module_model
from XAIExplainLib.models.preprocessing import prepare


def _network() -> nn.Module:
    """z = conv(relu(conv(x))): positive on the bright box, negative elsewhere (fixed weights)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 1, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.randn_like(net[0].weight).abs() / 27)
        net[0].weight[2].neg_()  # channel 2 answers the dark surroundings
        net[0].bias.copy_(torch.tensor([0.0, -0.2, 0.6, -0.4]))
        net[2].weight.copy_(torch.tensor([1.0, 2.0, -1.5, 1.5]).reshape(1, 4, 1, 1, 1))
        net[2].bias.fill_(-0.8)
    return net.eval()


def _image() -> sitk.Image:
    rng = np.random.default_rng(4)
    array = rng.uniform(0.0, 0.3, (8, 14, 12)).astype(np.float32)
    array[2:6, 4:10, 3:8] += 1.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    return image


def _seg_gradcam(net: nn.Module, x: torch.Tensor, background: bool) -> np.ndarray:
    """Seg-Grad-CAM (Vinogradova et al. 2020) at the hidden layer, by hand."""
    activations = net[1](net[0](x)).detach().requires_grad_(True)
    z = net[2](activations)[0, 0]
    logit = -z if background else z
    region = (torch.sigmoid(logit) > 0.5).detach()
    (grad,) = torch.autograd.grad(logit[region].sum(), activations)
    weights = grad[0].mean(dim=(1, 2, 3))
    return torch.relu((weights[:, None, None, None] * activations[0]).sum(0)).detach().numpy()


@pytest.mark.parametrize("target, background", [("lesion", False), (1, False), ("background", True), (0, True)])
def test_both_classes_of_a_one_channel_sigmoid_are_explained(target, background, two_torch_threads):
    net = _network()
    loaded = module_model(net, class_names=["background", "lesion"])
    assert loaded.card.output_activation == "sigmoid" and loaded.card.class_names == ["background", "lesion"]
    image = _image()
    result = explain_image(loaded, image, "gradcam", target=target, layer="1", normalize=False, device="cpu")
    x = torch.from_numpy(sitk.GetArrayFromImage(image))[None, None]
    want = _seg_gradcam(net, x, background)
    assert want.max() > 0
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.maps["gradcam"]), want, rtol=1e-4, atol=1e-6)


def test_the_label_map_of_a_one_channel_sigmoid_is_p_above_one_half(two_torch_threads):
    net = _network()
    image = _image()
    labels = predict_image(module_model(net, class_names=["background", "lesion"]), image, device="cpu")
    with torch.no_grad():
        z = net(torch.from_numpy(sitk.GetArrayFromImage(image))[None, None])[0, 0].numpy()
    want = (1.0 / (1.0 + np.exp(-z)) > 0.5).astype(np.uint8)
    assert 0 < want.sum() < want.size
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), want)


def _card(activation: str, classes: list[str]) -> ModelCard:
    return ModelCard.from_dict({
        "name": "small-grid", "task": "segmentation", "spatial_dims": 3,
        "input": {"channels": 1, "spacing": [2.0, 1.0, 1.0], "size": [4, 6, 6], "intensity": {"mode": "none"}},
        "output": {"activation": activation}, "classes": classes,
        "architecture": {"class": "XAIExplainLib.models.architectures:UNet", "kwargs": {}},
        "weights": "weights.safetensors"})


def test_outside_the_model_grid_a_sigmoid_channel_is_zero_and_a_softmax_background_one():
    image = _image()  # 12 x 14 x 8 voxels; the model grid is the centred 6 x 6 x 4
    inside = (slice(2, 6), slice(4, 10), slice(3, 9))
    sigmoid = prepare(_card("sigmoid", ["background", "lesion"]), image)
    restored = sigmoid.restore_probabilities(np.full((1,) + sigmoid.model_grid.shape, 0.75, np.float32))
    outside = np.ones(restored.shape[1:], bool)
    outside[inside] = False
    assert restored.shape == (1, 8, 14, 12)
    np.testing.assert_allclose(restored[0][inside], 0.75, atol=1e-6)
    np.testing.assert_array_equal(restored[0][outside], 0.0)
    softmax = prepare(_card("softmax", ["background", "lesion"]), image)
    restored = softmax.restore_probabilities(np.stack([np.full(softmax.model_grid.shape, p, np.float32)
                                                       for p in (0.25, 0.75)]))
    np.testing.assert_array_equal(restored[0][outside], 1.0)
    np.testing.assert_array_equal(restored[1][outside], 0.0)


def test_the_engine_target_counts_a_background_the_sigmoid_output_has_no_channel_for():
    z = torch.tensor([[[[-2.0, 1.0, 3.0, -0.5]]]])  # (1, 1, 1, 4): one sigmoid channel
    lesion = xai.SegmentationTarget(1, num_classes=2).bind(z)
    background = xai.SegmentationTarget(0, num_classes=2).bind(z)
    assert float(lesion.score(z)) == pytest.approx(1.0 + 3.0)
    assert float(background.score(z)) == pytest.approx(2.0 + 0.5)
    probability = background.probabilities(z)[0, 0]
    np.testing.assert_allclose(probability.numpy(), [1 - 1 / (1 + np.exp(2.0)), 0, 0, 1 - 1 / (1 + np.exp(0.5))],
                               rtol=1e-6)
    assert int(xai.SegmentationTarget(None, num_classes=2).bind(z).classes[0]) == 1
    # without num_classes the index is the channel, as before
    assert float(xai.SegmentationTarget(0).bind(z).score(z)) == pytest.approx(4.0)
    two = torch.stack([z[:, 0], -z[:, 0]], dim=1)  # two sigmoid channels, classes [background, a, b]
    assert float(xai.SegmentationTarget(2, num_classes=3).bind(two).score(two)) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="background.*no output channel"):
        xai.SegmentationTarget(0, num_classes=3).bind(two)
    with pytest.raises(ValueError, match="out of range"):
        xai.SegmentationTarget(3, num_classes=3).bind(two)
