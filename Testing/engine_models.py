"""Small 2D/3D models for engine tests: a GAP + Linear classifier and a fully convolutional net."""
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
