"""Max-sensitivity and infidelity: captum's sensitivity_max / infidelity on the same perturbations, exact 3D cases."""
import pytest
import torch

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import SegmentationTarget, explain

from Testing.evaluation.metric_models import WeightMapClassifier, WeightMapSegmenter, captum_metrics, small_cnn
from Testing.support.models import assert_as_found, snapshot


def _uniform(shape, radius, seed):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * radius


@pytest.mark.parametrize("dims, method", [(2, "gradcam"), (3, "saliency")])
def test_max_sensitivity_equals_captum_sensitivity_max(dims, method):
    metrics = captum_metrics()
    model = small_cnn(dims, classes=3, seed=4)
    x = torch.randn((3, 1) + (8,) * dims, generator=torch.Generator().manual_seed(5))
    classes = torch.tensor([0, 2, 1])
    delta = _uniform((3, 4, 1) + (8,) * dims, 0.05, seed=6)
    state = snapshot(model)
    ours = ev.max_sensitivity(model, x, method, target=classes, perturbations=delta, batch_size=5)
    assert_as_found(model, state)

    def explanation(inputs, target):
        if isinstance(inputs, tuple):  # captum passes x itself as a 1-tuple and expects one back
            return (explain(model, inputs[0], method, target=target),)
        return explain(model, inputs, method, target=target)

    def perturb(inputs, radius):
        return inputs + delta.reshape(-1, *inputs.shape[1:])

    reference = metrics.sensitivity_max(explanation, x, perturb_func=perturb, n_perturb_samples=4,
                                        target=classes)
    assert torch.allclose(ours.max_sensitivity, reference.float(), atol=1e-5)
    assert bool((ours.max_sensitivity > 0).all())


def test_max_sensitivity_of_a_linear_model_is_zero_and_seeded_3d():
    """Saliency of a linear model is |W| wherever x is: no perturbation moves it."""
    weights = torch.randn(2, 5, 5, 5, generator=torch.Generator().manual_seed(7))
    model = WeightMapClassifier(weights)
    x = torch.randn(2, 1, 5, 5, 5)
    result = ev.max_sensitivity(model, x, "saliency", target=1, samples=6, radius=0.5)
    assert result.sensitivities.shape == (2, 6)
    assert torch.allclose(result.max_sensitivity, torch.zeros(2), atol=1e-6)
    cnn = small_cnn(3, classes=2, seed=8)
    a = ev.max_sensitivity(cnn, x, "saliency", samples=3, radius=0.2, seed=1, batch_size=1)
    b = ev.max_sensitivity(cnn, x, "saliency", samples=3, radius=0.2, seed=1, batch_size=6)
    assert torch.allclose(a.sensitivities, b.sensitivities, atol=1e-5)
    with pytest.raises(ValueError, match="radius must be > 0"):
        ev.max_sensitivity(cnn, x, "saliency", radius=0)
    with pytest.raises(ValueError, match=r"perturbations must have shape \(2, 3, 1, 5, 5, 5\)"):
        ev.max_sensitivity(cnn, x, "saliency", perturbations=torch.zeros(2, 3, 1, 5, 5))


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captum_infidelity(normalize):
    metrics = captum_metrics()
    model = small_cnn(2, classes=3, seed=9).train()
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(3, 1, 8, 8, generator=generator)
    maps = torch.rand(3, 8, 8, generator=generator)
    noise = 0.3 * torch.randn(3, 5, 1, 8, 8, generator=generator)
    classes = torch.tensor([1, 0, 2])
    state = snapshot(model)
    ours = ev.infidelity(model, x, maps, target=classes, perturbations=noise, normalize=normalize, batch_size=4)
    assert_as_found(model, state)
    model.eval()

    def forward(inputs):
        return torch.softmax(model(inputs), dim=1)

    def perturb(inputs):
        flat = noise.reshape(-1, *inputs.shape[1:])
        return flat, inputs - flat

    reference = metrics.infidelity(forward, perturb, x, maps[:, None], target=classes, n_perturb_samples=5,
                                   normalize=normalize)
    assert torch.allclose(ours.infidelity, reference, rtol=1e-4, atol=1e-9)


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model_3d():
    """f(x) - f(x - I) = W . I exactly, so the map W has zero infidelity, at any noise level."""
    weights = torch.randn(2, 6, 6, 6, generator=torch.Generator().manual_seed(11))
    model = WeightMapClassifier(weights)
    x = torch.rand(2, 1, 6, 6, 6)
    exact = ev.infidelity(model, x, weights[0].expand(2, 6, 6, 6), target=0, activation=None, normalize=False,
                          samples=8, noise_std=0.5)
    assert torch.allclose(exact.infidelity, torch.zeros(2), atol=1e-8)
    # Scaling the map is undone by beta: still zero; without beta it is not.
    scaled = 4.0 * weights[0].expand(2, 6, 6, 6)
    assert torch.allclose(ev.infidelity(model, x, scaled, target=0, activation=None, samples=8).beta,
                          torch.full((2,), 0.25), atol=1e-5)
    assert bool((ev.infidelity(model, x, scaled, target=0, activation=None, normalize=False,
                               samples=8).infidelity > 1e-3).all())
    # Segmentation: class-1 logits summed over a region read W[1] there.
    segmenter = WeightMapSegmenter(weights)
    region = torch.zeros(6, 6, 6, dtype=torch.bool)
    region[2:5] = True
    target = SegmentationTarget(1, region=region)
    seg = ev.infidelity(segmenter, x, (weights[1] * region).expand(2, 6, 6, 6), target=target, activation=None,
                        normalize=False, samples=4)
    assert torch.allclose(seg.infidelity, torch.zeros(2), atol=1e-8)
    columns = ev.evaluate(model, x, weights[0].expand(2, 6, 6, 6), target=0, activation=None,
                          metrics=["infidelity"], metric_options={"infidelity": {"normalize": False}})
    assert columns["infidelity"] == pytest.approx([0.0, 0.0], abs=1e-8)


