"""Average sensitivity, local Lipschitz estimate and continuity: Quantus on the same noise (2D), exact 3D cases."""
import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import explain

from Testing.evaluation.metric_models import WeightMapClassifier, quantus, small_cnn
from Testing.support.models import assert_as_found, snapshot

KWARGS = dict(disable_warnings=True, display_progressbar=False, abs=False, normalise=False)


@pytest.fixture(autouse=True)
def _threads(two_torch_threads):
    yield


def _quantus_explain(method):
    def explain_func(model, inputs, targets, **kwargs):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        maps = explain(model, x, method, target=torch.as_tensor(np.asarray(targets)).long(), normalize=False)
        return maps[:, None].numpy()
    return explain_func


def _quantus_noise(draw, n, k, shape, seed):
    """The perturbations Quantus draws from NumPy's global generator: one (N, features) array per step."""
    rng = np.random.RandomState(seed)
    steps = [draw(rng, (n, int(np.prod(shape)))) for _ in range(k)]
    return torch.from_numpy(np.stack(steps, axis=1).reshape(n, k, *shape))


def _case():
    model = small_cnn(2, classes=3, seed=4)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    return model, x, torch.tensor([0, 2, 1])


def _quantus_call(metric, model, x, y, method="saliency"):
    model.eval()
    a = explain(model, x, method, target=y, normalize=False)
    return metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(),
                  explain_func=_quantus_explain(method), explain_func_kwargs={}, channel_first=True, device="cpu")


def test_avg_sensitivity_and_local_lipschitz_equal_quantus_on_the_same_noise():
    q = quantus()
    model, x, y = _case()
    k = 5
    np.random.seed(11)
    reference = _quantus_call(q.AvgSensitivity(nr_samples=k, lower_bound=0.1, **KWARGS), model, x, y)
    delta = _quantus_noise(lambda rng, size: rng.uniform(low=-0.1, high=0.1, size=size), 3, k, (1, 8, 8), 11)
    model.train()  # the metric evaluates in eval mode and leaves the model as found
    state = snapshot(model)
    ours = ev.avg_sensitivity(model, x, "saliency", target=y, perturbations=delta, batch_size=4, normalize=False)
    assert_as_found(model, state)
    np.testing.assert_allclose(ours.avg_sensitivity.numpy(), reference, rtol=1e-4)
    assert ours.sensitivities.shape == (3, k) and len(set(np.round(reference, 4))) == 3

    np.random.seed(12)
    reference = _quantus_call(q.LocalLipschitzEstimate(nr_samples=k, perturb_std=0.2, **KWARGS), model, x, y)
    delta = _quantus_noise(lambda rng, size: rng.normal(loc=0.0, scale=0.2, size=size), 3, k, (1, 8, 8), 12)
    ours = ev.local_lipschitz(model, x, "saliency", target=y, perturbations=delta, batch_size=4, normalize=False)
    np.testing.assert_allclose(ours.local_lipschitz.numpy(), reference, rtol=1e-4)
    assert len(set(np.round(reference, 4))) == 3


def test_continuity_equals_quantus_translations():
    q = quantus()
    model, x, y = _case()
    x = torch.randn(3, 1, 8, 12, generator=torch.Generator().manual_seed(6))
    metric = q.Continuity(nr_steps=4, disable_warnings=True, display_progressbar=False, normalise=False)  # abs
    model.eval()
    reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                       explain_func=_quantus_explain("saliency"), explain_func_kwargs={}, channel_first=True,
                       device="cpu")
    ours = ev.continuity(model, x, "saliency", target=y, steps=4, batch_size=5, normalize=False)
    assert ours.shifts.tolist() == [-6, 0, 6, 12]
    np.testing.assert_allclose(ours.continuity.numpy(), reference, rtol=1e-4)
    assert len(set(np.round(reference, 4))) == 3


def test_translations_shift_the_last_axis_and_fill_with_the_minimum_3d():
    x = torch.arange(2 * 1 * 2 * 2 * 4, dtype=torch.float32).view(2, 1, 2, 2, 4)
    deltas, shifts = ev.quantus_robustness.translations(x, steps=3)
    assert shifts.tolist() == [-1, 2, 5]  # dx = 9 // 3; the last one is past the width
    moved = x[:, None] + deltas
    assert torch.equal(moved[0, 0, 0, 0, 0], torch.tensor([1.0, 2.0, 3.0, 0.0]))  # left by one, min 0 fills
    assert torch.equal(moved[1, 1, 0, 1, 1], torch.tensor([16.0, 16.0, 28.0, 29.0]))  # right by two, min 16
    assert torch.equal(moved[1, 2], torch.full((1, 2, 2, 4), 16.0))
    with pytest.raises(ValueError, match=r"steps = 10 exceeds 2 W \+ 1 = 9 translations"):
        ev.quantus_robustness.translations(x, steps=10)


