"""Efficient and smooth MPRT: Quantus on the same fully randomised model (2D), closed forms (3D)."""
import numpy as np
import pytest
import torch
from torch import nn

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import explain

from Testing.evaluation.metric_models import WeightMapClassifier, quantus
from Testing.evaluation.test_randomisation import _fixed_reset_cnn, _quantus_explain
from Testing.support.models import assert_as_found, snapshot

QUIET = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False,
         "return_aggregate": False}


@pytest.fixture(autouse=True)
def _threads(two_torch_threads):
    yield


def _problem():
    model = _fixed_reset_cnn().eval()  # its layers "randomise" to a fixed pattern, the same in both libraries
    x = torch.randn(3, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    return model, x, torch.tensor([0, 1, 2])


def test_discrete_entropy_equals_numpy_histogram_entropy():
    from scipy.stats import entropy

    generator = torch.Generator().manual_seed(0)
    maps = torch.cat([torch.randn(3, 12, 12, generator=generator), torch.rand(1, 12, 12, generator=generator).round(),
                      torch.full((1, 12, 12), 2.0)])
    for bins in (7, 100):
        reference = [entropy(np.histogram(m.numpy(), bins=bins)[0]) for m in maps]
        np.testing.assert_allclose(ev.discrete_entropy(maps, bins).numpy(), reference, atol=1e-12)
    assert float(ev.discrete_entropy(maps, 100)[-1]) == 0.0  # a constant map fills one bin


def test_emprt_equals_quantus():
    q = quantus()
    model, x, y = _problem()
    maps = explain(model, x, "saliency", target=y)
    state = snapshot(model)
    ours = ev.emprt(model, x, "saliency", target=y, maps=maps)
    assert_as_found(model, state)
    metric = q.EfficientMPRT(layer_order="bottom_up", skip_layers=True, complexity_func_kwargs={"n_bins": 100},
                             **QUIET)
    reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(),
                       explain_func=_quantus_explain("saliency"), explain_func_kwargs={}, channel_first=True,
                       device="cpu")
    np.testing.assert_allclose(ours.score.numpy(), reference, atol=1e-6)
    assert float(ours.score.abs().min()) > 1e-3  # randomising changed the maps' entropy


def test_smprt_equals_quantus_on_the_same_noise(monkeypatch):
    q = quantus()
    model, x, y = _problem()
    ours = ev.smprt(model, x, "saliency", target=y, samples=4, noise=0.2, seed=3)
    generator = torch.Generator().manual_seed(3)  # replay our draws: trained model's copies first, then random's

    def randn(*shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64).numpy()

    def quantus_explain(model, inputs, targets, **kwargs):
        return _quantus_explain("saliency")(model, inputs, targets)

    monkeypatch.setattr(np.random, "randn", randn)
    monkeypatch.setattr(q, "explain", quantus_explain)
    metric = q.SmoothMPRT(nr_samples=4, noise_magnitude=0.2, layer_order="bottom_up", skip_layers=True,
                          return_last_correlation=True, **QUIET)
    reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=ours.trained[:, None].numpy(),
                       explain_func=_quantus_explain("saliency"), explain_func_kwargs={}, channel_first=True,
                       device="cpu")
    np.testing.assert_allclose(ours.score.numpy(), reference, atol=1e-5)
    # The trained map is the mean of three noisy explanations and the clean one.
    clean = explain(model, x, "saliency", target=y)
    assert not torch.allclose(ours.trained, clean, atol=1e-3)


class _Scaled(nn.Module):
    """logit = s * (w . x): a layer whose randomisation scales the map but keeps its shape."""

    def __init__(self, weights):
        super().__init__()
        self.inner = WeightMapClassifier(weights)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.inner(x) * self.scale


def test_mprt_variants_known_answers_3d():
    """Randomising only a scale leaves the saliency map's ranking and histogram as they were: sMPRT 1, eMPRT 0;
    randomising the weights too replaces |w| by new weights: the correlation falls."""
    generator = torch.Generator().manual_seed(2)
    model = _Scaled(torch.randn(2, 4, 4, 4, generator=generator))
    x = torch.rand(2, 1, 4, 4, 4, generator=generator)
    state = snapshot(model)
    only_scale = ev.emprt(model, x, "saliency", target=0, layers=[""])
    torch.testing.assert_close(only_scale.score, torch.zeros(2), atol=1e-6, rtol=0)
    smooth = ev.smprt(model, x, "saliency", target=0, layers=[""], samples=3)
    torch.testing.assert_close(smooth.score, torch.ones(2), atol=1e-6, rtol=0)
    everything = ev.smprt(model, x, "saliency", target=0, samples=3)
    assert float(everything.score.max()) < 0.5
    assert_as_found(model, state)
    with pytest.raises(ValueError, match="noise is a fraction"):
        ev.smprt(model, x, "saliency", noise=-1.0)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        ev.smprt(model, x, "saliency", samples=0)
    with pytest.raises(ValueError, match=r"sample\(s\) \[0, 1\] is constant"):
        ev.emprt(model, x, "saliency", maps=torch.ones(2, 4, 4, 4))


def test_evaluate_runs_the_randomisation_sensitivity_and_sufficiency_metrics():
    model, x, y = _problem()
    maps = explain(model, x, "saliency", target=y)
    columns = ev.evaluate(model, x, maps, target=y, method="saliency", seed=2,
                          metrics=["emprt", "smprt", "sensitivity_n", "sufficiency"],
                          metric_options={"smprt": {"samples": 2}, "sensitivity_n": {"sizes": (4,), "runs": 6},
                                          "sufficiency": {"threshold": 0.9}})
    assert columns["emprt"] == pytest.approx(ev.emprt(model, x, "saliency", target=y, maps=maps, seed=2)
                                             .score.tolist(), abs=1e-6)
    assert columns["smprt"] == pytest.approx(ev.smprt(model, x, "saliency", target=y, samples=2, seed=2)
                                             .score.tolist(), abs=1e-6)
    assert columns["sensitivity_n"] == pytest.approx(
        ev.sensitivity_n(model, x, maps, target=y, sizes=(4,), runs=6, seed=2).score.tolist(), abs=1e-6)
    assert columns["sufficiency"] == pytest.approx(ev.sufficiency(model, x, maps, threshold=0.9).tolist())
    with pytest.raises(ValueError, match="metric 'emprt' needs method"):
        ev.evaluate(model, x, maps, metrics=["emprt"])
