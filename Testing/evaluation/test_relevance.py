"""Relevance mass and rank accuracy: Quantus on non-negative 2D maps, closed forms in 3D, the table callers."""
import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev

from Testing.evaluation.metric_models import quantus


def _maps_and_masks(dims, n=4, size=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand((n,) + (size,) * dims, generator=generator)
    masks = torch.zeros((n,) + (size,) * dims, dtype=torch.bool)
    for i in range(n):
        masks[(i,) + (slice(i, i + 4),) * dims] = True
    maps[masks] += 0.3 * torch.rand(int(masks.sum()), generator=generator)  # some, not all, signal inside
    return maps, masks


def test_relevance_mass_and_rank_equal_quantus_2d():
    q = quantus()
    maps, masks = _maps_and_masks(2)
    kwargs = dict(disable_warnings=True, display_progressbar=False, abs=False, normalise=False)
    arrays = dict(model=None, x_batch=maps[:, None].numpy(), y_batch=np.zeros(4, dtype=int),
                  a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy().astype(float), channel_first=True)
    mass = q.RelevanceMassAccuracy(**kwargs)(**arrays)
    rank = q.RelevanceRankAccuracy(**kwargs)(**arrays)
    np.testing.assert_allclose(ev.relevance_mass_accuracy(maps, masks).numpy(), mass, atol=1e-6)
    np.testing.assert_allclose(ev.relevance_rank_accuracy(maps, masks).numpy(), rank, atol=1e-12)
    assert len(set(np.round(rank, 6))) > 1


@pytest.mark.parametrize("dims", [2, 3])
def test_relevance_known_answers(dims):
    mask = torch.zeros((8,) * dims, dtype=torch.bool)
    mask[(slice(2, 5),) * dims] = True
    perfect = mask.float()[None]
    assert ev.relevance_rank_accuracy(perfect, mask).item() == 1.0
    assert ev.relevance_rank_accuracy(1 - perfect, mask).item() == 0.0
    assert ev.relevance_mass_accuracy(perfect, mask).item() == 1.0
    # Negative relevance is not mass (Arras et al. count positive relevance only).
    signed = perfect - 2.0 * (1 - perfect)
    assert ev.relevance_mass_accuracy(signed, mask).item() == 1.0
    # Half of the mask-sized top inside: the mask's first half plus as many outside voxels.
    k = int(mask.sum())
    inside, outside = torch.nonzero(mask.flatten()).flatten(), torch.nonzero(~mask.flatten()).flatten()
    half = torch.zeros(mask.numel())
    half[inside[: k // 2]] = 1.0
    half[outside[: k - k // 2]] = 1.0
    expected = (k // 2) / k
    assert ev.relevance_rank_accuracy(half.view(mask.shape)[None], mask).item() == pytest.approx(expected)
    # A constant map: ties broken by a seeded permutation, about the mask's volume fraction on average.
    flat = torch.ones((1,) + mask.shape)
    shares = [ev.relevance_rank_accuracy(flat, mask, seed=s).item() for s in range(40)]
    assert np.mean(shares) == pytest.approx(k / mask.numel(), abs=0.05)
    assert ev.relevance_rank_accuracy(flat, mask, seed=3).item() == ev.relevance_rank_accuracy(flat, mask,
                                                                                              seed=3).item()
    with pytest.raises(ValueError, match=r"mask is empty for sample\(s\) \[0\]"):
        ev.relevance_rank_accuracy(perfect, torch.zeros_like(mask))


def test_relevance_metrics_are_map_only_in_evaluate():
    maps, masks = _maps_and_masks(3, n=2, size=6)
    assert {"relevance_mass", "relevance_rank"} <= set(ev.MAP_ONLY_METRICS)
    columns = ev.evaluate(None, None, maps, mask=masks, metrics=["relevance_mass", "relevance_rank"])
    assert columns["relevance_mass"] == pytest.approx(ev.relevance_mass_accuracy(maps, masks).tolist())
    assert columns["relevance_rank"] == pytest.approx(ev.relevance_rank_accuracy(maps, masks).tolist())
    with pytest.raises(ValueError, match=r"metric 'relevance_rank' needs mask: pass mask="):
        ev.evaluate(None, None, maps, metrics=["relevance_rank"])
