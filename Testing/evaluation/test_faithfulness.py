"""Model-based evaluation metrics (PP/EP/IP/RFA, deletion/insertion, sanity) and ``evaluate``.

The models here are built so that the right answer is known in closed form:
a classifier whose target logit is the sum of the input over a known region,
and a voxel-wise segmenter.  Perfect (= region), inverted and uniform maps are
checked in 2D and 3D.
"""
import json
import math

import pytest
import torch
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib import evaluation as ev


def region_mask(dims, size=8, low=2, high=6):
    mask = torch.zeros((size,) * dims, dtype=torch.bool)
    mask[(slice(low, high),) * dims] = True
    return mask


class RegionLogit(nn.Module):
    """logits = [scale * sum_in(x) - outside * sum_out(x), offset]: class 0 reads only the region."""

    def __init__(self, region, scale=1.0, outside=0.0, offset=0.0):
        super().__init__()
        self.register_buffer("region", region.float())
        self.scale, self.outside, self.offset = scale, outside, offset

    def forward(self, x):
        signal = x.sum(dim=1)
        inside = (signal * self.region).flatten(1).sum(1)
        outside = (signal * (1 - self.region)).flatten(1).sum(1)
        first = self.scale * inside - self.outside * outside
        return torch.stack([first, torch.full_like(first, self.offset)], dim=1)


