"""Every seed / perturbation / path method on small 2D and 3D models: shapes, determinism, model as found."""
import pytest
import torch

import XAIExplainLib as xai
from Testing.support.models import assert_as_found, classifier, small_inputs as inputs, snapshot, unet

SEED_METHODS = ["scorecam", "occlusion", "smoothgrad", "integrated_gradients", "sam", "crm", "kwc"]
FAST = {"smoothgrad": {"samples": 3}, "integrated_gradients": {"steps": 4}, "occlusion": {"window": 4, "stride": 4}}
LAYERS = {"classification": "features.3", "segmentation": "dec2.0"}


def _cases():
    for method in SEED_METHODS:
        for task in xai.METHODS[method].tasks:
            for dims in (2, 3):
                yield method, task, dims


@pytest.mark.parametrize("method,task,dims", list(_cases()))
def test_method_runs_and_leaves_the_model_exactly_as_found(method, task, dims):
    model = classifier(dims, seed=2) if task == "classification" else unet(dims, seed=2)
    model.train()  # the user's mode is restored, and the explanation runs in eval mode
    first = model.features[0] if task == "classification" else model.enc1.conv
    first.weight.requires_grad_(False)  # a user's partly frozen model
    before = snapshot(model)
    x = inputs(dims, n=2, seed=3)
    target = None if task == "classification" else xai.SegmentationTarget(1, region="all", activation="sigmoid")
    layer = {"layer": LAYERS[task]} if xai.METHODS[method].needs_layer else {}
    maps = xai.explain(model, x, method, target=target, **layer, **FAST.get(method, {}))
    assert maps.shape == (2,) + x.shape[2:] and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert_as_found(model, before)
    model.eval()
    again = xai.explain(model, x, method, target=target, **layer, **FAST.get(method, {}))
    assert torch.equal(xai.explain(model, x, method, target=target, **layer, **FAST.get(method, {})), again)


def test_model_is_left_as_found_when_the_replay_fails():
    model = unet(2, seed=1)
    before = snapshot(model)

    def fail(module, inputs, output):
        if output.shape[0] > 2:  # only in the replay, whose batch holds the perturbed copies
            raise RuntimeError("injected failure")
    handle = model.dec1.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="injected"):
        xai.explain(model, inputs(2, n=2), "kwc", target=xai.SegmentationTarget(1, region="all"), layer="dec2.0")
    handle.remove()
    assert_as_found(model, before)


def test_new_methods_and_exports_are_registered():
    assert set(SEED_METHODS) <= set(xai.METHODS)
    assert "SegmentationTarget" in xai.__all__ and {"crm_roi_map", "decoder_layers"} <= set(xai.engine.__all__)
    assert xai.METHODS["kwc"].tasks == ("segmentation",) and xai.METHODS["crm"].tasks == ("classification",)
    assert xai.METHODS["integrated_gradients"].signed and xai.METHODS["occlusion"].signed
