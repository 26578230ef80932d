"""Pixel flipping, region perturbation, selectivity, IROF, monotonicity (and its correlation), faithfulness
estimate: Quantus on the same 2D inputs with a fixed baseline, and hand-computed answers of linear models in 3D."""
import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev

from Testing.evaluation.metric_models import WeightMapClassifier, quantus
from Testing.support.models import assert_as_found, snapshot

QUIET = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False,
         "return_aggregate": False}


@pytest.fixture(autouse=True)
def _threads_and_trapz(two_torch_threads, monkeypatch):
    """Quantus 0.6 integrates with ``np.trapz``, which NumPy 2 renamed ``np.trapezoid``: give it the new name."""
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    yield


def _problem(size: int = 8, n: int = 4, seed: int = 0):
    """A linear 3-class model, inputs whose minimum is 0 in every sample (Quantus's "black" = our "min"), maps."""
    generator = torch.Generator().manual_seed(seed)
    model = WeightMapClassifier(torch.randn(3, size, size, generator=generator)).eval()
    x = torch.rand(n, 1, size, size, generator=generator) + 0.1
    x[:, :, 0, 0] = 0.0
    maps = torch.randn(n, size, size, generator=generator)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 1, 0][:n])
    return model, x, maps, y


def _run(metric, model, x, maps, y, softmax, **call):
    return metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(),
                  channel_first=True, device="cpu", softmax=softmax, **call)


def _activation(softmax: bool):
    return "softmax" if softmax else None


@pytest.mark.parametrize("softmax", [False, True])
def test_pixel_flipping_equals_quantus(softmax):
    q = quantus()
    model, x, maps, y = _problem()
    curves = _run(q.PixelFlipping(features_in_step=4, perturb_baseline="black", **QUIET), model, x, maps, y, softmax)
    areas = _run(q.PixelFlipping(features_in_step=4, perturb_baseline="black", return_auc_per_sample=True, **QUIET),
                 model, x, maps, y, softmax)
    ours = ev.pixel_flipping(model, x, maps, target=y, features_in_step=4, baseline="min",
                             activation=_activation(softmax), batch_size=7)
    np.testing.assert_allclose(ours.curve.numpy(), np.array(curves), atol=1e-5)
    np.testing.assert_allclose(ours.score.numpy(), np.array(areas) / 16, atol=1e-5)  # 64 voxels / 4 per step


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_equals_quantus(order):
    q = quantus()
    model, x, maps, y = _problem()
    metric = q.RegionPerturbation(patch_size=2, regions_evaluation=10, order=order, perturb_baseline="black", **QUIET)
    reference = np.array(_run(metric, model, x, maps, y, True))
    ours = ev.region_perturbation(model, x, maps, target=y, patch_size=2, regions=10, order=order, baseline="min",
                                  activation="softmax")
    np.testing.assert_allclose(ours.curve.numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(ours.score.numpy(), reference.sum(axis=1) / 11, atol=1e-5)  # AOPC, k = 0..10


def test_selectivity_equals_quantus_with_a_patch_cut_by_the_border():
    q = quantus()
    model, x, maps, y = _problem(size=10)  # 10 = 3 * 3 + 1: the last row and column of patches are cut
    reference = np.array(_run(q.Selectivity(patch_size=3, perturb_baseline="black", **QUIET), model, x, maps, y,
                              False))
    ours = ev.selectivity(model, x, maps, target=y, patch_size=3, baseline="min", activation=None)
    assert ours.curve.shape == (4, 16)
    np.testing.assert_allclose(ours.curve.numpy(), reference, atol=1e-4)
    areas = np.trapezoid(reference, axis=1)
    np.testing.assert_allclose(ours.score.numpy(), areas / 16, atol=1e-4)


def test_irof_equals_quantus_on_its_slic_superpixels():
    q = quantus()
    from quantus.helpers.utils import get_superpixel_segments

    model, x, maps, y = _problem(size=16, n=3)
    x = x + 0.5 * (torch.arange(16.0) / 16).view(1, 1, 1, 16)  # some structure for SLIC to follow
    x[:, :, 0, 0] = 0.0
    metric = q.IROF(perturb_baseline="black", **QUIET)
    for i in range(3):  # one sample per call: Quantus pads the curves of a batch to its longest
        reference = _run(metric, model, x[i:i + 1], maps[i:i + 1], y[i:i + 1], True)
        segments = get_superpixel_segments(img=np.moveaxis(x[i].numpy(), 0, -1).astype("double"),
                                           segmentation_method="slic")
        ours = ev.irof(model, x[i:i + 1], maps[i:i + 1], target=y[i:i + 1], segments=torch.from_numpy(segments),
                       baseline="min", activation="softmax")
        count = len(np.unique(segments))
        assert int(ours.steps[0]) == count > 4
        # |score| reaches 4e4 here, where float32 holds about 7 digits: the same steps summed in another order
        # (Quantus' numpy vs our torch) differ by ~1e-2, a wrong step or segment by whole units
        np.testing.assert_allclose(float(ours.score[0]), reference[0] / count, rtol=1e-6, atol=1e-5)


def _restore_perturbation(x_flat):
    """A Quantus perturb_func that puts the image's values back (Quantus 0.6 re-inserts the baseline)."""

    def restore(arr, indices, **kwargs):
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = x_flat[rows, indices]
        return out

    return restore


def test_monotonicity_equals_quantus_restoring_the_image():
    q = quantus()
    weights = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(5)) + 0.1
    weights[0, 2, 3] = weights[0, 5, 5] = -1.0  # class 0 falls when these two voxels come back
    model = WeightMapClassifier(weights).eval()
    _, x, maps, _ = _problem(n=6)
    x[::2, :, 2, 3] = 0.0
    x[::2, :, 5, 5] = 0.0  # ... unless they are 0 in the image (even samples)
    y = torch.zeros(6, dtype=torch.long)
    x_flat = x.reshape(6, -1).numpy()
    metric = q.Monotonicity(features_in_step=2, perturb_baseline="black", perturb_func=_restore_perturbation(x_flat),
                            **QUIET)
    reference = _run(metric, model, x, maps, y, False)
    ours = ev.monotonicity(model, x, maps, target=0, features_in_step=2, baseline="min", activation=None)
    assert ours.score.tolist() == [float(v) for v in reference]
    assert ours.score[::2].tolist() == [1.0, 1.0, 1.0] and 0.0 in ours.score[1::2].tolist()