class VoxelSegmenter(nn.Module):
    """Two-class segmenter: class-1 logit = gain * (x - 0.5) at every voxel, class 0 = 0."""

    def __init__(self, gain=4.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        logit = self.gain * (x[:, 0] - 0.5)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


class ChannelTarget:
    """Minimal segmentation target: the summed output of one class channel (engine's bind protocol)."""

    def __init__(self, class_index):
        self.class_index = class_index

    def bind(self, output):
        target = self

        class Bound:
            classes = torch.full((output.shape[0],), target.class_index, dtype=torch.long)

            @staticmethod
            def score(out, rows=None):
                return out[:, target.class_index].flatten(1).sum(1)

        return Bound()


def maps_for(region, n):
    perfect = region.float().expand(n, *region.shape).clone()
    return {"perfect": perfect, "inverted": 1.0 - perfect, "uniform": torch.full_like(perfect, 0.3)}


# --- prediction / image preserved, excess, relative foreground -----------------------------------

@pytest.mark.parametrize("dims", [2, 3])
def test_prediction_preserved_classifier_known_answers(dims):
    region = region_mask(dims)
    model = RegionLogit(region, scale=1.0 / region.sum().item())
    x = 0.5 + torch.rand((3, 2) + region.shape, generator=torch.Generator().manual_seed(0))
    p = torch.sigmoid(x.sum(1)[:, region].mean(1))  # softmax of [mean inside, 0]
    maps = maps_for(region, 3)
    perfect = ev.preservation(model, x, maps["perfect"])
    assert torch.allclose(perfect.prediction_preserved, torch.ones(3), atol=1e-6)
    assert torch.allclose(perfect.excess_prediction, torch.zeros(3), atol=1e-6)
    assert torch.allclose(perfect.original[:, 0], p, atol=1e-6)
    for name in ("inverted", "uniform"):  # the region is masked out: logit 0, probability 0.5
        pp = ev.prediction_preserved(model, x, maps[name])
        assert torch.allclose(pp, 0.5 / p, atol=1e-6), name
        assert torch.allclose(ev.excess_prediction(model, x, maps[name]), torch.zeros(3)), name
    share = region.float().mean().item()
    assert ev.image_preserved(maps["perfect"]).tolist() == pytest.approx([share] * 3)
    assert ev.image_preserved(maps["inverted"]).tolist() == pytest.approx([1 - share] * 3)
    assert ev.image_preserved(maps["uniform"]).tolist() == [0.0] * 3


@pytest.mark.parametrize("dims", [2, 3])
def test_excess_prediction_when_masking_raises_the_score(dims):
    region = region_mask(dims)
    inside, outside = region.sum().item(), (~region).sum().item()
    model = RegionLogit(region, scale=1.0 / inside, outside=1.0 / outside)
    x = torch.ones((2, 1) + region.shape)
    result = ev.preservation(model, x, maps_for(region, 2)["perfect"])
    p, p_masked = torch.sigmoid(torch.tensor(0.0)), torch.sigmoid(torch.tensor(1.0))
    assert torch.allclose(result.prediction_preserved, torch.ones(2))
    assert torch.allclose(result.excess_prediction, torch.full((2,), ((p_masked - p) / p).item()))


def test_preservation_freezes_the_target_and_uses_the_baseline():
    region = region_mask(2)
    inside = region.sum().item()
    model = RegionLogit(region, scale=1.0 / inside, offset=0.5)  # predicted class 0 (logit 1 > 0.5)
    x = torch.ones((1, 1) + region.shape)
    inverted = maps_for(region, 1)["inverted"]
    # Masked input: class 1 wins (0.5 > 0), but the score stays that of class 0.
    p = torch.softmax(torch.tensor([1.0, 0.5]), 0)[0]
    p_masked = torch.softmax(torch.tensor([0.0, 0.5]), 0)[0]
    assert ev.prediction_preserved(model, x, inverted).item() == pytest.approx((p_masked / p).item(), abs=1e-6)
    # Class 1 as an explicit target: masking raises its probability (excess), PP = 1.
    q, q_masked = 1 - p, 1 - p_masked
    assert ev.excess_prediction(model, x, inverted, target=1).item() == pytest.approx(((q_masked - q) / q).item())
    # With the image mean as baseline the region keeps its value 1: nothing is lost.
    assert ev.prediction_preserved(model, x, inverted, baseline="mean").item() == pytest.approx(1.0)
    # Sigmoid on each output independently.
    sig = ev.prediction_preserved(model, x, inverted, activation="sigmoid").item()
    assert sig == pytest.approx(0.5 / torch.sigmoid(torch.tensor(1.0)).item(), abs=1e-6)
    with pytest.raises(ValueError, match="zero or negative"):  # raw logits are not probabilities
        ev.prediction_preserved(model, -x, inverted, target=0, activation=None)
    with pytest.raises(ValueError, match="activation must be one of"):
        ev.prediction_preserved(model, x, inverted, activation="relu")


@pytest.mark.parametrize("dims", [2, 3])
def test_prediction_preserved_segmentation_all_voxels_and_frozen_region(dims):
    region = region_mask(dims)
    model = VoxelSegmenter(gain=4.0)
    x = region.float().expand(2, 1, *region.shape).clone()
    target = ChannelTarget(1)
    maps = maps_for(region, 2)
    perfect = ev.preservation(model, x, maps["perfect"], target=target)
    assert torch.allclose(perfect.prediction_preserved, torch.ones(2), atol=1e-6)
    assert perfect.original.shape == (2, *region.shape)
    hi, lo = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(-2.0)).item()
    r, v = region.sum().item(), region.numel()
    everywhere = ev.prediction_preserved(model, x, maps["inverted"], target=target)
    assert everywhere.tolist() == pytest.approx([v * lo / (r * hi + (v - r) * lo)] * 2, abs=1e-6)
    predicted = ev.prediction_preserved(model, x, maps["inverted"], target=target, region="predicted")
    assert predicted.tolist() == pytest.approx([lo / hi] * 2, abs=1e-6)
    given = ev.prediction_preserved(model, x, maps["inverted"], target=target, region=region)
    assert given.tolist() == pytest.approx(predicted.tolist())
    with pytest.raises(ValueError, match="does not match the model output"):
        ev.prediction_preserved(model, x, maps["inverted"], target=target, region=region[:3])
    with pytest.raises(ValueError, match="segmentation outputs"):
        classifier = RegionLogit(region)
        ev.prediction_preserved(classifier, x, maps["perfect"], region="predicted")


@pytest.mark.parametrize("dims", [2, 3])
def test_relative_foreground_known_answers(dims):
    region = region_mask(dims)
    maps = maps_for(region, 2)
    assert ev.relative_foreground(maps["perfect"], region).tolist() == [1.0, 1.0]
    assert ev.relative_foreground(maps["inverted"], region).tolist() == [-1.0, -1.0]
    assert ev.relative_foreground(maps["uniform"], region).tolist() == [0.0, 0.0]
    half = 0.5 * maps["perfect"] + 0.5  # normalised: 1 inside, 0 outside -> 1
    assert ev.relative_foreground(half, region).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="outside the mask"):
        ev.relative_foreground(maps["perfect"], torch.ones_like(region))


# --- deletion / insertion ----------------------------------------------------------------------

def _areas(r, v):
    """Exact trapezoid areas of the region-sum score when the region goes first or last."""
    f = r / v
    first = r * f / 2
    last = r * (1 - f) + r * f / 2
    return first, last


