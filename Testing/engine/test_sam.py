"""SAM (our reading of Philbrick et al. 2018): layer mode and class mode against plain autograd."""
import pytest
import torch

import XAIExplainLib as xai
from Testing.support.models import classifier, small_inputs as inputs, unet


def _layer_and_input(model, x, layer):
    captured = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.update(a=o))
    leaf = x.clone().requires_grad_(True)
    output = model(leaf)
    handle.remove()
    return captured["a"], leaf, output


@pytest.mark.parametrize("dims,layer", [(2, "features.0"), (3, "features.2")])
def test_layer_mode_is_the_input_gradient_of_the_layer_response(dims, layer):
    model = classifier(dims, seed=1)
    x = inputs(dims, n=2, seed=5)
    activation, leaf, _ = _layer_and_input(model, x, layer)
    (grad,) = torch.autograd.grad(torch.relu(activation).sum(), leaf)
    expected = grad.abs().amax(1)
    ours = xai.explain(model, x, "sam", layer=layer, normalize=False)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-7)


def test_class_mode_is_the_input_gradient_of_the_summed_gradcam():
    model = unet(2, seed=3)
    x = inputs(2, n=2, seed=1)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[2:9, 3:12] = True
    activation, leaf, output = _layer_and_input(model, x, "dec2.0")
    score = (output[:, 1] * region).flatten(1).sum()
    (g,) = torch.autograd.grad(score, activation, retain_graph=True)
    weights = g.mean(dim=(2, 3), keepdim=True).detach()
    (grad,) = torch.autograd.grad(torch.relu((weights * activation).sum(1)).sum(), leaf)
    ours = xai.explain(model, x, "sam", target=xai.SegmentationTarget(1, region=region), layer="dec2.0",
                       sam_mode="class", normalize=False)
    assert ours.abs().max() > 0
    assert torch.allclose(ours, grad.abs().amax(1), rtol=1e-5, atol=1e-7)


def test_layer_mode_stops_the_forward_after_the_layer():
    model = classifier(2)
    calls = []
    handle = model.fc.register_forward_hook(lambda *a: calls.append("fc"))
    xai.explain(model, inputs(2), "sam", layer="features.0")
    handle.remove()
    assert calls == []
    xai_map = xai.explain(model, inputs(2), "sam", layer=["features.0", "features.3"])
    assert xai_map.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="sam_mode must be one of"):
        xai.explain(model, inputs(2), "sam", sam_mode="voxel")