@pytest.mark.parametrize("softmax", [False, True])
def test_monotonicity_correlation_equals_quantus(softmax):
    q = quantus()
    model, x, maps, y = _problem()
    metric = q.MonotonicityCorrelation(features_in_step=2, nr_samples=1, perturb_baseline="black", **QUIET)
    reference = _run(metric, model, x, maps, y, softmax)
    ours = ev.monotonicity_correlation(model, x, maps, target=y, features_in_step=2, baseline="min",
                                       activation=_activation(softmax))
    np.testing.assert_allclose(ours.score.numpy(), reference, atol=1e-5)


@pytest.mark.parametrize("softmax", [False, True])
def test_faithfulness_estimate_equals_quantus(softmax):
    q = quantus()
    model, x, maps, y = _problem()
    metric = q.FaithfulnessEstimate(features_in_step=2, perturb_baseline="black", **QUIET)
    reference = _run(metric, model, x, maps, y, softmax)
    ours = ev.faithfulness_estimate(model, x, maps, target=y, features_in_step=2, baseline="min",
                                    activation=_activation(softmax))
    np.testing.assert_allclose(ours.score.numpy(), reference, atol=1e-5)


def _linear_3d(seed: int = 7):
    """f = w . x in 3D with a zero baseline: removing a set S lowers the logit by sum_S w x, exactly."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(2, 4, 4, 4, generator=generator)
    x = torch.rand(2, 1, 4, 4, 4, generator=generator) + 0.5
    return WeightMapClassifier(weights), x, weights[0] * x[:, 0]


def test_pixel_flipping_and_selectivity_known_answers_3d():
    model, x, contribution = _linear_3d()
    state = snapshot(model)
    flipped = ev.pixel_flipping(model, x, contribution, target=0, features_in_step=8, activation=None)
    # The logit after step k: f(x) minus the 8 (k + 1) largest contributions.
    ordered = torch.sort(contribution.reshape(2, -1), dim=1, descending=True).values
    logit = contribution.reshape(2, -1).sum(dim=1, keepdim=True)
    expected = logit - ordered.cumsum(dim=1)[:, 7::8]
    torch.testing.assert_close(flipped.curve, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(flipped.score, torch.trapezoid(expected, dim=1) / 8, atol=1e-4, rtol=0)
    # Patches of 2 x 2 x 2: removing all eight in order of their sums ends at f = 0 (bias 0, baseline 0).
    patches = ev.selectivity(model, x, contribution, target=0, patch_size=2, activation=None)
    sums = contribution.reshape(2, 2, 2, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(2, 8, 8).sum(dim=2)
    expected = logit - torch.sort(sums, dim=1, descending=True).values.cumsum(dim=1)
    torch.testing.assert_close(patches.curve, expected, atol=1e-4, rtol=0)
    assert torch.allclose(patches.curve[:, -1], torch.zeros(2), atol=1e-4)
    region = ev.region_perturbation(model, x, contribution, target=0, patch_size=2, regions=3, activation=None)
    drops = torch.sort(sums, dim=1, descending=True).values.cumsum(dim=1)[:, :3]
    torch.testing.assert_close(region.curve, drops, atol=1e-4, rtol=0)
    torch.testing.assert_close(region.score, drops.sum(dim=1) / 4, atol=1e-4, rtol=0)
    assert_as_found(model, state)


def test_irof_known_answer_3d_and_a_given_segmentation():
    """Two segments (halves of the volume) and f = sum of x: removing the half with the higher mean map first."""
    model = WeightMapClassifier(torch.ones(1, 4, 4, 4))
    x = torch.ones(1, 1, 4, 4, 4)
    x[:, :, :, :, 2:] = 3.0  # right half holds 3/4 of the score
    segments = torch.zeros(4, 4, 4, dtype=torch.long)
    segments[:, :, 2:] = 7
    good = torch.zeros(1, 4, 4, 4)
    good[:, :, :, 2:] = 1.0
    # Right half first: relative scores 1/4 then 0; Quantus's area over the curve 2 - (1/4 + 0) / 2, per segment.
    high = ev.irof(model, x, good, target=0, segments=segments, baseline=0.0, activation=None)
    torch.testing.assert_close(high.curve, torch.tensor([[0.25, 0.0]]))
    assert float(high.score) == pytest.approx((2 - 0.125) / 2)
    low = ev.irof(model, x, 1.0 - good, target=0, segments=segments, baseline=0.0, activation=None)
    torch.testing.assert_close(low.curve, torch.tensor([[0.75, 0.0]]))
    assert float(low.score) == pytest.approx((2 - 0.375) / 2)
    assert float(low.score) < float(high.score)
    # Without segments IROF uses the patches: 2 x 2 x 2 cubes are the same as labelling them by hand.
    generator = torch.Generator().manual_seed(9)
    maps = torch.rand(1, 4, 4, 4, generator=generator)
    cubes = (torch.arange(4) // 2).view(4, 1, 1) * 4 + (torch.arange(4) // 2).view(1, 4, 1) * 2 \
        + (torch.arange(4) // 2).view(1, 1, 4)
    by_hand = ev.irof(model, x, maps, target=0, segments=cubes * 3 + 1, activation=None)
    patches = ev.irof(model, x, maps, target=0, patch_size=2, activation=None)
    torch.testing.assert_close(patches.curve, by_hand.curve)
    assert patches.steps.tolist() == [8]


def test_monotonicity_and_correlations_known_answers_3d():
    model, x, contribution = _linear_3d(8)
    # Restoring voxels adds w_v x_v to the logit: monotone exactly when every contribution after the first is >= 0.
    positive = WeightMapClassifier(model.weight.abs())
    assert ev.monotonicity(positive, x, contribution.abs(), target=0, activation=None).score.tolist() == [1.0, 1.0]
    assert ev.monotonicity(model, x, contribution, target=0, activation=None).score.tolist() == [0.0, 0.0]
    # Removing voxel v alone drops the logit by w_v x_v: the exact map correlates 1, its negative -1.
    estimate = ev.faithfulness_estimate(model, x, contribution, target=0, activation=None)
    torch.testing.assert_close(estimate.score, torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(estimate.responses, estimate.attribution_sums, atol=1e-4, rtol=0)
    assert torch.allclose(ev.faithfulness_estimate(model, x, -contribution, target=0, activation=None).score,
                          -torch.ones(2), atol=1e-5)
    # Its squared relative change (w_v x_v / f)^2 ranks the voxels as |w_v x_v| does: Spearman 1.
    correlation = ev.monotonicity_correlation(model, x, contribution.abs(), target=0, activation=None)
    torch.testing.assert_close(correlation.score, torch.ones(2), atol=1e-5, rtol=0)


def test_removal_metrics_refuse_bad_options():
    model, x, maps, _ = _problem()
    with pytest.raises(ValueError, match="features_in_step must be a positive int"):
        ev.pixel_flipping(model, x, maps, features_in_step=0)
    with pytest.raises(ValueError, match=r"features_in_step \(65\) exceeds the 64 voxels"):
        ev.faithfulness_estimate(model, x, maps, features_in_step=65)
    with pytest.raises(ValueError, match="order must be one of"):
        ev.region_perturbation(model, x, maps, order="best")
    with pytest.raises(ValueError, match=r"patch_size \(9, 9\) is larger than the image \(8, 8\)"):
        ev.selectivity(model, x, maps, patch_size=9)
    with pytest.raises(ValueError, match="one positive int per spatial axis"):
        ev.selectivity(model, x, maps, patch_size=(2, 2, 2))
    with pytest.raises(TypeError, match="segments must hold integer labels"):
        ev.irof(model, x, maps, segments=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="at least two segments"):
        ev.irof(model, x, maps, segments=torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="target score of sample"):
        ev.irof(WeightMapClassifier(torch.zeros(1, 8, 8)), x, maps, target=0, activation=None, patch_size=4)


def test_removal_metrics_do_not_depend_on_batching_and_reach_evaluate():
    model, x, maps, y = _problem()
    a = ev.region_perturbation(model, x, maps, target=y, patch_size=2, regions=5, batch_size=3)
    b = ev.region_perturbation(model, x, maps, target=y, patch_size=2, regions=5, batch_size=64)
    torch.testing.assert_close(a.curve, b.curve)
    shuffled = ev.region_perturbation(model, x, maps, target=y, patch_size=2, regions=16, order="random", seed=1)
    assert torch.allclose(shuffled.curve[:, -1], ev.region_perturbation(  # all 16 patches gone: any order ends alike
        model, x, maps, target=y, patch_size=2, regions=16, order="morf").curve[:, -1], atol=1e-6)
    assert not torch.allclose(shuffled.curve, ev.region_perturbation(
        model, x, maps, target=y, patch_size=2, regions=16, order="random", seed=2).curve)
    columns = ev.evaluate(model, x, maps, target=y,
                          metrics=["pixel_flipping", "region_perturbation", "selectivity", "irof", "monotonicity",
                                   "monotonicity_correlation", "faithfulness_estimate"],
                          metric_options={"pixel_flipping": {"features_in_step": 8},
                                          "region_perturbation": {"patch_size": 2, "regions": 5},
                                          "selectivity": {"patch_size": 4}, "irof": {"patch_size": 4},
                                          "monotonicity": {"features_in_step": 8},
                                          "monotonicity_correlation": {"features_in_step": 8},
                                          "faithfulness_estimate": {"features_in_step": 8}})
    assert columns["region_perturbation"] == pytest.approx(a.score.tolist(), abs=1e-6)
    assert columns["pixel_flipping"] == pytest.approx(
        ev.pixel_flipping(model, x, maps, target=y, features_in_step=8).score.tolist(), abs=1e-6)
    assert all(len(values) == 4 for values in columns.values())