@pytest.mark.parametrize("dims", [2, 3])
def test_deletion_and_insertion_auc_known_answers(dims):
    region = region_mask(dims)
    r, v = region.sum().item(), region.numel()
    model = RegionLogit(region)
    x = torch.ones((2, 1) + region.shape)
    maps = maps_for(region, 2)
    steps = v // 8  # every step moves 8 voxels: region boundaries fall on steps
    first, last = _areas(r, v)
    options = dict(steps=steps, activation=None)
    assert ev.deletion_auc(model, x, maps["perfect"], **options).tolist() == pytest.approx([first] * 2)
    assert ev.deletion_auc(model, x, maps["inverted"], **options).tolist() == pytest.approx([last] * 2)
    assert ev.insertion_auc(model, x, maps["perfect"], **options).tolist() == pytest.approx([last] * 2)
    assert ev.insertion_auc(model, x, maps["inverted"], **options).tolist() == pytest.approx([first] * 2)
    curve = ev.perturbation_curve(model, x, maps["perfect"], mode="deletion", **options)
    assert curve.fractions[0] == 0 and curve.fractions[-1] == 1 and curve.scores.shape == (2, steps + 1)
    assert curve.scores[:, 0].tolist() == [r, r] and curve.scores[:, -1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("dims", [2, 3])
def test_deletion_on_a_segmenter_follows_the_summed_class_probability(dims):
    region = region_mask(dims)
    r, v = region.sum().item(), region.numel()
    x = region.float().expand(1, 1, *region.shape).clone()
    perfect = maps_for(region, 1)["perfect"]
    curve = ev.perturbation_curve(VoxelSegmenter(4.0), x, perfect, target=ChannelTarget(1), steps=v // 8)
    hi, lo = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(-2.0)).item()
    # Every deleted region voxel drops from hi to lo; background voxels stay at lo.
    first, _ = _areas(r, v)
    assert curve.scores[0, 0].item() == pytest.approx(r * hi + (v - r) * lo, rel=1e-6)
    assert curve.scores[0, -1].item() == pytest.approx(v * lo, rel=1e-6)
    assert curve.auc.item() == pytest.approx(v * lo + (hi - lo) * first, rel=1e-6)


def test_uniform_map_deletes_in_random_order_not_index_order():
    region = region_mask(2, size=32, low=0, high=16)  # the top-left quarter: first in index order
    r, v = region.sum().item(), region.numel()
    model = RegionLogit(region)
    x = torch.ones((1, 1) + region.shape)
    uniform = torch.zeros((1,) + region.shape)
    auc = ev.deletion_auc(model, x, uniform, steps=16, activation=None).item()
    assert auc == pytest.approx(r / 2, rel=0.03)  # expected value of a random order
    again = ev.deletion_auc(model, x, uniform, steps=16, activation=None).item()
    assert again == auc  # seeded
    first, _ = _areas(r, v)
    assert abs(auc - first) > 0.2 * r


def test_perturbation_freezes_the_target_and_batches_consistently():
    region = region_mask(3)
    r = region.sum().item()
    model = RegionLogit(region, offset=r / 2)  # class 0 predicted; deleting the region makes class 1 win
    x = torch.ones((3, 1) + region.shape)
    maps = torch.rand((3,) + region.shape, generator=torch.Generator().manual_seed(2))
    small = ev.perturbation_curve(model, x, maps, steps=8, activation=None, batch_size=1)
    large = ev.perturbation_curve(model, x, maps, steps=8, activation=None, batch_size=100)
    assert torch.equal(small.scores, large.scores)
    assert small.scores[:, -1].tolist() == [0.0] * 3  # class 0 logit, not the winning class 1
    probabilities = ev.perturbation_curve(model, x, maps, steps=8, mode="insertion")
    assert bool(((probabilities.scores >= 0) & (probabilities.scores <= 1)).all())
    assert bool(((probabilities.auc >= 0) & (probabilities.auc <= 1)).all())


def test_baselines():
    x = torch.arange(8.0).reshape(1, 2, 2, 2)
    assert ev.perturbation.baseline_like(x, 0.5).unique().tolist() == [0.5]
    assert ev.perturbation.baseline_like(x, "mean")[0, :, 0, 0].tolist() == [1.5, 5.5]
    assert ev.perturbation.baseline_like(x, "min")[0, :, 0, 0].tolist() == [0.0, 4.0]
    assert torch.equal(ev.perturbation.baseline_like(x, torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))[0, :, 1, 1],
                       torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="mean"):
        ev.perturbation.baseline_like(x, "blur")
    with pytest.raises(ValueError, match="does not broadcast"):
        ev.perturbation.baseline_like(x, torch.ones(3))


