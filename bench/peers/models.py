"""ResNet-like 2D and 3D classifiers for benchmarks (untrained: speed does not depend on the weights)."""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block; reuses one in-place ReLU module like torchvision does."""

    def __init__(self, conv, norm, c_in, c_out, stride):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetLike(nn.Module):
    """ResNet-18 layout (2 blocks per stage), configurable width and dims."""

    def __init__(self, dims=2, in_channels=1, classes=4, width=64, blocks=(2, 2, 2, 2)):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
        self.stem = nn.Sequential(conv(in_channels, width, 7, stride=2, padding=3, bias=False), norm(width),
                                  nn.ReLU(inplace=True), pool(3, stride=2, padding=1))
        stages, c_in = [], width
        for i, count in enumerate(blocks):
            c_out = width * 2 ** i
            stages.append(nn.Sequential(*[BasicBlock(conv, norm, c_in if b == 0 else c_out, c_out,
                                                     2 if (b == 0 and i > 0) else 1) for b in range(count)]))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = gap(1)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


def build(dims: int, width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ResNetLike(dims=dims, width=width).eval()


def synthetic_ct(slices: int, size: int, seed: int = 0) -> torch.Tensor:
    """A smooth body-like ellipse with organs and noise, scaled like a windowed CT (0..1)."""
    g = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(torch.linspace(-1, 1, slices), torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                             indexing="ij")
    body = ((x / 0.85) ** 2 + (y / 0.65) ** 2 < 1).float() * 0.45
    organ = (((x - 0.3) / 0.3) ** 2 + (y / 0.25) ** 2 + (z / 0.8) ** 2 < 1).float() * 0.2
    spine = ((x / 0.08) ** 2 + ((y - 0.45) / 0.08) ** 2 < 1).float() * 0.5
    return (body + organ + spine + 0.03 * torch.randn(body.shape, generator=g)).clamp(0, 1)
