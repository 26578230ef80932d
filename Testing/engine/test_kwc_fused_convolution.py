"""KWC replayed from after the convolution that follows the layer (a decoder stage conv-BN-ReLU-conv) gives
the per-kernel loop's map, in 2D and 3D, with zero and Glorot empty kernels; where that convolution cannot
be fused (a group norm in between, a hook) the replay starts at the layer and the map is the same."""
import pytest
import torch
from torch import nn

import XAIExplainLib as xai
from Testing.engine.test_kwc import _close, reference_kwc
from Testing.support.models import make, small_inputs as inputs


class StageUNet(nn.Module):
    """One pooling level; every stage conv-norm-ReLU-conv-norm-ReLU in one Sequential, like nnU-Net's."""

    def __init__(self, dims=2, width=4, middle=None, padding_mode="zeros"):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        w = width

        def stage(c_in, c_out):
            return nn.Sequential(conv(c_in, c_out, 3, padding=1, padding_mode=padding_mode),
                                 middle(c_out) if middle else norm(c_out), nn.LeakyReLU(0.01),
                                 conv(c_out, c_out, 3, padding=1, padding_mode=padding_mode), norm(c_out), nn.ReLU())
        self.enc = stage(1, w)
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.bottom = stage(w, 2 * w)
        self.up = up(2 * w, w, 2, stride=2)
        self.dec = stage(2 * w, w)
        self.head = conv(w, 2, 1)

    def forward(self, x):
        skip = self.enc(x)
        return self.head(self.dec(torch.cat([self.up(self.bottom(self.pool(skip))), skip], dim=1)))


def _explain(model, x, target, layer, **options):
    maps, info = xai.explain(model, x, "kwc", target=target, layer=layer, normalize=False, return_info=True,
                             **options)
    return maps, info["kwc"]["replayed_from"][layer]


@pytest.mark.parametrize("dims", [2, 3])
def test_fused_kwc_equals_the_per_kernel_loop(dims):
    model = make(StageUNet, seed=3, dims=dims)
    x = inputs(dims, n=2, size=16 if dims == 2 else 8, seed=5)
    target = xai.SegmentationTarget(1, region="all", activation="sigmoid")
    maps, replayed_from = _explain(model, x, target, "dec.0")
    assert replayed_from == "dec.3"
    _close(maps, reference_kwc(model, x, "dec.0", lambda out: torch.sigmoid(out[:, 1])))


def test_fused_kwc_with_glorot_kernels_reflect_padding_and_several_batches(monkeypatch):
    model = make(StageUNet, seed=4, dims=2, padding_mode="reflect")
    x = inputs(2, n=2, size=16, seed=6)
    target = xai.SegmentationTarget(1, region="all", activation="softmax")
    reference = reference_kwc(model, x, "bottom.0", lambda out: torch.softmax(out, 1)[:, 1], empty="glorot", seed=2)
    from XAIExplainLib.engine import batching
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 3 * 2 * 16 * 16)
    maps, replayed_from = _explain(model, x, target, "bottom.0", kwc_empty="glorot", seed=2)
    assert replayed_from == "bottom.3"
    _close(maps, reference)


def test_kwc_replays_from_the_layer_where_the_next_convolution_cannot_be_fused():
    model = make(StageUNet, seed=5, dims=2, middle=lambda c: nn.GroupNorm(2, c))  # mixes channels
    x = inputs(2, n=2, size=16, seed=7)
    target = xai.SegmentationTarget(1, region="all", activation="sigmoid")
    maps, replayed_from = _explain(model, x, target, "dec.0")
    assert replayed_from == "dec.0"
    _close(maps, reference_kwc(model, x, "dec.0", lambda out: torch.sigmoid(out[:, 1])))
    hooked = make(StageUNet, seed=5, dims=2)
    handle = hooked.dec[1].register_forward_hook(lambda module, args, output: output * 1.5)
    try:
        maps, replayed_from = _explain(hooked, x, target, "dec.0")
        assert replayed_from == "dec.0"
        _close(maps, reference_kwc(hooked, x, "dec.0", lambda out: torch.sigmoid(out[:, 1])))
    finally:
        handle.remove()
