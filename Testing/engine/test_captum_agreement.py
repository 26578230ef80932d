"""The engine agrees with captum on Grad-CAM, saliency, guided backprop and guided Grad-CAM (2D and 3D)."""
import pytest
import torch
from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam, Saliency

import XAIExplainLib as xai
from Testing.support.models import SmallCNN, make, inputs, pearson

MODES = {2: "bilinear", 3: "trilinear"}


def _normalise(maps):
    return xai.engine.normalize.minmax(maps)


def _assert_agree(ours, reference):
    assert ours.shape == reference.shape
    for sample in range(ours.shape[0]):
        assert reference[sample].max() > 0, "reference map is empty: the comparison would prove nothing"
        assert pearson(ours[sample], reference[sample]) >= 0.999


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcam_matches_captum(dims):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, size=16 if dims == 2 else 12)
    target = model(x).argmax(1)
    layer = model.features[3]
    ref = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, tuple(x.shape[2:]), interpolate_mode=MODES[dims])[:, 0]
    ours = xai.explain(model, x, "gradcam", layer="features.3")
    _assert_agree(ours, _normalise(ref.detach()))


@pytest.mark.parametrize("dims", [2, 3])
def test_saliency_matches_captum(dims):
    model = make(SmallCNN, dims=dims, in_channels=2)
    x = inputs(dims, channels=2, size=16 if dims == 2 else 10)
    ref = Saliency(model).attribute(x, target=1, abs=True).amax(dim=1)
    _assert_agree(xai.explain(model, x, "saliency", target=1), _normalise(ref))


@pytest.mark.parametrize("dims", [2, 3])
def test_guided_backprop_matches_captum(dims):
    model = make(SmallCNN, dims=dims, in_channels=2)
    x = inputs(dims, channels=2, size=16 if dims == 2 else 10)
    ref = GuidedBackprop(model).attribute(x, target=0).sum(dim=1)
    raw = xai.explain(model, x, "guided_backprop", target=0, normalize=False)
    assert torch.allclose(raw, ref, rtol=1e-4, atol=1e-6)
    _assert_agree(xai.explain(model, x, "guided_backprop", target=0), _normalise(ref.abs()))


@pytest.mark.parametrize("dims", [2, 3])
def test_guided_gradcam_matches_captum(dims):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, size=16 if dims == 2 else 12)
    ref = GuidedGradCam(model, model.features[3]).attribute(x, target=2, interpolate_mode=MODES[dims]).sum(dim=1)
    ours = xai.explain(model, x, "guided_gradcam", target=2, layer="features.3")
    _assert_agree(ours, _normalise(ref.abs()))
