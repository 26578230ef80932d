"""Faithfulness correlation: Quantus on the same subsets (2D), exact answers of linear models (3D)."""
import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import SegmentationTarget

from Testing.evaluation.metric_models import WeightMapClassifier, WeightMapSegmenter, quantus
from Testing.support.models import assert_as_found, snapshot


def _recording_choice(monkeypatch):
    """Record the subsets Quantus draws (np.random.choice per run and sample) to reuse them exactly."""
    drawn = []
    choice = np.random.choice

    def recording(*args, **kwargs):
        result = choice(*args, **kwargs)
        drawn.append(result)
        return result

    monkeypatch.setattr(np.random, "choice", recording)
    return drawn


@pytest.mark.parametrize("softmax", [False, True])
def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(softmax, monkeypatch):
    q = quantus()
    generator = torch.Generator().manual_seed(0)
    model = WeightMapClassifier(torch.randn(3, 10, 10, generator=generator)).eval()
    x = torch.rand(4, 1, 10, 10, generator=generator)
    maps = torch.rand(4, 10, 10, generator=generator)
    y = torch.tensor([0, 1, 2, 1])
    metric = q.FaithfulnessCorrelation(nr_runs=30, subset_size=12, perturb_baseline="black", return_aggregate=False,
                                       disable_warnings=True, display_progressbar=False,
                                       similarity_func=q.similarity_func.correlation_pearson)
    drawn = _recording_choice(monkeypatch)
    reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(),
                       channel_first=True, device="cpu", softmax=softmax)
    assert len(drawn) == 30 * 4  # run-major: the 4 samples of run 0, then run 1, ...
    subsets = torch.from_numpy(np.array(drawn).reshape(30, 4, 12).transpose(1, 0, 2).copy())
    ours = ev.faithfulness_correlation(model, x, maps, target=y, activation="softmax" if softmax else None,
                                       subsets=subsets, baseline="min")  # Quantus's "black": each image's minimum
    np.testing.assert_allclose(ours.correlation.numpy(), reference, atol=1e-5)


def test_faithfulness_correlation_of_linear_models_is_exact_3d():
    """For f(x) = w . x and a zero baseline the drop of a subset is sum_S w x: the map w * x correlates 1."""
    generator = torch.Generator().manual_seed(1)
    weights = torch.randn(2, 6, 6, 6, generator=generator)
    model = WeightMapClassifier(weights)
    state = snapshot(model)
    x = torch.rand(3, 1, 6, 6, 6, generator=generator) + 0.5
    exact = weights[0] * x[:, 0]
    good = ev.faithfulness_correlation(model, x, exact, target=0, activation=None, runs=40, subset_size=0.1)
    assert torch.allclose(good.correlation, torch.ones(3), atol=1e-5)
    assert torch.allclose(good.attribution_sums, good.score_drops, atol=1e-4)
    shifted = ev.faithfulness_correlation(model, x, 3.0 * exact + 7.0, target=0, activation=None, runs=40,
                                          subset_size=0.1)
    assert torch.allclose(shifted.correlation, torch.ones(3), atol=1e-5)
    worst = ev.faithfulness_correlation(model, x, -exact, target=0, activation=None, runs=40, subset_size=0.1)
    assert torch.allclose(worst.correlation, -torch.ones(3), atol=1e-5)
    constant = ev.faithfulness_correlation(model, x, torch.ones(3, 6, 6, 6), target=0, runs=10, subset_size=5)
    assert constant.correlation.tolist() == [0.0, 0.0, 0.0]
    assert_as_found(model, state)


def test_faithfulness_correlation_segmentation_target_3d():
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(2, 5, 5, 5, generator=generator)
    model = WeightMapSegmenter(weights)
    x = torch.rand(2, 1, 5, 5, 5, generator=generator)
    region = torch.zeros(5, 5, 5, dtype=torch.bool)
    region[1:4] = True
    target = SegmentationTarget(1, region=region)  # class-1 logits summed over the region
    exact = weights[1] * x[:, 0] * region
    result = ev.faithfulness_correlation(model, x, exact, target=target, activation=None, runs=30, subset_size=10)
    assert torch.allclose(result.correlation, torch.ones(2), atol=1e-5)


def test_faithfulness_correlation_seeds_batches_and_errors():
    generator = torch.Generator().manual_seed(3)
    model = WeightMapClassifier(torch.randn(2, 8, 8, generator=generator))
    x = torch.rand(2, 1, 8, 8, generator=generator)
    maps = torch.rand(2, 8, 8, generator=generator)
    a = ev.faithfulness_correlation(model, x, maps, runs=20, subset_size=6, seed=4, batch_size=3)
    b = ev.faithfulness_correlation(model, x, maps, runs=20, subset_size=6, seed=4, batch_size=64)
    assert torch.equal(a.subsets, b.subsets) and torch.allclose(a.correlation, b.correlation, atol=1e-6)
    assert not torch.equal(a.subsets, ev.faithfulness_correlation(model, x, maps, runs=20, subset_size=6,
                                                                  seed=5).subsets)
    with pytest.raises(ValueError, match="subset_size must be between 1 and 63 voxels"):
        ev.faithfulness_correlation(model, x, maps, subset_size=64)
    with pytest.raises(ValueError, match=r"subset_size as a float is a fraction"):
        ev.faithfulness_correlation(model, x, maps, subset_size=1.5)
    with pytest.raises(ValueError, match=r"subsets must have shape \(N=2, runs, k\)"):
        ev.faithfulness_correlation(model, x, maps, subsets=torch.zeros(3, 4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"subsets hold voxel indices outside 0..63"):
        ev.faithfulness_correlation(model, x, maps, subsets=torch.full((2, 4, 2), 64))
    columns = ev.evaluate(model, x, maps, metrics=["faithfulness_correlation"], seed=4,
                          metric_options={"faithfulness_correlation": {"runs": 20, "subset_size": 6}})
    assert columns["faithfulness_correlation"] == pytest.approx(a.correlation.tolist(), abs=1e-5)