# --- sanity check ---------------------------------------------------------------------------------

class TwoPath(nn.Module):
    """A CNN whose head is registered before the backbone, plus an auxiliary branch that adds 0."""

    def __init__(self, dims=2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.head = nn.Linear(8, 3)
        self.aux = nn.Linear(1, 3)
        self.features = nn.Sequential(conv(1, 8, 3, padding=1), nn.ReLU(), conv(8, 8, 3, padding=1), nn.ReLU())

    def forward(self, x):
        aux = self.aux(x.flatten(2).mean(2))
        features = self.features(x)
        return self.head(features.flatten(2).mean(2)) + 0.0 * aux


def test_rank_correlation_known_answers_and_ties_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    m = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(3))
    assert ev.sanity.rank_correlation(m, m).tolist() == pytest.approx([1.0, 1.0])
    assert ev.sanity.rank_correlation(m, -m).tolist() == pytest.approx([-1.0, -1.0])
    assert ev.sanity.rank_correlation(m, m ** 3 + 5).tolist() == pytest.approx([1.0, 1.0])
    assert ev.sanity.rank_correlation(m, torch.zeros_like(m)).tolist() == [0.0, 0.0]
    a, b = torch.round(m * 4), torch.round(torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(4)) * 3)
    ours = ev.sanity.rank_correlation(a, b)
    for i in range(2):
        assert ours[i].item() == pytest.approx(stats.spearmanr(a[i].flatten(), b[i].flatten())[0], abs=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_sanity_randomization_cascade(dims):
    torch.manual_seed(0)
    model = TwoPath(dims).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand((2, 1) + (12,) * dims, generator=torch.Generator().manual_seed(5))
    assert ev.sanity.parameterized_layers(model, x) == ["aux", "features.0", "features.2", "head"]
    result = ev.sanity_randomization(model, x, "gradcam", layer="features.2")
    assert result.layers == ["head", "features.2", "features.0", "aux"]
    assert result.correlation.shape == (4, 2)
    # Randomising the head changes what Grad-CAM weights; randomising the layer itself too.
    assert bool((result.correlation[:3] < 0.9).all()), result.correlation
    # The auxiliary branch adds 0 to the output: randomising it alone changes nothing.
    unused = ev.sanity_randomization(model, x, "gradcam", layer=model.features[2], layers=["aux"])
    assert unused.layers == ["aux"] and unused.correlation[0].tolist() == pytest.approx([1.0, 1.0])
    # Deterministic, and the caller's model is left exactly as it was.
    again = ev.sanity_randomization(model, x, "gradcam", layer="features.2")
    assert torch.equal(again.correlation, result.correlation)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="own no parameters"):
        ev.sanity_randomization(model, x, "gradcam", layer="features.2", layers=["features.1"])


# --- evaluate -----------------------------------------------------------------------------------

def test_evaluate_returns_plain_per_sample_columns():
    region = region_mask(2)
    model = RegionLogit(region, scale=1.0 / region.sum().item())
    x = torch.ones((2, 1) + region.shape)
    maps = maps_for(region, 2)["perfect"]
    maps[1] = 1.0 - maps[1]  # sample 1 gets the inverted map
    results = ev.evaluate(model, x, maps, mask=region)
    assert set(results) == {
        "dice_best", "dice_best_threshold", "dice_otsu", "dice_otsu_threshold", "pointing_game",
        "energy_pointing_game", "specificity", "sensitivity", "specificity_threshold",
        "prediction_preserved", "excess_prediction", "image_preserved", "relative_foreground",
        "deletion_auc", "insertion_auc",
    }
    assert all(isinstance(v, list) and len(v) == 2 and all(type(f) is float for f in v) for v in results.values())
    json.dumps(results)
    assert results["dice_best"] == [1.0, 0.0]
    assert results["pointing_game"] == [1.0, 0.0]
    assert results["relative_foreground"] == [1.0, -1.0]
    assert results["specificity"] == [1.0, 0.0]
    p = torch.sigmoid(torch.tensor(1.0)).item()
    assert results["prediction_preserved"] == pytest.approx([1.0, 0.5 / p])
    assert results["deletion_auc"][0] < results["deletion_auc"][1]
    assert results["insertion_auc"][0] > results["insertion_auc"][1]


