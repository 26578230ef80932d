"""Segmentation targets: regions, activations, frozen masks, defaults, volumes and errors."""
import numpy as np
import pytest
import torch
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.engine.targets.regions import largest_component
from Testing.support.models import small_inputs as inputs, unet


class MaskedLogitSum(nn.Module):
    """A 1-class 'classifier': the masked sum of one class's logits of a segmenter."""

    def __init__(self, segmenter, class_index, mask):
        super().__init__()
        self.unet, self.class_index, self.mask = segmenter, class_index, mask

    def forward(self, x):
        logits = self.unet(x)[:, self.class_index]
        return (logits * self.mask).flatten(1).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("dims", [2, 3])
def test_mask_region_gradcam_equals_gradcam_of_masked_sum_wrapper(dims):
    model = unet(dims, seed=3)
    x = inputs(dims, n=2)
    generator = torch.Generator().manual_seed(5)
    mask = torch.rand((2,) + x.shape[2:], generator=generator) > 0.6
    target = xai.SegmentationTarget(class_index=2, region=mask, activation="logits")
    ours = xai.explain(model, x, "gradcam", target=target, layer="dec2.0", normalize=False)
    wrapper = MaskedLogitSum(model, 2, mask.float())
    reference = xai.explain(wrapper, x, "gradcam", target=0, layer="unet.dec2.0", normalize=False)
    assert ours.abs().max() > 0
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-7)


def _bind(output, **kwargs):
    return xai.SegmentationTarget(**kwargs).bind(output)


def test_predicted_region_is_argmax_for_softmax_models_and_threshold_for_sigmoid_models():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, generator=generator)
    bound = _bind(logits, class_index=1)
    assert torch.equal(bound.region, logits.argmax(1) == 1)
    assert torch.allclose(bound.score(logits), (logits[:, 1] * (logits.argmax(1) == 1)).flatten(1).sum(1))
    single = logits[:, :1]  # a sigmoid model: one output channel
    bound = _bind(single, class_index=0, threshold=0.7)
    assert bound.prediction == "sigmoid"
    assert torch.equal(bound.region, torch.sigmoid(single[:, 0]) > 0.7)
    # multi-channel sigmoid models are recognised through the activation
    bound = _bind(logits, class_index=2, activation="sigmoid")
    assert torch.equal(bound.region, torch.sigmoid(logits[:, 2]) > 0.5)
    assert torch.allclose(bound.score(logits), (torch.sigmoid(logits[:, 2]) * bound.region).flatten(1).sum(1))


def test_all_softmax_threshold_and_voxel_regions():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, 6, generator=generator)
    probabilities = torch.softmax(logits, dim=1)
    bound = _bind(logits, class_index=1, region="all", activation="softmax")
    assert torch.allclose(bound.score(logits), probabilities[:, 1].flatten(1).sum(1))
    bound = _bind(logits, class_index=0, region="threshold", activation="softmax", threshold=0.4)
    assert torch.equal(bound.region, probabilities[:, 0] > 0.4)
    bound = _bind(logits, class_index=2, region=(1, 2, 3))
    assert torch.allclose(bound.score(logits), logits[:, 2, 1, 2, 3])
    # rows score perturbed copies against each sample's frozen region
    rows = torch.tensor([1, 0, 1])
    copies = logits[rows] + 1.0
    assert torch.allclose(bound.score(copies, rows), copies[:, 2, 1, 2, 3])


def test_largest_component_keeps_only_the_biggest_face_connected_blob():
    mask = torch.zeros(2, 7, 7, dtype=torch.bool)
    mask[0, 0, 0:3] = True  # 3 voxels
    mask[0, 2:7, 5] = True  # a snake of 5 + 4 = 9 voxels
    mask[0, 6, 1:5] = True
    mask[0, 3, 2] = True  # touches the snake only diagonally: its own component
    mask[1, 4, 4] = True
    expected = torch.zeros_like(mask)
    expected[0, 2:7, 5] = True
    expected[0, 6, 1:5] = True
    expected[1, 4, 4] = True
    assert torch.equal(largest_component(mask), expected)
    volume = torch.zeros(1, 5, 5, 5, dtype=torch.bool)
    volume[0, 0, 0, 0:2] = True
    volume[0, 1:5, 3, 3] = True  # a column through the slices
    keep = largest_component(volume)
    assert int(keep.sum()) == 4 and bool(keep[0, 2, 3, 3])