def test_max_sensitivity_through_evaluate():
    model = small_cnn(2, classes=2, seed=12)
    x = torch.randn(2, 1, 8, 8)
    maps = explain(model, x, "gradcam")
    columns = ev.evaluate(model, x, maps, metrics=["max_sensitivity"], method="gradcam", seed=3,
                          metric_options={"max_sensitivity": {"samples": 3}})
    direct = ev.max_sensitivity(model, x, "gradcam", samples=3, seed=3)
    assert columns["max_sensitivity"] == pytest.approx(direct.max_sensitivity.tolist(), abs=1e-6)
    with pytest.raises(ValueError, match=r"metric 'max_sensitivity' needs method"):
        ev.evaluate(model, x, maps, metrics=["max_sensitivity"])


def test_max_sensitivity_keeps_the_segmentation_region_frozen_3d():
    """Class-1 logit = x per voxel; the predicted region (x > 0) would move under noise, the frozen one does not.

    The saliency of the class-1 logits summed over a fixed region R is 1 on R and 0 elsewhere whatever x is,
    so with the region frozen on the unperturbed prediction the sensitivity is exactly 0.
    """
    weights = torch.stack([torch.zeros(6, 6, 6), torch.ones(6, 6, 6)])
    model = WeightMapSegmenter(weights)
    x = 0.2 * torch.randn(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(13))
    result = ev.max_sensitivity(model, x, "saliency", target=SegmentationTarget(1), samples=5, radius=0.5)
    assert torch.equal(result.max_sensitivity, torch.zeros(2))
    # The noise does move the predicted region: re-binding on a perturbed copy would change the map.
    moved = explain(model, x + 0.5, "saliency", target=SegmentationTarget(1))
    assert not torch.equal(moved, explain(model, x, "saliency", target=SegmentationTarget(1)))
