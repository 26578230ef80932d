"""``xai.explain`` takes what ``xai.load_model`` returns (issue 25 section 5)."""
from __future__ import annotations

import pytest
import torch

import XAIExplainLib as xai


def test_explain_accepts_a_loaded_model_and_uses_its_network_at_the_cards_layer():
    model = xai.load_model("ct-phase-2d", device="cpu")
    x = torch.randn(2, 1, *model.card.input.size, generator=torch.Generator().manual_seed(0))
    maps = xai.explain(model, x, "gradcam")
    reference = xai.explain(model.module, x, "gradcam", layer=model.card.target_layers.default)
    torch.testing.assert_close(maps, reference, rtol=0, atol=0)
    other = xai.explain(model, x, "gradcam", layer="features.block2")  # a given layer wins
    torch.testing.assert_close(other, xai.explain(model.module, x, "gradcam", layer="features.block2"))
    many = xai.explain_many(model, x, ["gradcam", "saliency"])
    torch.testing.assert_close(many["saliency"], xai.explain(model.module, x, "saliency"))


def test_an_ensemble_is_refused_with_the_call_that_averages_it():
    model = xai.load_model("ct-phase-2d", device="cpu")
    model.ensemble = (model.module,)
    with pytest.raises(ValueError, match="explain_image"):
        xai.explain(model, torch.zeros(1, 1, *model.card.input.size), "gradcam")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        xai.explain(object(), torch.zeros(1, 1, 8, 8), "gradcam")


def test_explain_volume_and_predict_volume_accept_a_loaded_model():
    import numpy as np

    model = xai.load_model("ct-phase-2d", device="cpu")
    volume = np.random.default_rng(0).random((2, 48, 48)).astype(np.float32)
    np.testing.assert_array_equal(xai.explain_volume(model, volume, "gradcam"),
                                  xai.explain_volume(model.module, volume, "gradcam",
                                                     layer=model.card.target_layers.default))
    np.testing.assert_array_equal(xai.predict_volume(model, volume), xai.predict_volume(model.module, volume))
