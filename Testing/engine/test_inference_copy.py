"""The inference-optimised copy that runs the perturbation methods' batches: used only where it gives
the model's numbers, rebuilt when the weights change, never touching the user's model."""
import gc
import weakref

import pytest
import torch
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.engine import batching, inference_copy
from XAIExplainLib.engine.capture import explaining
from XAIExplainLib.engine.methods.rise import RiseMasks
from Testing.engine.test_peer_attributions import naive_rise
from Testing.support.models import SmallCNN, assert_as_found, make, small_inputs as inputs, snapshot


@pytest.fixture(autouse=True)
def _fresh_copies():
    inference_copy._COPIES.clear()
    yield
    inference_copy._COPIES.clear()


def _copy(model, x, output_key=None):
    with explaining(model):
        return inference_copy.optimised_copy(model, x, output_key)


class DataDependent(SmallCNN):
    """A branch on the input's values: torch.fx cannot trace it symbolically."""

    def forward(self, x):
        out = super().forward(x)
        return out * 2 if x.sum() > 0 else out


class TupleOutput(SmallCNN):
    def forward(self, x):
        return super().forward(x), x.mean()


@pytest.mark.parametrize("dims", [2, 3])
def test_the_copy_gives_the_models_outputs_and_leaves_the_model_as_found(dims):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, n=6, size=16 if dims == 2 else 8)
    before = snapshot(model)
    forward = _copy(model, x[:2])
    assert forward is not None and forward is not model
    with torch.no_grad():
        assert torch.allclose(forward(x), model.eval()(x), rtol=1e-5, atol=1e-6)
    assert_as_found(model, before)


def test_models_the_pass_cannot_take_run_themselves():
    x = inputs(2, n=2, size=16)
    assert _copy(make(DataDependent, dims=2), x) is None
    assert _copy(make(SmallCNN, dims=2).double(), x.double()) is None  # the pass is float32 only
    picked = _copy(make(TupleOutput, dims=2), x)   # the logits are read from its tuple
    model = make(TupleOutput, dims=2).eval()
    with torch.no_grad():
        assert torch.allclose(picked(x), model(x)[0], rtol=1e-5, atol=1e-6)


def test_a_copy_that_differs_from_the_model_is_refused(monkeypatch):
    from torch.fx.experimental import optimization

    def wrong(module):
        class Off(nn.Module):
            def forward(self, x):
                return module(x) + 1e-2
        return Off()
    monkeypatch.setattr(optimization, "optimize_for_inference", wrong)
    assert _copy(make(SmallCNN, dims=2), inputs(2, n=2, size=16)) is None


def test_the_copy_is_rebuilt_after_an_in_place_weight_change():
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=2, size=16)
    first = _copy(model, x)
    assert _copy(model, x) is first   # same weights, same input shape: kept
    with torch.no_grad():
        model.fc.weight.mul_(3.0)
    second = _copy(model, x)
    assert second is not first
    with torch.no_grad():
        assert torch.allclose(second(x), model.eval()(x), rtol=1e-5, atol=1e-6)
    assert _copy(model, inputs(2, n=2, size=24)) is not second   # another input shape: checked again


def test_the_cache_does_not_keep_an_explained_model_alive():
    model = make(SmallCNN, dims=2)
    assert _copy(model, inputs(2, n=2, size=16)) is not None
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None and len(inference_copy._COPIES) == 0


def test_a_batch_the_copy_fails_on_runs_on_the_model(monkeypatch):
    model = make(SmallCNN, dims=2).eval()
    x = inputs(2, n=2, size=16)
    forward = _copy(model, x)

    def broken(batch):
        raise RuntimeError("no oneDNN primitive for this shape")
    monkeypatch.setattr(forward, "fast", broken)
    with torch.no_grad():
        assert torch.allclose(forward(x), model(x))
    assert forward.failed


@pytest.mark.parametrize("dims", [2, 3])
def test_rise_through_the_copy_equals_one_forward_per_mask(dims, monkeypatch):
    """Enough forwards for the copy (4 masks each): it is built, used, and the map is the naive one."""
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, n=2, size=16 if dims == 2 else 8)
    target = torch.tensor([1, 2])
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 4 * x.numel())
    built = []
    original = inference_copy._build
    monkeypatch.setattr(inference_copy, "_build", lambda *a: built.append(1) or original(*a))
    before = snapshot(model)
    ours = xai.explain(model, x, "rise", target=target, normalize=False, masks=40, cells=4, seed=3)
    assert built == [1] and inference_copy._COPIES.get(model)[1] is not None
    reference = naive_rise(model, x, RiseMasks(tuple(x.shape[2:]), 40, 4, 0.5, seed=3), 40, target)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
    assert_as_found(model, before)