def test_evaluate_map_only_and_errors():
    region = region_mask(3)
    maps = maps_for(region, 1)["perfect"]
    assert set(ev.evaluate(None, None, maps)) == {"image_preserved"}
    results = ev.evaluate(None, None, maps, mask=region, metrics=["pointing_game", "energy_pointing_game"],
                          spacing=(2.0, 1.0, 1.0), tolerance_mm=1.0)
    assert results == {"pointing_game": [1.0], "energy_pointing_game": [1.0]}
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['roc_auc'\]; valid metrics: dice_sweep, "):
        ev.evaluate(None, None, maps, mask=region, metrics=["roc_auc"])
    with pytest.raises(ValueError, match="needs mask"):
        ev.evaluate(None, None, maps, metrics="dice_sweep")
    with pytest.raises(ValueError, match="needs model"):
        ev.evaluate(None, None, maps, metrics=["deletion_auc"])
    with pytest.raises(ValueError, match="needs method"):
        ev.evaluate(RegionLogit(region), torch.ones((1, 1) + region.shape), maps, metrics=["sanity_randomization"])


def test_evaluate_leaves_the_model_as_found_and_runs_the_sanity_check():
    torch.manual_seed(1)
    model = TwoPath(2).train()
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(6))
    maps = xai.explain(model, x, "gradcam", layer="features.2")
    mask = maps > 0.5
    results = ev.evaluate(model, x, maps, mask=mask, method="gradcam", layer="features.2", steps=4,
                          metrics=["prediction_preserved", "deletion_auc", "sanity_randomization", "dice_sweep"])
    assert set(results) >= {"sanity_spearman_top", "sanity_spearman_full", "prediction_preserved"}
    assert all(-1.0 <= v <= 1.0 for v in results["sanity_spearman_full"])
    assert results["dice_best"] == [1.0, 1.0]  # the mask is the map thresholded at 0.5
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_occlusion_estimate_of_used_voxels():
    region = region_mask(2, size=16, low=6, high=10)
    model = RegionLogit(region, scale=1.0 / region.sum().item())
    x = torch.ones((1, 1) + region.shape)
    maps = maps_for(region, 1)["perfect"]
    if "occlusion" not in xai.METHODS:
        with pytest.raises(ValueError, match="'occlusion' method"):
            ev.evaluate(model, x, maps, metrics=["specificity"], used_mask="occlusion")
        return
    small = {"window": 2, "stride": 1}  # windows small next to the 4 x 4 region the model reads
    used = ev.occlusion_usage_mask(model, x, **small)
    assert used.shape == (1, 16, 16) and used.dtype == torch.bool
    assert bool(used[0, 7:9, 7:9].all())  # occluding the region's centre always moves the score
    assert not used[0, :4].any() and not used[0, :, 13:].any()  # far from the region nothing moves it
    results = ev.evaluate(model, x, maps, metrics=["sensitivity", "specificity"], used_mask="occlusion",
                          occlusion_options=small)
    assert 0.0 <= results["specificity"][0] <= 1.0 and 0.0 <= results["sensitivity"][0] <= 1.0
    assert not math.isnan(results["specificity"][0])


def test_a_one_channel_sigmoid_segmenter_is_scored_with_sigmoid_not_a_softmax_over_one_channel():
    """evaluate defaulted to softmax: over one channel that is 1 everywhere, so PP was 1.0 whatever the map."""
    segmenter = nn.Conv2d(1, 1, 1).eval()
    with torch.no_grad():
        segmenter.weight.fill_(2.0)
        segmenter.bias.fill_(-1.0)
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2:4, 2:4] = 3.0
    dark = torch.zeros(1, 6, 6)
    dark[0, 0, 0] = 1.0  # keeps almost nothing of the object
    target = xai.SegmentationTarget(0, region="all", activation="sigmoid")
    columns = xai.evaluate(segmenter, x, dark, target=target, metrics=["prediction_preserved"])
    probability = torch.sigmoid(segmenter(x)).sum().item()
    masked = torch.sigmoid(segmenter(x * dark[:, None])).sum().item()
    assert columns["prediction_preserved"][0] == pytest.approx(min(probability, masked) / probability, rel=1e-6)
    assert columns["prediction_preserved"][0] < 0.9  # a softmax over the one channel gave exactly 1.0
    # "auto" without a target activation: one channel -> sigmoid as well
    auto = ev.preservation(segmenter, x, dark, target=xai.SegmentationTarget(0, region="all"))
    assert auto.prediction_preserved[0].item() == pytest.approx(columns["prediction_preserved"][0], rel=1e-6)
    with pytest.raises(ValueError, match="activation='softmax' over a single output channel is always 1"):
        ev.preservation(segmenter, x, dark, target=target, activation="softmax")
