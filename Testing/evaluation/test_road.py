"""ROAD and its noisy linear imputation: against Quantus in 2D, a sparse solve and known answers in 3D."""
import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import SegmentationTarget
from XAIExplainLib.evaluation.imputation import neighbour_kernel, noisy_linear_imputation

from Testing.evaluation.metric_models import (RegionLogit, WeightMapClassifier, WeightMapSegmenter, quantus,
                                              region_mask, small_cnn)
from Testing.support.models import assert_as_found, snapshot


def _removed(shape, fraction, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) < fraction


# --- imputation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_imputation_equals_quantus_noisy_linear_imputation_2d(fraction):
    q = quantus()
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    removed = _removed((2, 12, 10), fraction, seed=2)
    ours = noisy_linear_imputation(x, removed, noise=0.0)
    for i in range(2):
        indices = torch.nonzero(removed[i].flatten()).flatten().numpy()
        reference = q.functions.perturb_func.noisy_linear_imputation(x[i].numpy(), indices, noise=0.0)
        np.testing.assert_allclose(ours[i].numpy(), reference, rtol=0, atol=1e-9)
    assert torch.equal(ours[~removed.unsqueeze(1).expand_as(x)], x[~removed.unsqueeze(1).expand_as(x)])


def _sparse_reference_3d(volume: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The imputation written out as a scipy sparse system over the 26-neighbourhood."""
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    shape = volume.shape
    unknown = np.flatnonzero(removed)
    index = -np.ones(volume.size, dtype=int)
    index[unknown] = np.arange(unknown.size)
    a = lil_matrix((unknown.size, unknown.size))
    b = np.zeros(unknown.size)
    flat = volume.ravel()
    for row, voxel in enumerate(unknown):
        z, y, x = np.unravel_index(voxel, shape)
        total = 0.0
        for dz in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    moved = abs(dz) + abs(dy) + abs(dx)
                    p = (z + dz, y + dy, x + dx)
                    if not moved or not all(0 <= c < s for c, s in zip(p, shape)):
                        continue
                    weight = 1.0 / moved
                    total += weight
                    neighbour = np.ravel_multi_index(p, shape)
                    if index[neighbour] >= 0:
                        a[row, index[neighbour]] -= weight
                    else:
                        b[row] += weight * flat[neighbour]
        a[row, row] += total
    result = flat.copy()
    result[unknown] = spsolve(a.tocsc(), b)
    return result.reshape(shape)


def test_imputation_3d_equals_a_sparse_solve_and_keeps_linear_ramps():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 6, 7, 5, dtype=torch.float64, generator=generator)
    removed = _removed((2, 6, 7, 5), 0.6, seed=4)
    ours = noisy_linear_imputation(x, removed, noise=0.0)
    for i in range(2):
        reference = _sparse_reference_3d(x[i, 0].numpy(), removed[i].numpy())
        np.testing.assert_allclose(ours[i, 0].numpy(), reference, atol=1e-8)
    # A linear ramp is harmonic for a symmetric stencil: an interior hole is filled exactly.
    z, y, xx = torch.meshgrid(*(torch.arange(9, dtype=torch.float64),) * 3, indexing="ij")
    ramp = (0.5 * z - 0.25 * y + 2.0 * xx + 1.0)[None, None]
    hole = torch.zeros(1, 9, 9, 9, dtype=torch.bool)
    hole[0, 2:7, 1:8, 3:6] = True
    filled = noisy_linear_imputation(ramp.clone(), hole, noise=0.0)
    assert torch.allclose(filled, ramp, atol=1e-8)
    assert neighbour_kernel(3).sum().item() == pytest.approx(6 + 12 / 2 + 8 / 3)


def test_imputation_noise_is_seeded_gaussian_and_only_on_removed_voxels():
    x = torch.zeros(3, 2, 20, 20, 20)
    removed = _removed((3, 20, 20, 20), 0.5, seed=5)
    noisy = noisy_linear_imputation(x, removed, noise=0.3, seeds=torch.tensor([7, 8, 7]))
    assert noisy.dtype == x.dtype
    assert torch.equal(noisy[0][:, ~removed[0]], torch.zeros_like(noisy[0][:, ~removed[0]]))
    assert float(noisy[0][:, removed[0]].std()) == pytest.approx(0.3, rel=0.05)
    again = noisy_linear_imputation(x, removed, noise=0.3, seeds=torch.tensor([7, 8, 7]))
    assert torch.equal(noisy, again)
    assert not torch.equal(noisy[0], noisy[1])


def test_imputation_errors():
    x = torch.ones(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"copies \[1\] remove every voxel"):
        noisy_linear_imputation(x, torch.stack([torch.zeros(4, 4), torch.ones(4, 4)]).bool())
    with pytest.raises(ValueError, match=r"removed must have shape \(2, 4, 4\)"):
        noisy_linear_imputation(x, torch.zeros(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="noise is a standard deviation"):
        noisy_linear_imputation(x, torch.zeros(2, 4, 4, dtype=torch.bool), noise=-1)


# --- ROAD ---------------------------------------------------------------------------------------

def test_road_morf_accuracy_equals_quantus_road_2d():
    q = quantus()
    generator = torch.Generator().manual_seed(6)
    model = WeightMapClassifier(torch.randn(3, 14, 14, generator=generator))
    x = torch.randn(6, 1, 14, 14, dtype=torch.float64, generator=generator)
    maps = torch.rand(6, 14, 14, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        y = model(x.float()).argmax(1)
    percentiles = [5, 20, 40, 60, 80, 95]
    curve = ev.road_curve(model, x, maps, target=y, order="morf", percentiles=percentiles, noise=0.0)
    metric = q.ROAD(percentages=percentiles, noise=0.0, disable_warnings=True, display_progressbar=False)
    model.eval()  # Quantus refuses a model in training mode
    reference = metric(model=model, x_batch=x.float().numpy(), y_batch=y.numpy(),
                       a_batch=maps[:, None].float().numpy(), channel_first=True, device="cpu")
    assert list(reference) == percentiles
    np.testing.assert_allclose(curve.kept.mean(dim=0).numpy(), [reference[p] for p in percentiles], atol=1e-12)
    assert 0 < float(curve.kept.mean()) < 1  # the comparison saw both outcomes


@pytest.mark.parametrize("dims", [2, 3])
def test_road_known_answer_for_a_region_reading_classifier(dims):
    """Constant background c, a bump in the region R the model reads.

    MoRF with the region as map removes R first; once all of R is gone the
    imputation from the constant background is c exactly, so the logit is
    scale * |R| * c.  LeRF removes background first and the logit is that of
    the original image while R survives.
    """
    region = region_mask(dims)
    inside, voxels = int(region.sum()), region.numel()
    model = RegionLogit(region, scale=1.0 / inside, offset=0.5)
    c = 0.2
    x = torch.full((2, 1) + region.shape, c)
    x[0, 0][region] += 1.0
    x[1, 0][region] += 2.0
    state = snapshot(model)
    maps = region.float().expand(2, *region.shape) + 0.01 * torch.rand((2,) + region.shape)
    morf_p = [p for p in (40, 60, 80, 95) if int(voxels * p / 100) >= inside]
    lerf_p = [p for p in (10, 30, 50, 70) if int(voxels * p / 100) <= voxels - inside]
    x_before, maps_before = x.clone(), maps.clone()
    morf = ev.road_curve(model, x, maps, target=0, order="morf", percentiles=morf_p, noise=0.0)
    lerf = ev.road_curve(model, x, maps, target=0, order="lerf", percentiles=lerf_p, noise=0.0)
    assert torch.equal(x, x_before) and torch.equal(maps, maps_before)
    removed_p = torch.softmax(torch.tensor([c, 0.5]), 0)[0].item()
    kept_p = torch.softmax(torch.stack([x[:, 0][:, region].mean(1), torch.full((2,), 0.5)], 1), 1)[:, 0]
    assert torch.allclose(morf.scores, torch.full_like(morf.scores, removed_p), atol=1e-5)
    assert torch.allclose(lerf.scores, kept_p[:, None].expand_as(lerf.scores), atol=1e-6)
    assert torch.equal(morf.kept, torch.zeros_like(morf.kept))  # class 1 (logit 0.5) wins without the bump
    assert torch.equal(lerf.kept, torch.ones_like(lerf.kept))
    assert torch.allclose(morf.mean_score, torch.full((2,), removed_p), atol=1e-5)
    assert_as_found(model, state)


def test_road_segmentation_target_uses_the_frozen_region_3d():
    """Per-voxel segmenter: class-1 logit = x; imputing R from a constant background sets it to c."""
    region = region_mask(3)
    weights = torch.stack([torch.zeros(region.shape), torch.ones(region.shape)])
    model = WeightMapSegmenter(weights)
    c = -1.0
    x = torch.full((1, 1) + region.shape, c)
    x[0, 0][region] = 3.0
    target = SegmentationTarget(1, region=region)  # logits of class 1 summed over R
    maps = region.float()[None] + 0.01 * torch.rand((1,) + region.shape)
    inside = int(region.sum())
    p = 100 * (inside + 1) / region.numel()
    curve = ev.road_curve(model, x, maps, target=target, order="morf", percentiles=[p], noise=0.0,
                          activation=None)
    assert curve.kept is None and curve.accuracy is None
    assert curve.scores[0, 0].item() == pytest.approx(c * inside, abs=1e-4)
    untouched = ev.road_curve(model, x, maps, target=target, order="lerf", percentiles=[p], noise=0.0,
                              activation=None)
    assert untouched.scores[0, 0].item() == pytest.approx(3.0 * inside, abs=1e-4)


def test_road_is_deterministic_batch_independent_and_noisy():
    model = small_cnn(3, classes=2, seed=1)
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(2, 1, 6, 6, 6, generator=generator)
    maps = torch.rand(2, 6, 6, 6, generator=generator)
    one = ev.road_curve(model, x, maps, percentiles=[30, 70], noise=0.5, batch_size=1, seed=4)
    many = ev.road_curve(model, x, maps, percentiles=[30, 70], noise=0.5, batch_size=32, seed=4)
    assert torch.allclose(one.scores, many.scores, atol=1e-6)
    plain = ev.road_curve(model, x, maps, percentiles=[30, 70], noise=0.0, seed=4)
    assert not torch.allclose(one.scores, plain.scores)
    other_seed = ev.road_curve(model, x, maps, percentiles=[30, 70], noise=0.5, seed=5)
    assert not torch.allclose(one.scores, other_seed.scores)


def test_road_errors_and_evaluate_columns():
    region = region_mask(2)
    model = RegionLogit(region, scale=0.1)
    x = torch.rand(2, 1, 8, 8)
    maps = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match=r"must lie in \(0, 100\)"):
        ev.road_curve(model, x, maps, percentiles=[0, 50])
    with pytest.raises(ValueError, match="order must be one of"):
        ev.road_curve(model, x, maps, order="random")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        ev.road_curve(model, x, maps, batch_size=0)
    columns = ev.evaluate(model, x, maps, metrics=["road_morf", "road_lerf"], target=0,
                          metric_options={"road_morf": {"percentiles": (25, 75), "noise": 0.0}})
    assert set(columns) == {"road_morf", "road_morf_accuracy", "road_lerf", "road_lerf_accuracy"}
    direct = ev.road_curve(model, x, maps, target=0, percentiles=(25, 75), noise=0.0)
    assert columns["road_morf"] == pytest.approx(direct.mean_score.tolist())
    assert columns["road_morf_accuracy"] == pytest.approx(direct.accuracy.tolist())
    with pytest.raises(ValueError, match=r"metric_options names unknown metric\(s\) \['road'\]"):
        ev.evaluate(model, x, maps, metrics=["road_morf"], metric_options={"road": {}})
    with pytest.raises(ValueError, match=r"options for \['road_lerf'\], which are not requested"):
        ev.evaluate(model, x, maps, metrics=["road_morf"], metric_options={"road_lerf": {}})
    with pytest.raises(ValueError, match=r"\['deletion_auc'\] take theirs from evaluate's arguments"):
        ev.evaluate(model, x, maps, metrics=["deletion_auc"], metric_options={"deletion_auc": {"steps": 3}})
    with pytest.raises(TypeError, match="unexpected keyword argument 'percentile'"):
        ev.evaluate(model, x, maps, metrics=["road_morf"], metric_options={"road_morf": {"percentile": 3}})
