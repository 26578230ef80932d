"""Caches notice a changed model (issue 20 class 4).

The inference-optimised copy that runs RISE, Score-CAM and occlusion was keyed on the weights only, so
after ``model.features[2] = nn.Tanh()`` or a registered hook these methods returned the previous model's
map. The reference here is the same method with the copy switched off (the model itself runs every
batch, hooks included); the map must also differ from the one before the change, so the change matters.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.engine import batching, inference_copy, request
from Testing.support.models import SmallCNN, make, small_inputs as inputs

OPTIONS = {"rise": {"masks": 24, "cells": 4, "seed": 3}, "scorecam": {}, "occlusion": {"window": 4, "stride": 2}}


@pytest.fixture(autouse=True)
def _fresh_copies(monkeypatch):
    inference_copy._COPIES.clear()
    yield
    inference_copy._COPIES.clear()


def _explain(model, x, method):
    return xai.explain(model, x, method, target=torch.tensor([1, 2]), normalize=False, **OPTIONS[method])


def _replace(model):
    model.features[2] = nn.Tanh()


def _forward_hook(model):
    return model.features[1].register_forward_hook(lambda module, inputs, output: output * 3.0)


def _forward_pre_hook(model):
    return model.features[3].register_forward_pre_hook(lambda module, inputs: (-inputs[0],))


def _global_hook(model):
    def scale_linear(module, inputs, output):
        return output * 2.0 + 1.0 if isinstance(module, nn.Linear) else None
    return nn.modules.module.register_module_forward_hook(scale_linear)


CHANGES = {"replaced layer": _replace, "forward hook": _forward_hook, "forward-pre hook": _forward_pre_hook,
           "global forward hook": _global_hook}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_the_perturbation_methods_follow_a_changed_model(method, change, monkeypatch):
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=2, size=16)
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 4 * x.numel())  # enough batches for the copy
    before = _explain(model, x, method)
    assert inference_copy._COPIES.get(model)[1] is not None  # the copy was built and kept
    handle = CHANGES[change](model)
    try:
        after = _explain(model, x, method)
        monkeypatch.setattr(request, "MIN_FORWARDS", 10**9)  # reference: the model itself runs every batch
        reference = _explain(model, x, method)
    finally:
        if handle is not None:
            handle.remove()
    scale = float(reference.abs().max())
    assert torch.allclose(after, reference, rtol=1e-4, atol=1e-5 * scale)
    assert not torch.allclose(after, before, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("kind", ["full backward", "backward-pre"])
def test_a_model_with_a_backward_hook_runs_itself(kind):
    """A backward hook does not change the outputs, but the copy would skip the user's hook: no copy."""
    model = make(SmallCNN, dims=2).eval()
    x = inputs(2, n=2, size=16)
    calls = []
    register = (model.features[4].register_full_backward_hook if kind == "full backward"
                else model.features[4].register_full_backward_pre_hook)
    handle = register(lambda *args: calls.append(1))
    try:
        assert inference_copy.optimised_copy(model, x) is None
    finally:
        handle.remove()
    assert inference_copy.optimised_copy(model, x) is not None  # once removed, the copy is made again


def test_an_unchanged_model_keeps_its_copy_across_explanations(monkeypatch):
    """The engine's own hooks (reading the logits, capturing a layer) do not count as a change."""
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=2, size=16)
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 4 * x.numel())
    built = []
    original = inference_copy._build
    monkeypatch.setattr(inference_copy, "_build", lambda *a: built.append(1) or original(*a))
    for method in ("scorecam", "rise", "scorecam", "occlusion"):
        _explain(model, x, method)
    assert built == [1]