def test_robustness_known_answers_3d():
    """Saliency of a linear model is |W| wherever x is; 'input x gradient' of it moves by exactly W * delta."""
    weights = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(7))
    model = WeightMapClassifier(weights)
    x = torch.randn(2, 1, 4, 4, 4, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(ev.avg_sensitivity(model, x, "saliency", target=1, samples=4, radius=0.5).avg_sensitivity,
                          torch.zeros(2), atol=1e-6)
    assert torch.allclose(ev.local_lipschitz(model, x, "saliency", target=1, samples=4).local_lipschitz,
                          torch.zeros(2), atol=1e-6)
    # Input x gradient of a linear model: Phi(x) = x * W[c], so Phi(x + d) - Phi(x) = d * W[c], and the
    # Lipschitz ratio is ||d * W[c]|| / ||d||; a perturbation on one voxel v gives |W[c, v]|.
    delta = torch.zeros(2, 2, 1, 4, 4, 4)
    delta[:, 0, 0, 1, 2, 3] = 0.3
    delta[:, 1, 0, 3, 0, 1] = -0.2
    ratios = ev.local_lipschitz(model, x, "input_x_gradient", target=1, perturbations=delta,
                                normalize=False).ratios
    expected = torch.tensor([abs(weights[1, 1, 2, 3]), abs(weights[1, 3, 0, 1])])
    assert torch.allclose(ratios, expected.expand(2, 2), atol=1e-5)
    reference = (x[:, 0] * weights[1]).reshape(2, -1).norm(dim=1)
    sens = ev.avg_sensitivity(model, x, "input_x_gradient", target=1, perturbations=delta, normalize=False)
    assert torch.allclose(sens.avg_sensitivity, ((0.3 * expected[0] + 0.2 * expected[1]) / 2 / reference).float(),
                          atol=1e-5)
    # Same seed and radius as max-sensitivity: the same draws, so the mean never exceeds the maximum.
    cnn = small_cnn(3, classes=2, seed=8)
    average = ev.avg_sensitivity(cnn, x, "saliency", samples=3, radius=0.2, seed=1, batch_size=2)
    largest = ev.max_sensitivity(cnn, x, "saliency", samples=3, radius=0.2, seed=1, batch_size=6)
    assert torch.allclose(average.sensitivities, largest.sensitivities, atol=1e-5)
    assert torch.allclose(average.avg_sensitivity, largest.sensitivities.mean(dim=1), atol=1e-6)
    # Continuity of input x gradient: shifting x by t moves Phi by (x_t - x) * W, so each ratio is
    # || |x_t W| - |x W| ||_1 / ||x_t - x||_2, computed here from the shifted inputs directly.
    continuity = ev.continuity(model, x, "input_x_gradient", target=1, steps=3, normalize=False)
    deltas, _ = ev.quantus_robustness.translations(x, steps=3)
    shifted = x[:, None, 0] + deltas[:, :, 0]
    change = ((shifted * weights[1]).abs() - (x[:, None, 0] * weights[1]).abs()).abs().reshape(2, 3, -1).sum(-1)
    expected = change / (deltas.reshape(2, 3, -1).norm(dim=-1) + 1e-9)
    assert torch.allclose(continuity.ratios, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        ev.local_lipschitz(model, x, "saliency", noise_std=0)


def test_robustness_metrics_through_evaluate():
    model = small_cnn(2, classes=3, seed=4)
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(9))
    maps = explain(model, x, "saliency")
    names = ["avg_sensitivity", "local_lipschitz", "continuity"]
    assert not set(names) & set(ev.MAP_ONLY_METRICS)
    columns = ev.evaluate(model, x, maps, metrics=names, method="saliency", seed=3,
                          metric_options={"continuity": {"steps": 4}, "local_lipschitz": {"samples": 3}})
    assert columns["avg_sensitivity"] == pytest.approx(
        ev.avg_sensitivity(model, x, "saliency", seed=3).avg_sensitivity.tolist())
    assert columns["local_lipschitz"] == pytest.approx(
        ev.local_lipschitz(model, x, "saliency", seed=3, samples=3).local_lipschitz.tolist())
    assert columns["continuity"] == pytest.approx(ev.continuity(model, x, "saliency", steps=4).continuity.tolist())
    with pytest.raises(ValueError, match=r"metric 'continuity' needs method"):
        ev.evaluate(model, x, maps, metrics=["continuity"])
