"""The shared test models are what the tests assume (skips, linear head on GAP)."""
from __future__ import annotations

import torch

from Testing.support.models import classifier, small_inputs as inputs, unet


def test_unet_shapes_and_skips():
    for dims in (2, 3):
        model = unet(dims)
        x = inputs(dims)
        assert model(x).shape == (2, 3) + x.shape[2:]
        # the skip from enc1 matters: zeroing it changes the output
        with torch.no_grad():
            before = model(x)
            model.dec1[0].weight[:, 4:] = 0
            assert not torch.allclose(before, model(x))


def test_classifier_output_is_linear_head_on_gap():
    model = classifier(3)
    x = inputs(3)
    features = model.features(x)
    assert torch.allclose(model(x), model.fc(features.mean(dim=(2, 3, 4))), atol=1e-6)
