"""AUC, top-k intersection, attribution localisation and focus: Quantus on 2D maps, hand-computed 3D answers."""
import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev

from Testing.evaluation.metric_models import quantus, small_cnn


def _maps_and_masks(dims, n=4, size=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randn((n,) + (size,) * dims, generator=generator)
    masks = torch.zeros((n,) + (size,) * dims, dtype=torch.bool)
    for i in range(n):
        masks[(i,) + (slice(i, i + 5),) * dims] = True
    maps[masks] += 0.8 * torch.rand(int(masks.sum()), generator=generator)  # some, not all, signal inside
    return maps, masks


def _quantus_arrays(maps, masks):
    return dict(model=None, x_batch=maps[:, None].numpy(), y_batch=np.zeros(len(maps), dtype=int),
                a_batch=maps[:, None].numpy().copy(), s_batch=masks[:, None].numpy().astype(float),
                channel_first=True)


KWARGS = dict(disable_warnings=True, display_progressbar=False)


def test_auc_top_k_and_attribution_localisation_equal_quantus_2d():
    q = quantus()
    maps, masks = _maps_and_masks(2)
    reference = q.AUC(**KWARGS)(**_quantus_arrays(maps, masks))
    np.testing.assert_allclose(ev.auc(maps, masks).numpy(), reference, atol=1e-6)
    for k, influence in ((7, False), (30, True)):
        reference = q.TopKIntersection(k=k, concept_influence=influence, **KWARGS)(**_quantus_arrays(maps, masks))
        np.testing.assert_allclose(ev.top_k_intersection(maps, masks, k=k, concept_influence=influence).numpy(),
                                   reference, atol=1e-6)
    reference = q.AttributionLocalisation(**KWARGS)(**_quantus_arrays(maps, masks))  # abs=True by default
    np.testing.assert_allclose(ev.attribution_localisation(maps, masks).numpy(), reference, atol=1e-6)
    clipped = q.AttributionLocalisation(abs=False, positive_attributions=True, **KWARGS)(**_quantus_arrays(maps, masks))
    np.testing.assert_allclose(ev.attribution_localisation(maps, masks, positive_only=True).numpy(), clipped,
                               atol=1e-6)
    assert len(set(np.round(reference, 4))) == 4 and not np.allclose(reference, clipped)


def test_auc_counts_ties_as_one_half_like_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    maps = torch.tensor([[[0.0, 1.0, 1.0], [2.0, 2.0, 0.0]], [[3.0, 3.0, 3.0], [3.0, 1.0, 3.0]]])
    masks = torch.tensor([[[0, 1, 0], [1, 0, 0]], [[1, 0, 0], [0, 0, 1]]], dtype=torch.bool)
    expected = [metrics.roc_auc_score(m.flatten().numpy(), a.flatten().numpy()) for a, m in zip(maps, masks)]
    assert ev.auc(maps, masks).tolist() == pytest.approx(expected)


def test_focus_equals_quantus_on_a_2d_mosaic():
    q = quantus()
    generator = torch.Generator().manual_seed(3)
    tiles = torch.randn(3, 4, 1, 5, 6, generator=generator)  # odd halves: the split is at size // 2
    x = ev.mosaic(tiles)
    assert x.shape == (3, 1, 10, 12)
    assert torch.equal(x[1, 0, :5, 6:], tiles[1, 1, 0]) and torch.equal(x[1, 0, 5:, :6], tiles[1, 2, 0])
    maps = torch.randn(3, 11, 13, generator=generator)
    flags = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]])
    model = small_cnn(2)
    reference = q.Focus(**KWARGS)(model=model, x_batch=torch.zeros(3, 1, 11, 13).numpy(), y_batch=np.zeros(3, int),
                                  a_batch=maps[:, None].numpy().copy(), custom_batch=flags.tolist(),
                                  channel_first=True, device="cpu")
    np.testing.assert_allclose(ev.focus(maps, flags).numpy(), reference, atol=1e-6)
    assert len(set(np.round(reference, 4))) == 3


