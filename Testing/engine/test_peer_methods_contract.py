"""The peer-library methods on 2D and 3D classifiers and segmenters: shapes, model left exactly as found,
determinism, batch independence, and the errors for bad options."""
import importlib.util

import pytest
import torch

import XAIExplainLib as xai
from Testing.support.models import SmallCNN, assert_as_found, make, small_inputs as inputs, snapshot, unet

NEW_METHODS = ["eigencam", "kpcacam", "eigengradcam", "gradcam_elementwise", "ablationcam", "finercam", "fullgrad", "input_x_gradient", "deeplift",
               "gradient_shap", "rise", "lrp"]
if importlib.util.find_spec("zennit") is None:  # LRP needs the lrp extra; its own tests say so
    NEW_METHODS.remove("lrp")
FAST = {"rise": {"masks": 30}, "gradient_shap": {"samples": 4, "stdev": 0.1}}


def _cases(dims):
    classifier = make(SmallCNN, dims=dims)
    segmenter = unet(dims, seed=2)
    size = 16 if dims == 2 else 8
    return [("classifier", classifier, inputs(dims, n=3, size=size), None, "features.3"),
            ("segmenter", segmenter, inputs(dims, n=2, size=size, seed=4),
             xai.SegmentationTarget(1, region="all"), "dec1.0")]


@pytest.mark.parametrize("dims", [2, 3])
def test_every_new_method_maps_2d_and_3d_classifiers_and_segmenters_and_leaves_the_model_as_found(dims):
    for kind, model, x, target, layer in _cases(dims):
        model.train()  # training mode and trainable parameters must come back exactly
        model.features[1].eval() if kind == "classifier" else model.dec2[1].eval()
        before = snapshot(model)
        methods = [m for m in NEW_METHODS if kind == "classifier" or "segmentation" in xai.METHODS[m].tasks]
        assert len(methods) == len(NEW_METHODS) - (kind == "segmenter")  # Finer-CAM compares classes
        maps = xai.explain_many(model, x, methods, target=target, layer=layer,
                                **{k: v for opts in FAST.values() for k, v in opts.items()})
        assert_as_found(model, before)
        for method, value in maps.items():
            assert value.shape == (x.shape[0],) + tuple(x.shape[2:]), (kind, method)
            assert torch.isfinite(value).all() and value.min() >= 0 and value.max() <= 1, (kind, method)
            assert (value.flatten(1).amax(1) > 0).all(), f"{method} gave an empty map on the {kind}"


@pytest.mark.parametrize("method", NEW_METHODS)
def test_each_sample_gets_the_map_it_gets_alone_and_reruns_repeat_it(method):
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=3, size=16)
    target = torch.tensor([0, 2, 1])
    batch = xai.explain(model, x, method, target=target, layer="features.3", normalize=False, **FAST.get(method, {}))
    again = xai.explain(model, x, method, target=target, layer="features.3", normalize=False, **FAST.get(method, {}))
    assert torch.equal(batch, again)
    alone = xai.explain(model, x[1:2], method, target=target[1:2], layer="features.3", normalize=False,
                        **FAST.get(method, {}))
    assert torch.allclose(alone, batch[1:2], rtol=1e-4, atol=1e-5 * float(batch.abs().max()))


def test_gradient_shap_refuses_baselines_of_another_shape():
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=2, size=16)
    with pytest.raises(ValueError, match=r"option baselines has shape \(3, 1, 8, 8\); give a number, one reference "
                                         r"of a sample's shape \(1, 16, 16\)"):
        xai.explain(model, x, "gradient_shap", baselines=torch.zeros(3, 1, 8, 8))
    with pytest.raises(TypeError, match="option baselines must be a number or a tensor"):
        xai.explain(model, x, "gradient_shap", baselines="zeros")


def test_deeplift_refuses_a_baseline_that_does_not_broadcast():
    model = make(SmallCNN, dims=2)
    with pytest.raises(ValueError, match=r"option baseline has shape \(5, 5\), which does not broadcast"):
        xai.explain(model, inputs(2, n=2, size=16), "deeplift", baseline=torch.zeros(5, 5))


def test_ablationcam_refuses_a_layer_without_spatial_dims():
    model = make(SmallCNN, dims=2)
    with pytest.raises(ValueError, match=r"layer 'fc' has output \(2, 3\) with no spatial dims"):
        xai.explain(model, inputs(2, n=2, size=16), "ablationcam", layer="fc")


def test_fullgrad_refuses_a_model_whose_biased_layer_runs_twice():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
            self.fc = torch.nn.Linear(1, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="layer 'conv' runs 2 times in one forward pass"):
        xai.explain(Twice().eval(), inputs(2, n=1, size=8), "fullgrad")


def test_the_methods_are_listed_with_their_options():
    assert set(NEW_METHODS) <= set(xai.METHODS)
    assert xai.METHODS["lrp"].options == ("composite",)
    assert xai.METHODS["rise"].options == ("masks", "cells", "keep_probability", "seed", "score_baseline")
    assert xai.METHODS["eigencam"].needs_layer and xai.METHODS["eigencam"].cost == "1 forward"
    assert xai.METHODS["input_x_gradient"].signed and not xai.METHODS["fullgrad"].needs_layer
    assert xai.METHODS["kpcacam"].options == ("kernel", "gamma") and xai.METHODS["kpcacam"].label == "KPCA-CAM"
