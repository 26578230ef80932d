"""Input x Gradient, DeepLIFT and GradientSHAP against captum, LRP against zennit's attributor, RISE's estimate.

GradientSHAP is random: captum draws with numpy and torch's global generators, the
engine with its own seeded generator. The comparison hands captum the engine's draws
(baseline choice, noise, alpha) through those generator calls, so both compute the same
expectation estimate from the same samples.
"""
import importlib.util

import numpy as np
import pytest
import torch
from captum.attr import DeepLift, GradientShap, InputXGradient
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.engine import batching
from XAIExplainLib.engine.methods.gradient_shap import gradient_shap_draws
from XAIExplainLib.engine.methods.lrp import COMPOSITES, make_composite
from XAIExplainLib.engine.methods.rise import RiseMasks
from Testing.support.models import SmallCNN, inputs, make, unet


# find_spec, not importorskip: importing zennit's package runs its __init__, which imports torchvision
needs_zennit = pytest.mark.skipif(importlib.util.find_spec("zennit") is None,
                                  reason='zennit is not installed (pip install ".[lrp]")')


def _assert_equal(ours, reference, rtol=1e-4):
    assert reference.abs().max() > 0, "an empty reference proves nothing"
    assert torch.allclose(ours, reference, rtol=rtol, atol=rtol * float(reference.abs().max()))


@pytest.mark.parametrize("dims", [2, 3])
def test_input_x_gradient_equals_captum(dims):
    model = make(SmallCNN, dims=dims, in_channels=2)
    x = inputs(dims, channels=2, size=16 if dims == 2 else 10)
    reference = InputXGradient(model).attribute(x.clone(), target=1).sum(dim=1).detach()
    _assert_equal(xai.explain(model, x, "input_x_gradient", target=1, normalize=False), reference)


@pytest.mark.parametrize("dims", [2, 3])
def test_deeplift_equals_captum_with_zero_and_given_baselines(dims):
    model = make(SmallCNN, dims=dims, in_channels=2)
    x = inputs(dims, channels=2, size=16 if dims == 2 else 10)
    target = torch.tensor([0, 2, 1, 1])
    reference = DeepLift(model).attribute(x.clone(), target=target).sum(dim=1).detach()
    _assert_equal(xai.explain(model, x, "deeplift", target=target, normalize=False), reference)
    baseline = 0.3 * inputs(dims, n=1, channels=2, size=x.shape[-1], seed=9)[0]
    reference = DeepLift(model).attribute(x.clone(), baselines=baseline[None].expand_as(x).contiguous(),
                                          target=target).sum(dim=1).detach()
    _assert_equal(xai.explain(model, x, "deeplift", target=target, normalize=False, baseline=baseline), reference)


def test_deeplift_is_complete_on_a_unet_with_functional_relus():
    """Rescale multipliers sum to the score difference (summation-to-delta), skips and max pooling included."""
    model = unet(2, seed=2)
    x = inputs(2, n=2, seed=4)
    target = xai.SegmentationTarget(1, region="all")
    maps = xai.explain(model, x, "deeplift", target=target, normalize=False)
    with torch.no_grad():
        delta = model(x)[:, 1].flatten(1).sum(1) - model(torch.zeros_like(x))[:, 1].flatten(1).sum(1)
    assert delta.abs().min() > 1e-3
    assert torch.allclose(maps.flatten(1).sum(1), delta, rtol=1e-3, atol=1e-4)


