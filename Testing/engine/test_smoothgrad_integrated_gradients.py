"""Integrated Gradients and SmoothGrad against captum, completeness, determinism and batching."""
import pytest
import torch
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.engine import batching
from XAIExplainLib.engine.methods.smoothgrad import smoothgrad_noise
from Testing.support.models import classifier, small_inputs as inputs, pearson, unet

captum_attr = pytest.importorskip("captum.attr")


class RegionScore(nn.Module):
    """A segmenter's frozen-region class-logit sum as a 1-output model, for captum."""

    def __init__(self, segmenter, class_index, region):
        super().__init__()
        self.unet, self.class_index, self.region = segmenter, class_index, region

    def forward(self, x):
        rows = torch.arange(x.shape[0]) % self.region.shape[0]
        return (self.unet(x)[:, self.class_index] * self.region[rows]).flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("dims", [2, 3])
def test_integrated_gradients_agrees_with_captum_gauss_legendre(dims, monkeypatch):
    model = classifier(dims, seed=2)
    x = inputs(dims, n=2, seed=3)
    baseline = 0.1 * inputs(dims, n=2, seed=4)
    ours, info = xai.explain(model, x, "integrated_gradients", target=1, steps=16, baseline=baseline,
                             normalize=False, return_info=True)
    theirs = captum_attr.IntegratedGradients(model).attribute(x, baselines=baseline, target=1, n_steps=16,
                                                                method="gausslegendre").sum(1)
    assert pearson(ours, theirs) >= 0.999
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))
    details = info["integrated_gradients"]
    with torch.no_grad():
        gap = model(x)[:, 1] - model(baseline)[:, 1]
    assert torch.allclose(details["score"] - details["baseline_score"], gap, atol=1e-5)
    assert torch.allclose(details["completeness_error"], (ours.flatten(1).sum(1) - gap).abs(), atol=1e-5)
    assert (details["completeness_error"] < 0.05 * gap.abs().max()).all()
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", x[0].numel() * 2 * 3)  # 3 steps per forward
    chunked = xai.explain(model, x, "integrated_gradients", target=1, steps=16, baseline=baseline, normalize=False)
    assert torch.allclose(chunked, ours, atol=1e-6)


def test_integrated_gradients_of_a_segmentation_target_agrees_with_captum():
    model = unet(2, seed=3)
    x = inputs(2, n=2, seed=5)
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 2:9] = True
    target = xai.SegmentationTarget(1, region=mask)
    ours = xai.explain(model, x, "integrated_gradients", target=target, steps=8, baseline=-0.5, normalize=False)
    theirs = captum_attr.IntegratedGradients(RegionScore(model, 1, mask.float())).attribute(
        x, baselines=-0.5, target=0, n_steps=8, method="gausslegendre").sum(1)
    assert pearson(ours, theirs) >= 0.999


@pytest.mark.parametrize("dims", [2, 3])
def test_smoothgrad_agrees_with_captum_saliency_on_the_same_noise(dims, monkeypatch):
    model = classifier(dims, seed=4)
    x = inputs(dims, n=2, seed=6)
    ours = xai.explain(model, x, "smoothgrad", target=2, samples=6, noise=0.2, seed=7, normalize=False)
    unit = smoothgrad_noise(tuple(x.shape[1:]), samples=6, seed=7)
    sigma = 0.2 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).reshape((-1,) + (1,) * (x.dim() - 1))
    saliency = captum_attr.Saliency(model)
    noisy = [(x + sigma * unit[s]).requires_grad_(True) for s in range(6)]
    reference = sum(saliency.attribute(copy, target=2, abs=True).amax(1) for copy in noisy) / 6
    assert pearson(ours, reference) >= 0.999
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", x[0].numel() * 2 * 4)  # 4 copies per forward
    chunked = xai.explain(model, x, "smoothgrad", target=2, samples=6, noise=0.2, seed=7, normalize=False)
    assert torch.allclose(chunked, ours, atol=1e-7)


def test_smoothgrad_is_seeded_locally_and_independent_of_the_batch():
    model = classifier(2, seed=5)
    x = inputs(2, n=3, seed=8)
    state = torch.random.get_rng_state()
    batched = xai.explain(model, x, "smoothgrad", target=0, samples=4, normalize=False)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must not be used"
    single = xai.explain(model, x[1:2], "smoothgrad", target=0, samples=4, normalize=False)
    assert torch.allclose(batched[1], single[0], atol=1e-7)
    other_seed = xai.explain(model, x, "smoothgrad", target=0, samples=4, seed=1, normalize=False)
    assert not torch.allclose(batched, other_seed)
    assert torch.equal(batched, xai.explain(model, x, "smoothgrad", target=0, samples=4, normalize=False))


def test_integrated_gradients_is_signed_raw_and_checks_its_options():
    model = classifier(2, seed=6)
    x = inputs(2, n=2)
    raw = xai.explain(model, x, "integrated_gradients", target=0, steps=4, normalize=False)
    assert (raw < 0).any() and (raw > 0).any()
    shown = xai.explain(model, x, "integrated_gradients", target=0, steps=4)
    assert shown.min() >= 0 and torch.allclose(shown.flatten(1).amax(1), torch.ones(2))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        xai.explain(model, x, "integrated_gradients", steps=0)
    with pytest.raises(ValueError, match="does not broadcast"):
        xai.explain(model, x, "integrated_gradients", baseline=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="noise must be a finite number"):
        xai.explain(model, x, "smoothgrad", noise=-1)
    with pytest.raises(TypeError, match="unknown option"):
        xai.explain(model, x, "smoothgrad", steps=3)
