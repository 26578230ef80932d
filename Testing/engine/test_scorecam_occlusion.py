"""Occlusion against captum, and Score-CAM against a one-channel-at-a-time loop."""
import pytest
import torch
import torch.nn.functional as F

import XAIExplainLib as xai
from XAIExplainLib.engine import batching
from XAIExplainLib.engine.methods.occlusion import occlusion_windows
from Testing.support.models import classifier, small_inputs as inputs, pearson, unet

captum_attr = pytest.importorskip("captum.attr")


@pytest.mark.parametrize("dims,size,window,stride", [(2, 16, 4, 2), (3, 8, 4, 2)])
def test_occlusion_agrees_with_captum(dims, size, window, stride, monkeypatch):
    model = classifier(dims, seed=3)
    x = inputs(dims, n=2, seed=4, size=size)
    ours = xai.explain(model, x, "occlusion", target=1, window=window, stride=stride, baseline=0.25,
                       normalize=False)
    theirs = captum_attr.Occlusion(model).attribute(
        x, sliding_window_shapes=(1,) + (window,) * dims, strides=(1,) + (stride,) * dims, baselines=0.25,
        target=1)[:, 0]
    assert pearson(ours, theirs) >= 0.999
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5 * float(theirs.abs().max()))
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", x[0].numel() * 2 * 5)  # 5 windows per forward
    chunked = xai.explain(model, x, "occlusion", target=1, window=window, stride=stride, baseline=0.25,
                          normalize=False)
    assert torch.allclose(chunked, ours, atol=1e-6)


def test_occlusion_of_a_segmentation_region_with_per_axis_windows():
    model = unet(2, seed=2)
    x = inputs(2, n=1, seed=1)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[5:11, 5:11] = True
    target = xai.SegmentationTarget(1, region=mask, activation="sigmoid")
    ours = xai.explain(model, x, "occlusion", target=target, window=(4, 2), stride=(2, 2), normalize=False)

    def score(inp):
        return (torch.sigmoid(model(inp)[:, 1]) * mask).flatten(1).sum(1, keepdim=True)
    theirs = captum_attr.Occlusion(score).attribute(x, sliding_window_shapes=(1, 4, 2), strides=(1, 2, 2),
                                                    baselines=0.0, target=0)[:, 0]
    assert pearson(ours, theirs) >= 0.999


def test_occlusion_covers_trailing_voxels_a_plain_grid_would_miss():
    windows = occlusion_windows((10, 7), (4, 3), (4, 3))
    covered = torch.zeros(10, 7)
    for window in windows:
        covered[window] += 1
    assert (covered > 0).all()
    assert [w[0].start for w in windows[::3]] == [0, 4, 6]
    model = classifier(2)
    maps = xai.explain(model, inputs(2, size=10), "occlusion", window=4, stride=4, normalize=False)
    assert torch.isfinite(maps).all()


def _naive_scorecam(model, x, activation, score):
    """One masked forward per channel, the definition literally."""
    n, k = activation.shape[:2]
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    weights = torch.zeros(n, k)
    with torch.no_grad():
        for c in range(k):
            upsampled = F.interpolate(activation[:, c:c + 1], size=x.shape[2:], mode=mode, align_corners=False)
            low = upsampled.flatten(1).amin(1).reshape((-1,) + (1,) * (x.dim() - 1))
            high = upsampled.flatten(1).amax(1).reshape(low.shape)
            mask = torch.where(high > low, (upsampled - low) / (high - low), torch.zeros_like(upsampled))
            weights[:, c] = score(model(x * mask))
    shape = weights.shape + (1,) * (activation.dim() - 2)
    layer_map = torch.relu((weights.reshape(shape) * activation).sum(1))
    return F.interpolate(layer_map[:, None], size=x.shape[2:], mode=mode, align_corners=False)[:, 0]


def _activation(model, x, layer):
    captured = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.update(a=o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return captured["a"]


@pytest.mark.parametrize("dims", [2, 3])
def test_scorecam_equals_one_masked_forward_per_channel(dims, monkeypatch):
    model = classifier(dims, seed=7)
    x = inputs(dims, n=2, seed=2)
    classes = torch.tensor([0, 2])
    reference = _naive_scorecam(model, x, _activation(model, x, "features.3"),
                                lambda out: torch.softmax(out, 1)[torch.arange(2), classes])
    ours = xai.explain(model, x, "scorecam", target=classes.tolist(), layer="features.3", normalize=False)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", x[0].numel() * 2 * 5)  # 5 channels per forward
    chunked = xai.explain(model, x, "scorecam", target=classes.tolist(), layer="features.3", normalize=False)
    assert torch.allclose(chunked, ours, atol=1e-6)


def test_scorecam_of_a_segmentation_target_uses_the_target_score():
    model = unet(2, seed=4)
    x = inputs(2, n=2, seed=3)
    target = xai.SegmentationTarget(2, region="all", activation="sigmoid")
    reference = _naive_scorecam(model, x, _activation(model, x, "dec2.0"),
                                lambda out: torch.sigmoid(out[:, 2]).flatten(1).sum(1))
    ours = xai.explain(model, x, "scorecam", target=target, layer="dec2.0", normalize=False)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))


def test_occlusion_options_are_checked():
    model = classifier(2)
    x = inputs(2)
    with pytest.raises(ValueError, match="window must be a positive int or 2 positive ints"):
        xai.explain(model, x, "occlusion", window=(2, 2, 2))
    with pytest.raises(ValueError, match="stride must be a positive int"):
        xai.explain(model, x, "occlusion", stride=0)