def test_largest_component_region_of_a_target():
    logits = torch.zeros(1, 2, 6, 6)
    logits[0, 1, 0, 0:2] = 5.0  # small blob of class 1
    logits[0, 1, 3:6, 3:6] = 5.0  # big blob of class 1
    bound = _bind(logits, class_index=1, region="largest_component")
    assert int(bound.region.sum()) == 9 and not bool(bound.region[0, 0, 0])


def test_plain_targets_on_a_segmenter_use_the_predicted_region():
    model = unet(2, seed=2)
    x = inputs(2, n=2)
    with torch.no_grad():
        prediction = model(x).argmax(1)
    counts = torch.stack([(prediction == c).flatten(1).sum(1) for c in range(3)], dim=1)
    counts[:, 0] = -1
    expected = counts.argmax(1)
    by_default = xai.explain(model, x, "gradcam", layer="dec1.0", normalize=False)
    explicit = xai.explain(model, x, "gradcam", target=xai.SegmentationTarget(class_index=expected.tolist()),
                           layer="dec1.0", normalize=False)
    assert torch.allclose(by_default, explicit)
    as_int = xai.explain(model, x, "gradcam", target=1, layer="dec1.0", normalize=False)
    as_target = xai.explain(model, x, "gradcam", target=xai.SegmentationTarget(1), layer="dec1.0", normalize=False)
    assert torch.allclose(as_int, as_target)


def test_empty_region_is_a_clear_error():
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 1] = 1.0  # class 1 everywhere
    message = "class 2 is predicted nowhere in this input; pick another class or give a region"
    with pytest.raises(ValueError, match=message):
        _bind(logits, class_index=2)
    with pytest.raises(ValueError, match="probability > 0.9"):
        _bind(logits, class_index=1, region="threshold", threshold=0.9)
    with pytest.raises(ValueError, match="region is empty"):
        _bind(logits, class_index=1, region=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no foreground class"):
        _bind(torch.stack([torch.ones(4, 4), torch.zeros(4, 4), torch.zeros(4, 4)])[None])


def test_bad_segmentation_targets_are_refused_with_what_is_accepted():
    logits = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="region must be one of"):
        xai.SegmentationTarget(1, region="biggest")
    with pytest.raises(TypeError, match="must be boolean"):
        xai.SegmentationTarget(1, region=torch.ones(4, 4))
    with pytest.raises(ValueError, match="activation must be one of"):
        xai.SegmentationTarget(1, activation="tanh")
    with pytest.raises(ValueError, match="threshold"):
        xai.SegmentationTarget(1, threshold=1.5)
    with pytest.raises(TypeError, match="class_index"):
        xai.SegmentationTarget(class_index=1.5)
    with pytest.raises(ValueError, match="mask has shape"):
        _bind(logits, class_index=1, region=torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="out of range"):
        _bind(logits, class_index=3, region="all")
    with pytest.raises(ValueError, match="segmentation output"):
        _bind(torch.zeros(2, 3), class_index=1)
    with pytest.raises(ValueError, match="over a single output channel is always 1"):
        _bind(torch.zeros(1, 1, 4, 4), class_index=0, activation="softmax", region="all")


def test_one_channel_rules_live_in_engine_activations():
    """A one-channel output is a sigmoid and a softmax over it is refused with one message, whether a
    segmentation target, the metrics' "auto" or a plain module's card decides it (the target had its
    own shorter message before, and three files restated "one channel means sigmoid")."""
    from XAIExplainLib.engine.activations import OUTPUT_ACTIVATIONS, activation_for_channels, resolve_activation
    from XAIExplainLib.models import card
    from XAIExplainLib.models.plain_module import module_model

    one = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError) as from_target:
        _bind(one, class_index=0, activation="softmax", region="all")
    with pytest.raises(ValueError) as from_metrics:
        resolve_activation("softmax", one)
    assert str(from_target.value) == str(from_metrics.value)
    assert resolve_activation("auto", one) == activation_for_channels(1) == "sigmoid"
    assert resolve_activation("auto", torch.zeros(1, 3, 4, 4)) == activation_for_channels(3) == "softmax"
    assert _bind(torch.randn(1, 1, 4, 4), class_index=0, region="all").prediction == "sigmoid"
    assert card.ACTIVATIONS == OUTPUT_ACTIVATIONS
    for channels, expected in ((1, "sigmoid"), (3, "softmax")):
        described = module_model(nn.Conv2d(1, channels, 1))
        assert described.card.output_activation == expected


