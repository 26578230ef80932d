"""Sensitivity-n (the paper's definition, transcribed naively) and sufficiency (Quantus), 2D and 3D."""
import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev
from XAIExplainLib.evaluation.faithfulness_correlation import random_subsets
from XAIExplainLib.evaluation.sensitivity_n import DEFAULT_SIZES

from Testing.evaluation.metric_models import WeightMapClassifier, quantus, small_cnn


@pytest.fixture(autouse=True)
def _threads(two_torch_threads):
    yield


def _naive_sensitivity_n(model, x, maps, target, n, runs, seed):
    """Ancona et al.: per sample, Pearson over random n-sets of (map total, logit drop), one set at a time."""
    voxels = maps[0].numel()
    sets = random_subsets(x.shape[0], runs, n, voxels, seed)
    result = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            full = float(model(x[i:i + 1])[0, target])
            totals, drops = [], []
            for chosen in sets[i]:
                removed = x[i:i + 1].clone().reshape(1, 1, -1)
                removed[..., chosen] = 0.0
                drops.append(full - float(model(removed.view_as(x[i:i + 1]))[0, target]))
                totals.append(float(maps[i].reshape(-1)[chosen].sum()))
            result.append(np.corrcoef(totals, drops)[0, 1])
    return np.array(result)


def test_sensitivity_n_equals_the_papers_definition():
    # in float64: a correlation near 0 (sample 2 here, -2.4e-4) turns the float32 rounding of a batched
    # convolution against one-at-a-time ones (which differs between CPUs) into 1e-5 of difference
    model = small_cnn(2, seed=3).double().eval()
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(3, 1, 8, 8, generator=generator).double()
    maps = torch.rand(3, 8, 8, generator=generator).double()
    ours = ev.sensitivity_n(model, x, maps, target=1, sizes=(3, 0.25), runs=12, activation=None, seed=5)
    assert ours.sizes.tolist() == [3, 16]
    for column, (n, seed) in enumerate([(3, 5), (16, 6)]):
        reference = _naive_sensitivity_n(model, x, maps, 1, n, 12, seed)
        np.testing.assert_allclose(ours.correlation[:, column].numpy(), reference, atol=1e-10)
    torch.testing.assert_close(ours.score, ours.correlation.mean(dim=1))


def test_sensitivity_n_of_a_linear_model_is_one_for_every_n_3d():
    """f = w . x, baseline 0: removing any set drops the logit by the exact map w * x summed over it."""
    generator = torch.Generator().manual_seed(6)
    weights = torch.randn(2, 5, 5, 5, generator=generator)
    model = WeightMapClassifier(weights)
    x = torch.rand(2, 1, 5, 5, 5, generator=generator)
    exact = weights[1] * x[:, 0]
    result = ev.sensitivity_n(model, x, exact, target=1, runs=15, activation=None)
    assert result.correlation.shape == (2, len(DEFAULT_SIZES))
    torch.testing.assert_close(result.correlation, torch.ones_like(result.correlation), atol=1e-5, rtol=0)
    shuffled = exact.reshape(2, -1)[:, torch.randperm(125, generator=generator)].view_as(exact)
    assert float(ev.sensitivity_n(model, x, shuffled, target=1, runs=15, activation=None).score.max()) < 0.9
    with pytest.raises(ValueError, match="sizes must name at least one"):
        ev.sensitivity_n(model, x, exact, sizes=())


def _clustered_maps(n: int = 8, seed: int = 0):
    """Two groups of maps (a pattern plus noise each), so some maps cover others and some do not."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(2, 6, 6, generator=generator)
    group = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1][:n])
    return patterns[group] + 0.3 * torch.randn(n, 6, 6, generator=generator)


@pytest.mark.parametrize("threshold", [0.6, 0.8])
def test_sufficiency_equals_quantus(threshold):
    q = quantus()
    model = WeightMapClassifier(torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(1))).eval()
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    maps = _clustered_maps()
    metric = q.Sufficiency(threshold=threshold, abs=False, normalise=False, disable_warnings=True,
                           display_progressbar=False, return_aggregate=False)
    reference = metric(model=model, x_batch=x.numpy(), y_batch=np.zeros(8, dtype=int), a_batch=maps[:, None].numpy(),
                       channel_first=True, device="cpu")
    ours = ev.sufficiency(model, x, maps, threshold=threshold)
    np.testing.assert_allclose(ours.numpy(), np.asarray(reference), atol=1e-6)
    assert len(set(ours.tolist())) > 1  # the case is not degenerate


def test_sufficiency_known_answer_3d_and_constant_voxels():
    """Maps a, a, b, b (+ tiny noise): each covers only its twin; the twins' classes decide the score."""
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 3, 3, 3, generator=generator)
    maps = torch.stack([a, a, b, b]) + 1e-3 * torch.randn(4, 3, 3, 3, generator=generator)
    maps[:, 0, 0, 0] = 5.0  # the same in every map: no information, left out of the standardised distance
    predictions = torch.tensor([2, 2, 0, 1])
    for distance in ("seuclidean", "euclidean"):
        result = ev.sufficiency(None, None, maps, threshold=0.2, distance=distance, predictions=predictions)
        assert result.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert ev.sufficiency(None, None, maps, threshold=1.0, predictions=predictions).tolist() == \
        pytest.approx([1 / 3, 1 / 3, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least two samples"):
        ev.sufficiency(None, None, maps[:1], predictions=predictions[:1])
    with pytest.raises(ValueError, match="threshold is a distance relative"):
        ev.sufficiency(None, None, maps, threshold=2.0, predictions=predictions)
    with pytest.raises(ValueError, match="distance must be one of"):
        ev.sufficiency(None, None, maps, distance="cosine", predictions=predictions)
    segmenter = small_cnn(3)[:2]  # a conv layer: outputs (N, 4, *S), not classes
    with pytest.raises(ValueError, match=r"needs a classifier's output \(N, K\)"):
        ev.sufficiency(segmenter, torch.rand(4, 1, 3, 3, 3), maps)