def test_deeplift_with_in_place_activations_equals_the_out_of_place_twin():
    target = torch.tensor([0, 2, 1, 1])
    x = inputs(2, channels=1, size=16)
    twin = xai.explain(make(SmallCNN, dims=2, inplace=False), x, "deeplift", target=target, normalize=False)
    ours = xai.explain(make(SmallCNN, dims=2, inplace=True), x, "deeplift", target=target, normalize=False)
    _assert_equal(ours, twin)

    class IgnoresReturn(nn.Module):  # in-place activations whose return value is dropped
        def __init__(self):
            super().__init__()
            self.conv, self.conv2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3), nn.Linear(4, 3)
            self.leaky = nn.LeakyReLU(0.2, inplace=True)  # its backward reads its input

        def forward(self, x):
            h = self.conv(x)
            h.relu_()
            h = self.conv2(h)
            self.leaky(h)
            return self.fc(h.mean(dim=(2, 3)))
    torch.manual_seed(0)
    model = IgnoresReturn().eval()
    maps = xai.explain(model, x, "deeplift", target=target, normalize=False)
    with torch.no_grad():
        delta = model(x).gather(1, target[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, target[:, None])[:, 0]
    assert torch.allclose(maps.flatten(1).sum(1), delta, rtol=1e-3, atol=1e-5)


def _captum_gradient_shap(model, x, target, references, samples, stdev, seed, monkeypatch):
    """captum's GradientShap fed the engine's draws (captum's rows are sample-major: row = sample * S + s)."""
    indices, unit, alphas = gradient_shap_draws(tuple(x.shape[1:]), references.shape[0], samples, seed)
    n = x.shape[0]
    noise = (stdev * unit).repeat(n, *([1] * (x.dim() - 1)))
    monkeypatch.setattr(np.random, "choice", lambda count, size: np.tile(indices.numpy(), n))
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: np.tile(alphas.numpy(), n))
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise.to(std.dtype))
    attribution = GradientShap(model).attribute(x.clone(), baselines=references, n_samples=samples,
                                                stdevs=stdev, target=target)
    monkeypatch.undo()
    return attribution.sum(dim=1).detach()


@pytest.mark.parametrize("dims", [2, 3])
def test_gradient_shap_equals_captum_with_the_same_baselines_and_noise(dims, monkeypatch):
    model = make(SmallCNN, dims=dims, in_channels=2)
    x = inputs(dims, n=3, channels=2, size=12 if dims == 2 else 8)
    references = 0.5 * inputs(dims, n=4, channels=2, size=x.shape[-1], seed=7)
    target = torch.tensor([1, 0, 2])
    reference = _captum_gradient_shap(model, x, target, references, 6, 0.2, 5, monkeypatch)
    ours = xai.explain(model, x, "gradient_shap", target=target, normalize=False, baselines=references, samples=6,
                       stdev=0.2, seed=5)
    _assert_equal(ours, reference)
    # spread over several forwards, and for one sample alone: the same numbers
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 2 * x.shape[0] * x[0].numel())
    _assert_equal(xai.explain(model, x, "gradient_shap", target=target, normalize=False, baselines=references,
                              samples=6, stdev=0.2, seed=5), reference)
    single = xai.explain(model, x[1:2], "gradient_shap", target=target[1:2], normalize=False, baselines=references,
                         samples=6, stdev=0.2, seed=5)
    _assert_equal(single, reference[1:2])


def _zennit_reference(model, x, name, grad_output):
    from XAIExplainLib.engine.methods.lrp import _zennit
    _, _, attribution = _zennit()
    with attribution.Gradient(model, make_composite(name, x)) as attributor:
        _, relevance = attributor(x.clone(), grad_output)
    return relevance.sum(dim=1).detach()


@needs_zennit
@pytest.mark.parametrize("name", list(COMPOSITES))
@pytest.mark.parametrize("dims", [2, 3])
def test_lrp_equals_zennits_attributor_on_a_classifier(dims, name):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, size=12 if dims == 2 else 8)
    target = torch.tensor([2, 0, 1, 1])
    one_hot = torch.eye(3)[target]
    reference = _zennit_reference(model, x, name, one_hot)
    ours = xai.explain(model, x, "lrp", target=target, normalize=False, composite=name)
    assert torch.equal(ours, reference)


@needs_zennit
@pytest.mark.parametrize("dims", [2, 3])
def test_lrp_equals_zennits_attributor_on_a_unet_with_skips(dims):
    model = unet(dims, seed=3)
    x = inputs(dims, n=2, size=16 if dims == 2 else 8, seed=4)
    target = xai.SegmentationTarget(2, region="all")
    grad_output = torch.zeros_like(model(x))
    grad_output[:, 2] = 1
    reference = _zennit_reference(model, x, "epsilon_plus_flat", grad_output)
    assert torch.equal(xai.explain(model, x, "lrp", target=target, normalize=False), reference)


