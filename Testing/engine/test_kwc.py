"""KWC (Mullan & Sonka, SPIE 2022) against a straightforward per-kernel loop, and its prefix reuse."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import XAIExplainLib as xai
from XAIExplainLib.engine import batching
from XAIExplainLib.engine.methods.kwc import glorot_kernels
from XAIExplainLib.engine.normalize import minmax
from Testing.support.models import classifier, small_inputs as inputs, unet


def _kernel(weight, layer, k):
    """Kernel k of a convolution's weight: out channel k (dim 1 for transposed convolutions)."""
    return weight[:, k] if isinstance(layer, (nn.ConvTranspose2d, nn.ConvTranspose3d)) else weight[k]


def reference_kwc(model, x, layer_name, probabilities, empty="zeros", seed=0):
    """The definition, literally: two full forwards of an edited copy of the model per kernel."""
    edited = copy.deepcopy(model)
    layer = dict(edited.named_modules())[layer_name]
    original = layer.weight.detach().clone()
    filler = glorot_kernels(original, seed) if empty == "glorot" else torch.zeros_like(original)
    captured = {}
    handle = dict(model.named_modules())[layer_name].register_forward_hook(lambda m, i, o: captured.update(a=o))
    with torch.no_grad():
        p = probabilities(model(x)).flatten(1)
    handle.remove()
    activation = captured["a"]
    k_count = activation.shape[1]
    dependence, independence = torch.zeros(x.shape[0], k_count), torch.zeros(x.shape[0], k_count)
    with torch.no_grad():
        for k in range(k_count):
            layer.weight.copy_(original)
            _kernel(layer.weight, layer, k).copy_(_kernel(filler, layer, k))
            p_dep = probabilities(edited(x)).flatten(1)
            layer.weight.copy_(filler)
            _kernel(layer.weight, layer, k).copy_(_kernel(original, layer, k))
            p_ind = probabilities(edited(x)).flatten(1)
            dependence[:, k] = (p - torch.minimum(p_dep, p)).sum(1)
            independence[:, k] = torch.minimum(p_ind, p).sum(1)
    weights = minmax(dependence * independence / p.sum(1, keepdim=True))
    shape = weights.shape + (1,) * (activation.dim() - 2)
    layer_map = torch.relu((weights.reshape(shape) * torch.relu(activation)).sum(1))
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(layer_map[:, None], size=x.shape[2:], mode=mode, align_corners=False)[:, 0]


def _close(ours, reference):
    assert reference.abs().max() > 0
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


def test_kwc_equals_the_per_kernel_loop_on_a_unet_with_skips(monkeypatch):
    model = unet(2, seed=2)
    x = inputs(2, n=2, seed=4)
    target = xai.SegmentationTarget(1, region="all", activation="sigmoid")
    reference = reference_kwc(model, x, "dec2.0", lambda out: torch.sigmoid(out[:, 1]))
    _close(xai.explain(model, x, "kwc", target=target, layer="dec2.0", normalize=False), reference)
    # the same map when the kernels are spread over several forwards
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 3 * 2 * 16 * 16)
    _close(xai.explain(model, x, "kwc", target=target, layer="dec2.0", normalize=False), reference)


def test_kwc_glorot_on_a_transposed_convolution_with_a_mask_and_softmax():
    model = unet(2, seed=5)
    x = inputs(2, n=2, seed=6)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[3:12, 4:14] = True
    target = xai.SegmentationTarget(2, region=mask, activation="softmax")
    reference = reference_kwc(model, x, "up1", lambda out: torch.softmax(out, 1)[:, 2] * mask, empty="glorot",
                              seed=3)
    ours = xai.explain(model, x, "kwc", target=target, layer="up1", normalize=False, kwc_empty="glorot", seed=3)
    _close(ours, reference)


def test_kwc_3d_with_the_default_target_uses_softmax_over_the_predicted_region():
    model = unet(3, seed=8)
    x = inputs(3, n=2, seed=2)
    with torch.no_grad():
        region = model(x).argmax(1) == 1
    assert region.flatten(1).any(1).all()
    reference = reference_kwc(model, x, "dec1.0", lambda out: torch.softmax(out, 1)[:, 1] * region)
    _close(xai.explain(model, x, "kwc", target=1, layer="dec1.0", normalize=False), reference)


def test_kwc_never_recomputes_the_layers_before_the_perturbed_one():
    model = unet(2, seed=1)
    x = inputs(2, n=2)
    target = xai.SegmentationTarget(1, region="all", activation="sigmoid")
    for layer in ("up1", "dec1.0"):
        before = model.enc1.computed
        maps, info = xai.explain(model, x, "kwc", target=target, layer=layer, return_info=True)
        assert model.enc1.computed - before == 1  # the recording pass only, not 1 + 2K
        weights = info["kwc"]["kernel_weights"][layer]
        assert weights.shape == (2, 4) and torch.allclose(weights.amax(1), torch.ones(2))


def test_kwc_default_layer_is_the_last_convolution_before_the_head():
    model = unet(2, seed=1)
    x = inputs(2, n=1)
    target = xai.SegmentationTarget(1, region="all", activation="sigmoid")
    maps, info = xai.explain(model, x, "kwc", target=target, return_info=True)
    assert info["kwc"]["layers"] == ["dec1.0"]
    assert torch.allclose(maps, xai.explain(model, x, "kwc", target=target, layer="dec1.0"))


class StandardisedConv(nn.Conv2d):
    """A convolution whose weight is standardised in forward (a tensor computed from parameters alone)."""

    def forward(self, x):
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias)


class InPlaceResidual(nn.Module):
    """Writes into a module's output in place after the call, keeps it as a skip, and ends in a 2-channel
    standardised convolution (a computed weight of batch-like shape (2, ...) for a batch of 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu, self.head = nn.ReLU(), StandardisedConv(4, 2, 1)

    def forward(self, x):
        s = self.conv1(x)
        s += 0.5  # the recorded output of conv1 must not see this
        h = self.conv2(self.relu(s))
        return self.head(self.relu(h + s))


class WritesIntoPrefix(InPlaceResidual):
    def forward(self, x):
        s = self.conv1(x)
        h = self.conv2(self.relu(s))
        s[:, :2] = h[:, :2]  # perturbed values written into a tensor from before the layer
        return self.head(s)


def test_kwc_replay_survives_in_place_writes_and_computed_weights():
    torch.manual_seed(0)
    model = InPlaceResidual().eval()
    x = inputs(2, n=2, size=8, seed=3)
    target = xai.SegmentationTarget(1, region="all", activation="sigmoid")
    reference = reference_kwc(model, x, "conv2", lambda out: torch.sigmoid(out[:, 1]))
    _close(xai.explain(model, x, "kwc", target=target, layer="conv2", normalize=False), reference)
    with pytest.raises(ValueError, match="cannot be replayed"):
        xai.explain(WritesIntoPrefix().eval(), x, "kwc", target=target, layer="conv2")


def test_kwc_refuses_classifiers_and_layers_without_kernels():
    with pytest.raises(ValueError, match="segmentation models"):
        xai.explain(classifier(2), inputs(2), "kwc", layer="features.2")
    with pytest.raises(ValueError, match="perturbs the kernels of a convolution"):
        xai.explain(unet(2), inputs(2), "kwc", target=1, layer="dec2.1")
    with pytest.raises(ValueError, match="kwc_empty must be one of"):
        xai.explain(unet(2), inputs(2), "kwc", target=1, layer="dec2.0", kwc_empty="random")
