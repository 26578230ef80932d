"""Multi-layer attribution (seed 002): layer lists and layer="decoder"."""
import pytest
import torch

import XAIExplainLib as xai
from XAIExplainLib.engine.normalize import minmax
from Testing.support.models import classifier, small_inputs as inputs, unet

DECODER = ["up2", "dec2.0", "up1", "dec1.0"]


@pytest.mark.parametrize("dims", [2, 3])
def test_decoder_is_every_convolution_after_the_bottleneck_except_the_head(dims):
    assert xai.engine.decoder_layers(unet(dims), inputs(dims)) == DECODER


def test_decoder_of_a_classifier_is_a_clear_error():
    with pytest.raises(ValueError, match="U-Net-like"):
        xai.explain(classifier(2), inputs(2), "gradcam", layer="decoder")


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "scorecam"])
@pytest.mark.parametrize("dims", [2, 3])
def test_decoder_map_is_the_mean_of_min_max_scaled_layer_maps(method, dims):
    model = unet(dims, seed=1)
    x = inputs(dims, n=2, seed=2)
    target = xai.SegmentationTarget(1, region="all", activation="sigmoid")  # the SPIE target
    combined, info = xai.explain(model, x, method, target=target, layer="decoder", normalize=False,
                                 return_info=True)
    assert info["layers"] == DECODER
    per_layer = [xai.explain(model, x, method, target=target, layer=name, normalize=False) for name in DECODER]
    expected = torch.stack([minmax(m) for m in per_layer]).mean(dim=0)
    assert torch.allclose(combined, expected, atol=1e-6)
    assert torch.allclose(xai.explain(model, x, method, target=target, layer=DECODER, normalize=False), expected,
                          atol=1e-6)
