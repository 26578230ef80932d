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


# ---- the Slicer logic's model catalogue ------------------------------------------------------------------

def _rewrite_weights(path, scale: float, keep_mtime: bool = False):
    """The same tensors times ``scale``, saved over ``path`` (same size), optionally with the old mtime."""
    import os

    info = os.stat(path)
    state = torch.load(path, weights_only=True)
    torch.save({k: v * scale if v.is_floating_point() else v for k, v in state.items()}, path)
    if keep_mtime:
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
        assert os.stat(path).st_mtime_ns == info.st_mtime_ns and os.stat(path).st_size == info.st_size


def _first_weight(loaded) -> torch.Tensor:
    return next(loaded.module.parameters()).detach().clone()


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["new mtime", "mtime set back"])
def test_the_catalogue_reloads_a_model_whose_weights_changed_on_disk(tmp_path, keep_mtime):
    from XAIExplainLib.logic.model_catalogue import ModelCatalogue
    from Testing.reliability.hostile import model_folder

    folder = model_folder(tmp_path / "m")
    _rewrite_weights(folder / "weights.pt", 1.0)  # saved as the rewrite saves them: the size stays the same
    catalogue = ModelCatalogue()
    first = catalogue.get(str(folder))
    assert catalogue.get(str(folder)) is first  # unchanged: loaded once
    _rewrite_weights(folder / "weights.pt", -2.0, keep_mtime)
    second = catalogue.get(str(folder))
    assert second is not first
    torch.testing.assert_close(_first_weight(second), -2.0 * _first_weight(first))
    assert catalogue.get(str(folder)) is second


def test_the_catalogue_reloads_a_named_model_and_a_bare_weights_file(tmp_path, monkeypatch):
    from XAIExplainLib.logic.model_catalogue import ModelCatalogue
    from XAIExplainLib.models.search_paths import MODEL_PATH_ENV
    from Testing.reliability.hostile import model_folder

    model_folder(tmp_path / "models" / "hostile")
    monkeypatch.setenv(MODEL_PATH_ENV, str(tmp_path / "models"))
    catalogue = ModelCatalogue()
    named = catalogue.get("hostile")
    _rewrite_weights(tmp_path / "models" / "hostile" / "weights.pt", 0.5)
    torch.testing.assert_close(_first_weight(catalogue.get("hostile")), 0.5 * _first_weight(named))

    bare = tmp_path / "net.pt"
    torch.save(torch.load(tmp_path / "models" / "hostile" / "weights.pt", weights_only=True), bare)
    options = dict(architecture="XAIExplainLib.models.architectures:SliceClassifier",
                   architecture_kwargs={"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8, 8]},
                   task="classification", spatial_dims=2, classes=["a", "b"])
    from XAIExplainLib.models import load_model

    catalogue = ModelCatalogue(load=lambda source, trust=False: load_model(source, trust=trust, **options))
    before = catalogue.get(str(bare))
    _rewrite_weights(bare, 3.0)
    torch.testing.assert_close(_first_weight(catalogue.get(str(bare))), 3.0 * _first_weight(before))