@needs_zennit
def test_lrp_conserves_relevance_through_a_conv_relu_linear_net():
    """With no biases every rule of EpsilonPlusFlat conserves relevance: the input relevance sums to the one
    unit that enters at the explained logit (d score / d logit = 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3, bias=False)).eval()
    x = inputs(2, n=2, size=8)
    maps = xai.explain(model, x, "lrp", target=1, normalize=False)
    assert torch.allclose(maps.flatten(1).sum(1), torch.ones(2), rtol=1e-4)


@needs_zennit
def test_lrp_box_bounds_are_each_samples_own():
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=3, size=12)
    x[1] *= 0.25  # a narrower range than its neighbours: the batch's bounds are not its own
    batch = xai.explain(model, x, "lrp", target=0, normalize=False, composite="epsilon_gamma_box")
    alone = xai.explain(model, x[1:2], "lrp", target=0, normalize=False, composite="epsilon_gamma_box")
    assert torch.allclose(alone, batch[1:2], rtol=1e-5, atol=1e-7)


def test_lrp_refuses_an_unknown_composite():
    model = make(SmallCNN, dims=2)
    with pytest.raises(ValueError, match="option composite must be one of 'epsilon_plus_flat'"):
        xai.explain(model, inputs(2), "lrp", composite="epsilon")


def naive_rise(model, x, masks: RiseMasks, count, target):
    """One forward per mask, softmax probability of the class, sum_i s_i M_i / (masks p)."""
    total = torch.zeros((x.shape[0],) + tuple(x.shape[2:]))
    with torch.no_grad():
        for i in range(count):
            mask = masks.batch(i, i + 1)[0]
            probability = torch.softmax(model(x * mask), dim=1).gather(1, target[:, None])[:, 0]
            total += probability.reshape((-1,) + (1,) * mask.dim()) * mask
    return total / (count * masks.p)


@pytest.mark.parametrize("dims", [2, 3])
def test_rise_equals_one_forward_per_mask_and_is_deterministic_for_a_seed(dims):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, n=2, size=16 if dims == 2 else 8)
    target = torch.tensor([1, 2])
    masks = RiseMasks(tuple(x.shape[2:]), 40, 4, 0.5, seed=3)
    reference = naive_rise(model, x, masks, 40, target)
    options = dict(target=target, normalize=False, masks=40, cells=4, seed=3)
    first = xai.explain(model, x, "rise", **options)
    _assert_equal(first, reference)
    assert torch.equal(first, xai.explain(model, x, "rise", **options))
    assert not torch.equal(first, xai.explain(model, x, "rise", **{**options, "seed": 4}))


def test_rise_masks_are_smooth_binary_grids_shifted_within_a_cell():
    masks = RiseMasks((20, 20), 8, 4, 0.5, seed=1)
    batch = masks.batch(0, 8)
    assert batch.shape == (8, 20, 20) and batch.min() >= 0 and batch.max() <= 1
    assert masks.cell == (5, 5) and masks.upsampled == (25, 25)
    assert ((masks.shifts >= 0) & (masks.shifts < 5)).all()
    assert ((batch > 0) & (batch < 1)).any()  # bilinear edges, not hard cells


def test_rise_converges_to_its_expectation_as_masks_grow():
    """The estimate's distance to a 16000-mask estimate (another seed) shrinks like 1 / sqrt(masks)."""
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=1, size=12)
    options = dict(target=0, normalize=False, cells=3)
    expectation = xai.explain(model, x, "rise", masks=16000, seed=100, **options)
    errors = {count: float((xai.explain(model, x, "rise", masks=count, seed=1, **options) - expectation).norm()
                           / expectation.norm()) for count in (100, 1600)}
    assert errors[1600] < 0.5 * errors[100]
    assert errors[1600] < 0.05


def test_rise_refuses_more_cells_than_voxels_and_a_bad_probability():
    model = make(SmallCNN, dims=2)
    x = inputs(2, size=8)
    with pytest.raises(ValueError, match=r"option cells=9 is more than the input's spatial size \(8, 8\)"):
        xai.explain(model, x, "rise", cells=9)
    with pytest.raises(ValueError, match=r"option keep_probability \(of keeping a cell\) must be a number in"):
        xai.explain(model, x, "rise", keep_probability=0)


def test_lrp_without_zennit_names_the_extra(monkeypatch):
    import sys
    monkeypatch.delitem(sys.modules, "zennit", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ImportError, match=r'LRP needs zennit: pip install "\.\[lrp\]" in the XAIExplain checkout'):
        xai.explain(make(SmallCNN, dims=2), inputs(2, n=1), "lrp")
