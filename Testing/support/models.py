"""Small 2D/3D models shared by the tests, and helpers to check a model is left as found.

- ``SmallCNN``: conv-BN-ReLU x3 (one strided) -> GAP -> Linear, CAM-compatible; with
  ``FunctionalReluCNN`` and ``MeanPooledFCN`` for the engine's reference tests.

- ``TinyUNet``: a two-level U-Net with skip connections (torch.cat in forward), a ReLU
  module shared by encoder and decoder, a functional ReLU, transposed convolutions and
  decoder blocks that are Sequential containers: the hard cases for replaying a network
  from a layer (KWC) and for decoder detection.
- ``TinyClassifier``: conv -> ReLU -> conv -> ReLU -> GAP -> Linear (CAM / CRM compatible).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _layers(dims: int):
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d
    return nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d


class SmallCNN(nn.Module):
    """conv-BN-ReLU x3 (one strided) -> GAP -> Linear: CAM-compatible, 2D or 3D."""

    def __init__(self, dims=2, in_channels=1, classes=3, inplace=False, width=8):
        super().__init__()
        conv, norm, pool = _layers(dims)
        self.features = nn.Sequential(
            conv(in_channels, width, 3, padding=1), norm(width), nn.ReLU(inplace=inplace),
            conv(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(inplace=inplace),
            conv(2 * width, 2 * width, 3, padding=1), nn.ReLU(inplace=inplace),
        )
        self.pool = pool(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class FunctionalReluCNN(nn.Module):
    """Uses F.relu, torch.relu and LeakyReLU instead of nn.ReLU modules (guided backprop must cover them)."""

    def __init__(self, dims=2, in_channels=1, classes=3):
        super().__init__()
        conv, _, pool = _layers(dims)
        self.conv1 = conv(in_channels, 8, 3, padding=1)
        self.conv2 = conv(8, 8, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.conv3 = conv(8, 8, 3, padding=1)
        self.pool = pool(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.act(self.conv3(x))
        return self.fc(self.pool(x).flatten(1))


class MeanPooledFCN(nn.Module):
    """Fully convolutional 3D net whose score is a spatial mean: windows and whole volume agree inside."""

    def __init__(self, classes=2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Conv3d(6, classes, 1)

    def forward(self, x):
        return self.head(self.body(x)).mean(dim=(2, 3, 4))


def make(model_cls, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = model_cls(**kwargs)
    for module in model.modules():  # non-trivial BN statistics
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def inputs(dims=2, n=4, channels=1, size=16, seed=1):
    generator = torch.Generator().manual_seed(seed)
    shape = (n, channels) + (size,) * dims
    return torch.randn(shape, generator=generator)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _ops(dims):
    if dims == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d
    return nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d


class CountingConv(nn.Module):
    """A convolution that counts how often its forward really computes (hooks fire even when skipped)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv, self.computed = conv, 0

    def forward(self, x):
        self.computed += 1
        return self.conv(x)


class TinyUNet(nn.Module):
    def __init__(self, dims=2, in_channels=1, classes=3, width=4):
        super().__init__()
        conv, up, norm, pool, _ = _ops(dims)
        w = width
        self.act = nn.ReLU()  # shared: runs before and after any decoder layer
        self.enc1 = CountingConv(conv(in_channels, w, 3, padding=1))
        self.pool = pool(2)
        self.enc2 = conv(w, 2 * w, 3, padding=1)
        self.bottleneck = conv(2 * w, 4 * w, 3, padding=1)
        self.up2 = up(4 * w, 2 * w, 2, stride=2)
        self.dec2 = nn.Sequential(conv(4 * w, 2 * w, 3, padding=1), norm(2 * w), nn.ReLU())
        self.up1 = up(2 * w, w, 2, stride=2)
        self.dec1 = nn.Sequential(conv(2 * w, w, 3, padding=1), nn.ReLU())
        self.head = conv(w, classes, 1)

    def forward(self, x):
        s1 = self.act(self.enc1(x))
        s2 = F.relu(self.enc2(self.pool(s1)))
        b = self.act(self.bottleneck(self.pool(s2)))
        d2 = self.dec2(torch.cat([self.act(self.up2(b)), s2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], dim=1))
        return self.head(d1)


class TinyClassifier(nn.Module):
    def __init__(self, dims=2, in_channels=1, classes=3, width=6):
        super().__init__()
        conv, _, _, _, gap = _ops(dims)
        self.features = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU(),
                                      conv(width, 2 * width, 3, padding=1, stride=2), nn.ReLU())
        self.pool = gap(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def unet(dims=2, seed=0, **kwargs):
    return make(TinyUNet, seed=seed, dims=dims, **kwargs)


def classifier(dims=2, seed=0, **kwargs):
    return make(TinyClassifier, seed=seed, dims=dims, **kwargs)


def small_inputs(dims=2, n=2, channels=1, size=None, seed=1):
    """Two samples of 16 x 16 (2D) or 8^3 (3D): the tiny U-Net and classifier's inputs."""
    size = size or (16 if dims == 2 else 8)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, channels) + (size,) * dims, generator=generator)


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
    }


def assert_as_found(model, before):
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["grad"] == before["grad"]
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
        assert "forward" not in module.__dict__, "a replaced forward was left behind"
