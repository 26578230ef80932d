"""Average drop and increase in confidence: a naive Grad-CAM++-paper computation and closed forms, 2D and 3D."""
import pytest
import torch

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import SegmentationTarget

from Testing.evaluation.metric_models import RegionLogit, WeightMapSegmenter, region_mask, small_cnn
from Testing.support.models import assert_as_found, snapshot


def _naive(model, x, maps, classes):
    """Chattopadhay et al.: E = x * normalised map; Y, O softmax scores of the class."""
    low = maps.flatten(1).min(1).values.view(-1, *([1] * (maps.dim() - 1)))
    high = maps.flatten(1).max(1).values.view(-1, *([1] * (maps.dim() - 1)))
    weight = ((maps - low) / (high - low)).unsqueeze(1)
    with torch.no_grad():
        y = torch.softmax(model(x).double(), 1)[torch.arange(len(x)), classes]
        o = torch.softmax(model(x * weight).double(), 1)[torch.arange(len(x)), classes]
    return torch.clamp(y - o, min=0) / y, (o > y).double()


@pytest.mark.parametrize("dims", [2, 3])
def test_confidence_change_equals_the_paper_formula_on_a_cnn(dims):
    model = small_cnn(dims, classes=3, seed=2).train()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn((5, 1) + (8,) * dims, generator=generator)
    maps = torch.rand((5,) + (8,) * dims, generator=generator)
    state = snapshot(model)
    classes = torch.tensor([0, 1, 2, 0, 1])
    drop, increase = _naive(model.eval(), x, maps, classes)
    model.train()
    change = ev.confidence_change(model, x, maps, target=classes)
    assert torch.allclose(change.drop.double(), drop, atol=1e-6)
    assert torch.equal(change.increase.double(), increase)
    assert_as_found(model, state)
    columns = ev.evaluate(model, x, maps, target=classes, metrics=["average_drop", "increase_in_confidence"])
    assert columns["average_drop"] == pytest.approx(drop.tolist(), abs=1e-6)
    assert columns["increase_in_confidence"] == increase.tolist()


@pytest.mark.parametrize("dims", [2, 3])
def test_confidence_known_answers_for_a_region_reading_classifier(dims):
    region = region_mask(dims)
    inside, outside = int(region.sum()), int((~region).sum())
    x = torch.ones((2, 1) + region.shape)
    perfect = region.float().expand(2, *region.shape)
    # Class 0 reads the mean of the region: keeping the region keeps the confidence exactly.
    model = RegionLogit(region, scale=1.0 / inside)
    assert ev.average_drop(model, x, perfect).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    p = torch.sigmoid(torch.tensor(1.0)).item()
    assert ev.average_drop(model, x, 1 - perfect).tolist() == pytest.approx([(p - 0.5) / p] * 2, abs=1e-6)
    assert ev.increase_in_confidence(model, x, 1 - perfect).tolist() == [0.0, 0.0]
    # Voxels outside count against class 0: masking them out raises the confidence.
    model = RegionLogit(region, scale=1.0 / inside, outside=1.0 / outside)
    assert ev.increase_in_confidence(model, x, perfect).tolist() == [1.0, 1.0]
    assert ev.average_drop(model, x, perfect).tolist() == [0.0, 0.0]


def test_confidence_of_a_segmentation_target_sums_its_probability():
    region = region_mask(3)
    weights = torch.stack([torch.zeros(region.shape), torch.full(region.shape, 2.0)])
    model = WeightMapSegmenter(weights)
    x = torch.ones((1, 1) + region.shape)
    maps = region.float()[None]
    change = ev.confidence_change(model, x, 1 - maps, target=SegmentationTarget(1, region="all"))
    # Y: every voxel has class-1 probability sigmoid(2); O: the region is zeroed, probability 0.5 there.
    hi, inside, voxels = torch.sigmoid(torch.tensor(2.0)).item(), int(region.sum()), region.numel()
    assert change.original.item() == pytest.approx(voxels * hi, rel=1e-6)
    assert change.explained.item() == pytest.approx((voxels - inside) * hi + inside * 0.5, rel=1e-6)
    assert change.drop.item() == pytest.approx(inside * (hi - 0.5) / (voxels * hi), rel=1e-6)