class BelowThresholdPerturbed(nn.Module):
    """The segmenter with the logits of voxels outside ``keep`` lowered by a function of the decoder features.

    Those voxels stay below the threshold (their logits only go down), but their values
    now depend on the explained layer: if they counted, the map would change.
    """

    def __init__(self, segmenter, keep):
        super().__init__()
        self.unet, self.keep, self.features = segmenter, keep, {}
        segmenter.dec1.register_forward_hook(lambda m, i, o: self.features.update(d1=o))

    def forward(self, x):
        logits = self.unet(x)
        drop = nn.functional.softplus(3 * self.features["d1"].sum(dim=1, keepdim=True))
        return logits - (~self.keep)[:, None].float() * drop


def test_thresholded_target_ignores_voxels_below_the_threshold():
    model = unet(2, seed=4, classes=1)
    x = inputs(2, n=2, seed=3)
    with torch.no_grad():  # about half of the voxels above the threshold
        model.head.bias -= model(x).median()
    target = xai.SegmentationTarget(0, region="threshold", activation="sigmoid", threshold=0.5)
    with torch.no_grad():
        keep = torch.sigmoid(model(x)[:, 0]) > 0.5
    assert 0 < int(keep.sum()) < keep.numel()
    plain = xai.explain(model, x, "gradcam", target=target, layer="dec2.0", normalize=False)
    perturbed_model = BelowThresholdPerturbed(model, keep)
    with torch.no_grad():
        changed = torch.sigmoid(perturbed_model(x)[:, 0])
    assert (changed[~keep] <= 0.5).all() and torch.equal(changed > 0.5, keep)
    perturbed = xai.explain(perturbed_model, x, "gradcam", target=target, layer="unet.dec2.0", normalize=False)
    assert torch.allclose(plain, perturbed, rtol=1e-5, atol=1e-7)
    # the same perturbation does change a map whose region includes those voxels
    everywhere = xai.SegmentationTarget(0, region="all", activation="sigmoid")
    a = xai.explain(model, x, "gradcam", target=everywhere, layer="dec2.0", normalize=False)
    b = xai.explain(perturbed_model, x, "gradcam", target=everywhere, layer="unet.dec2.0", normalize=False)
    assert not torch.allclose(a, b, rtol=1e-3)
    model.dec1._forward_hooks.clear()


def test_per_slice_volume_with_a_mask_region_matches_slice_by_slice():
    model = unet(2, seed=6)
    generator = torch.Generator().manual_seed(2)
    volume = torch.randn(5, 16, 16, generator=generator)
    mask = np.zeros((5, 16, 16), dtype=bool)
    mask[1:3, 4:10, 5:12] = True  # slices 0, 3, 4 have no ROI
    target = xai.SegmentationTarget(1, region=mask)
    maps = xai.explain_volume(model, volume, "gradcam", mode="slices", axis=0, batch_size=2, target=target,
                              layer="dec2.0", normalize=False)
    assert maps.shape == (5, 16, 16)
    assert np.all(maps[[0, 3, 4]] == 0)
    roi = xai.SegmentationTarget(1, region=torch.from_numpy(mask[1:3]))
    direct = xai.explain(model, volume[1:3, None], "gradcam", target=roi, layer="dec2.0", normalize=False)
    assert np.allclose(maps[1:3], direct.numpy(), rtol=1e-5, atol=1e-7)
    # along another axis the mask is sliced the same way as the volume
    sideways = xai.explain_volume(model, volume.permute(1, 0, 2)[:, :5].contiguous(), "gradcam", mode="slices", axis=1,
                                  target=xai.SegmentationTarget(1, region=mask.transpose(1, 0, 2)[:, :5].copy()),
                                  layer="dec2.0", normalize=False)
    assert np.allclose(sideways.transpose(1, 0, 2), maps, rtol=1e-5, atol=1e-7)