@pytest.mark.parametrize("dims", [2, 3])
def test_localisation_known_answers(dims):
    mask = torch.zeros((6,) * dims, dtype=torch.bool)
    mask[(slice(1, 3),) * dims] = True
    inside, total = int(mask.sum()), mask.numel()
    perfect = mask.float()[None]
    assert ev.auc(perfect, mask).item() == 1.0
    assert ev.auc(1 - perfect, mask).item() == 0.0
    assert ev.auc(torch.ones_like(perfect), mask).item() == 0.5  # every pair tied
    # Inside voxels valued 1 except one at -1; outside 0: that one loses to all outside voxels.
    one_low = perfect.clone()
    one_low.view(-1)[torch.nonzero(mask.flatten())[0]] = -1.0
    assert ev.auc(one_low, mask).item() == pytest.approx((inside - 1) / inside)
    assert ev.top_k_intersection(perfect, mask, k=inside).item() == 1.0
    assert ev.top_k_intersection(perfect, mask, k=2 * inside).item() == 0.5
    assert ev.top_k_intersection(perfect, mask, k=inside, concept_influence=True).item() == pytest.approx(
        total / inside)
    signed = perfect - 3.0 * (1 - perfect)  # |Phi|: 1 inside, 3 outside
    expected = inside / (inside + 3.0 * (total - inside))
    assert ev.attribution_localisation(signed, mask).item() == pytest.approx(expected)
    assert ev.attribution_localisation(signed, mask, positive_only=True).item() == 1.0
    assert ev.attribution_localisation(torch.ones_like(perfect), mask, weighted=True).item() == pytest.approx(1.0)
    # Focus on a 2^dims mosaic: relevance 1 in tile 0, 3 in the last tile, nothing elsewhere.
    size = (4,) * dims
    maps = torch.zeros((1,) + size)
    maps[(0,) + (slice(0, 2),) * dims] = 1.0
    maps[(0,) + (slice(2, 4),) * dims] = 3.0
    maps[(0,) + (slice(0, 2),) * (dims - 1) + (slice(2, 4),)] = -5.0  # negative relevance is not counted
    flags = torch.zeros(1, 2 ** dims)
    flags[0, 0] = 1
    assert ev.focus(maps, flags).item() == pytest.approx(0.25)
    assert ev.focus(maps, flags.view(1, *(2,) * dims)).item() == pytest.approx(0.25)
    flags[0, -1] = 1
    assert ev.focus(maps, flags).item() == pytest.approx(1.0)
    volume_tiles = torch.arange(2 ** dims, dtype=torch.float32).view(1, 2 ** dims, 1, *(1,) * dims)
    assert ev.mosaic(volume_tiles).flatten().tolist() == list(range(2 ** dims))  # C order of the halves


def test_localisation_errors_are_specific():
    maps, masks = _maps_and_masks(2, n=2, size=6)
    with pytest.raises(ValueError, match=r"covers the whole image for sample\(s\) \[1\]"):
        ev.auc(maps, torch.stack([masks[0], torch.ones_like(masks[1])]))
    with pytest.raises(ValueError, match=r"k = 40 exceeds the 36 voxels of a map; choose k <= 36"):
        ev.top_k_intersection(maps, masks, k=40)
    with pytest.raises(ValueError, match=r"tiles must hold 4 flags per sample for 2D maps"):
        ev.focus(maps, torch.ones(2, 8))
    with pytest.raises(ValueError, match=r"tiles flag no tile of the target class for sample\(s\) \[0\]"):
        ev.focus(maps, torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"tiles has flags for 1 sample\(s\) but there are 2 maps"):
        ev.focus(maps, [[1, 0, 0, 0]])
    with pytest.raises(ValueError, match="a 3D mosaic has 8 tiles, got 4"):
        ev.mosaic(torch.zeros(1, 4, 1, 2, 2, 2))


def test_localisation_metrics_in_evaluate():
    maps, masks = _maps_and_masks(3, n=2, size=6)
    names = ["auc", "top_k_intersection", "attribution_localisation"]
    assert set(names) <= set(ev.MAP_ONLY_METRICS) and "focus" not in ev.MAP_ONLY_METRICS
    columns = ev.evaluate(None, None, maps, mask=masks, metrics=names + ["focus"],
                          metric_options={"focus": {"tiles": [[1] + [0] * 7, [0] * 7 + [1]]}})
    assert columns["auc"] == pytest.approx(ev.auc(maps, masks).tolist())
    # k defaults to Quantus's 1000, or the whole map when it is smaller (here 216 voxels).
    assert columns["top_k_intersection"] == pytest.approx(ev.top_k_intersection(maps, masks, k=216).tolist())
    assert columns["attribution_localisation"] == pytest.approx(ev.attribution_localisation(maps, masks).tolist())
    assert columns["focus"] == pytest.approx(ev.focus(maps, [[1] + [0] * 7, [0] * 7 + [1]]).tolist())
    with pytest.raises(ValueError, match=r"metric 'focus' needs tiles: pass metric_options=\{'focus'"):
        ev.evaluate(None, None, maps, metrics=["focus"])
