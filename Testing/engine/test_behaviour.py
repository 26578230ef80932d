"""Batching, one-pass sharing, lean capture, determinism, and leaving the model exactly as found."""
import copy

import pytest
import torch

import XAIExplainLib as xai
from Testing.support.models import FunctionalReluCNN, SmallCNN, inputs, make

ALL = sorted(xai.METHODS)
# Methods with a model check (the attention methods: only for self-attention models) are tested on
# such models in test_attention_methods.py, left-as-found included.
CLASSIFIER_METHODS = [m for m in ALL if "classification" in xai.METHODS[m].tasks and xai.METHODS[m].model_check is None]
CORE = ["cam", "gradcam", "gradcampp", "hirescam", "xgradcam", "layercam", "saliency", "guided_backprop",
        "guided_gradcam"]


def test_core_methods_registered():
    assert set(CORE) <= set(xai.METHODS)


@pytest.mark.parametrize("dims", [2, 3])
def test_batched_equals_one_at_a_time_with_mixed_classes(dims):
    model = make(SmallCNN, dims=dims, seed=4 if dims == 2 else 16)
    with torch.no_grad():  # a decisive head, so that random inputs get different classes
        model.fc.weight.mul_(40)
        model.fc.bias.zero_()
    x = inputs(dims, n=6, size=12 if dims == 2 else 8, seed=7)
    assert len(set(model(x).argmax(1).tolist())) > 1, "the batch should mix predicted classes"
    batched = xai.explain_many(model, x, CORE, layer="features.6", normalize=False)
    for n in range(x.shape[0]):
        single = xai.explain_many(model, x[n:n + 1], CORE, layer="features.6", normalize=False)
        for method in CORE:
            assert torch.allclose(batched[method][n], single[method][0], rtol=1e-4, atol=1e-6), method


def test_explicit_targets_per_sample_match_single_targets():
    model = make(SmallCNN)
    x = inputs(n=3)
    maps = xai.explain(model, x, "gradcam", target=[2, 0, 1])
    for n, cls in enumerate([2, 0, 1]):
        assert torch.allclose(maps[n], xai.explain(model, x[n:n + 1], "gradcam", target=cls)[0], atol=1e-6)


def test_five_cam_maps_share_one_forward_and_one_backward():
    model = make(SmallCNN)
    calls = {"forward": 0}
    model.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    x = inputs()
    xai.explain(model, x, "gradcam", layer="features.3")  # warm the default-layer cache out of the count
    calls["forward"] = 0
    xai.explain_many(model, x, ["gradcam", "gradcampp", "hirescam", "xgradcam", "layercam"], layer="features.3")
    assert calls["forward"] == 1
    model._forward_hooks.clear()


def test_lean_capture_builds_no_graph_before_the_layer_and_no_parameter_grads():
    model = make(SmallCNN)
    seen = {}
    handle = model.features[0].register_forward_hook(lambda m, i, o: seen.update(early=o.requires_grad))
    xai.explain(model, inputs(), "gradcam", layer="features.3")
    handle.remove()
    assert seen["early"] is False
    assert all(p.grad is None for p in model.parameters())


def _snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "flags": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "types": [type(m) for m in model.modules()],
    }


def _assert_as_found(model, before):
    after = _snapshot(model)
    assert before["flags"] == after["flags"]
    assert before["training"] == after["training"]
    assert before["types"] == after["types"]
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


@pytest.mark.parametrize("method", CLASSIFIER_METHODS)
def test_model_left_exactly_as_found(method):
    model = make(SmallCNN, inplace=True)
    model.train()
    model.features[0].weight.requires_grad_(False)  # a user's partly frozen model
    before = _snapshot(model)
    xai.explain(model, inputs(), method, **({"layer": "features.6"} if xai.METHODS[method].needs_layer else {}))
    _assert_as_found(model, before)


def test_model_left_as_found_after_a_failure_mid_pass():
    model = make(SmallCNN)
    model.train()
    before = _snapshot(model)

    def fail(module, inputs, output):
        raise RuntimeError("injected failure")
    handle = model.features[4].register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="injected"):
        xai.explain_many(model, inputs(), ["gradcam", "guided_backprop"], layer="features.3")
    handle.remove()
    _assert_as_found(model, before)


def test_inplace_relu_model_gives_the_same_maps():
    plain = make(SmallCNN, seed=9)
    inplace = make(SmallCNN, seed=9, inplace=True)
    inplace.load_state_dict(plain.state_dict())
    x = inputs()
    for method in CORE:
        layer = {"layer": "features.3"} if xai.METHODS[method].needs_layer and method != "cam" else {}
        if method == "cam":
            layer = {"layer": "features.6"}
        assert torch.allclose(xai.explain(plain, x, method, **layer), xai.explain(inplace, x, method, **layer),
                              atol=1e-6), method


def test_guided_backprop_covers_functional_relu_and_leaky_relu():
    model = make(FunctionalReluCNN)
    x = inputs()
    guided = xai.explain(model, x, "guided_backprop", target=0, normalize=False)
    ungated = xai.explain(model, x, "saliency", target=0, normalize=False)
    # a reference with the gate written out by hand around every activation
    clone = copy.deepcopy(model)

    class Gate(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return g.clamp(min=0)

    def gated_forward(inp):
        h = Gate.apply(torch.nn.functional.relu(clone.conv1(inp)))
        h = Gate.apply(torch.relu(clone.conv2(h)))
        h = Gate.apply(clone.act(clone.conv3(h)))
        return clone.fc(clone.pool(h).flatten(1))
    xr = x.clone().requires_grad_(True)
    gated_forward(xr)[:, 0].sum().backward()
    assert torch.allclose(guided, xr.grad.sum(1), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(guided.abs(), ungated, atol=1e-4)


def test_same_input_gives_the_same_maps():
    model = make(SmallCNN)
    x = inputs()
    first = xai.explain_many(model, x, CORE, layer="features.6")
    second = xai.explain_many(model, x, CORE, layer="features.6")
    for method in CORE:
        assert torch.equal(first[method], second[method])


def test_normalised_maps_are_in_unit_range_and_zero_maps_stay_zero():
    model = make(SmallCNN)
    with torch.no_grad():
        model.fc.weight.zero_()
    maps = xai.explain(model, inputs(), "gradcam", layer="features.3")
    assert torch.count_nonzero(maps) == 0 and not torch.isnan(maps).any()
    maps = xai.explain(make(SmallCNN), inputs(), "gradcampp")
    assert maps.min() >= 0 and maps.max() <= 1 and maps.dtype == torch.float32


def test_default_layer_is_the_last_spatial_layer():
    model = make(SmallCNN)
    _, info = xai.explain(model, inputs(), "gradcam", return_info=True)
    assert info["layers"] == ["features"]  # the outermost module producing the last spatial output
    assert xai.engine.list_layers(model, inputs()) == [f"features.{i}" for i in range(7)] + ["features"]


def test_explaining_inside_inference_mode_still_works():
    model = make(SmallCNN)
    with torch.inference_mode():
        x = inputs()
        maps = xai.explain(model, x, "gradcam")
    assert maps.shape == (4, 16, 16)