def test_for_windows_crops_masks_and_moves_voxels():
    mask = torch.zeros(4, 6, 6, dtype=torch.bool)
    mask[3, 5, 5] = True
    mask[0, 0, 0] = True
    target = xai.SegmentationTarget(1, region=mask)
    windows = [(slice(0, 4), slice(0, 4), slice(0, 4)), (slice(0, 4), slice(2, 6), slice(2, 6))]
    voxel = xai.SegmentationTarget(1, region=(3, 5, 5)).for_windows(windows)
    assert voxel._voxels == [None, (3, 3, 3)]
    cropped = target.for_windows(windows)._mask
    assert bool(cropped[0, 0, 0, 0]) and int(cropped[0].sum()) == 1
    assert bool(cropped[1, 3, 3, 3]) and int(cropped[1].sum()) == 1
    padded = target.for_windows([(slice(0, 8), slice(0, 8), slice(0, 8))])._mask
    assert padded.shape == (1, 8, 8, 8) and int(padded.sum()) == 2 and bool(padded[0, 3, 5, 5])


def test_volume_mode_with_a_mask_target_matches_the_window_it_comes_from():
    model = unet(3, seed=7)
    generator = torch.Generator().manual_seed(4)
    volume = torch.randn(8, 8, 12, generator=generator)
    mask = torch.zeros(8, 8, 12, dtype=torch.bool)
    mask[2:6, 2:6, 7:11] = True
    target = xai.SegmentationTarget(1, region=mask, activation="sigmoid")
    # windows x in [0, 8) and [4, 12): voxels x >= 8 come from the second window alone
    maps = xai.explain_volume(model, volume, "saliency", mode="volume", patch_size=8, overlap=0.5, target=target,
                              normalize=False)
    window = xai.SegmentationTarget(1, region=mask[..., 4:12], activation="sigmoid")
    direct = xai.explain(model, volume[None, None, ..., 4:12], "saliency", target=window, normalize=False)[0]
    assert direct[..., 4:].abs().max() > 0
    assert np.allclose(maps[..., 8:], direct[..., 4:].numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_channel_argmax_gives_torch_argmax_with_ties_infinities_and_nan(channels):
    """The comparison form of the channel argmax against ``torch.argmax`` itself: random
    logits, values rounded to a few levels so that ties (first index wins) are common,
    infinities of both signs, and an output with a NaN (argmax's own rule)."""
    from XAIExplainLib.engine.targets.segmentation import channel_argmax

    generator = torch.Generator().manual_seed(channels)
    logits = torch.randn((3, channels, 6, 7, 5), generator=generator)
    tied = torch.round(logits * 1.5) / 1.5
    infinite = tied.clone()
    infinite[0, :, 0, 0, 0] = float("inf")
    infinite[1, -1, 1, :, 0] = float("-inf")
    infinite[2, 0, 2, 2, :] = float("inf")
    with_nan = infinite.clone()
    with_nan[1, channels // 2, 3, 3, 3] = float("nan")
    for output in (logits, tied, infinite, with_nan):
        assert torch.equal(channel_argmax(output), output.argmax(dim=1))
    assert (tied.argmax(dim=1) > 0).any() or channels == 1  # the ties do not all fall to channel 0


def test_predicted_region_and_default_class_follow_argmax_on_ties():
    """The predicted region (argmax == class) and the default class (most-predicted foreground
    class by voxel count) on outputs with tied channels, against regions built with argmax."""
    generator = torch.Generator().manual_seed(11)
    output = torch.round(torch.randn((2, 3, 5, 6, 4), generator=generator))
    labels = output.argmax(dim=1)
    for cls in (0, 1, 2):
        bound = _bind(output, class_index=cls)
        assert torch.equal(bound.region, labels == cls)
    bound = xai.SegmentationTarget()._replace(allow_empty=True).bind(output)
    counts = torch.stack([torch.bincount(labels[n].flatten(), minlength=3) for n in range(2)])
    counts[:, 0] = -1
    assert torch.equal(bound.classes, counts.max(dim=1).indices)
    assert torch.equal(bound.region, labels == bound.classes.reshape(-1, 1, 1, 1))
