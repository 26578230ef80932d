"""Small networks for the bundled demo models.

They are deliberately plain so that every explanation method applies:

* :class:`SliceClassifier` - a conv backbone (``features``), global average
  pooling (``pool``) and one linear layer (``classifier``).  The GAP -> Linear
  head is what CAM and CRM need; ``features.block4`` is the last conv map.
* :class:`UNet` - an encoder / bottleneck / decoder U-Net with named parts
  (``encoder.level1..3``, ``bottleneck``, ``decoder.up3..1``, ``head``) so that
  Seg-Grad-CAM, the multi-layer rule and KWC can address decoder layers by
  name.

Both take ``spatial_dims`` (2 or 3): one definition for slices and volumes.
ReLUs are modules (not ``F.relu`` calls) and not in-place, so guided
backpropagation can swap them and hooks see unmodified activations.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GAP = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def _check_widths(widths: Sequence[int], count: int, name: str) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) != count or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"{name} must be {count} positive integers, got {widths!r}")
    return widths


class ConvNormAct(nn.Sequential):
    """conv (3 x 3[ x 3], no bias) -> batch norm -> ReLU."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(OrderedDict(
            conv=_CONV[spatial_dims](in_channels, out_channels, 3, stride=stride, padding=1,
                                     bias=False),
            norm=_NORM[spatial_dims](out_channels),
            act=nn.ReLU(),
        ))


class ConvBlock(nn.Sequential):
    """Optional 2x max pooling, then two :class:`ConvNormAct`."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, pool: bool):
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        if pool:
            layers["pool"] = _POOL[spatial_dims](2)
        layers["conv1"] = ConvNormAct(spatial_dims, in_channels, out_channels)
        layers["conv2"] = ConvNormAct(spatial_dims, out_channels, out_channels)
        super().__init__(layers)


class SliceClassifier(nn.Module):
    """Conv backbone -> global average pool -> dropout -> linear head.

    ``features`` is ``stem`` (stride-2 conv) then ``block1..block4``; the
    blocks listed in ``pools`` start with 2x max pooling, so with the default
    ``(False, True, True, False)`` the last map is 1/8 of the input size: fine
    enough for Grad-CAM to localise a 1 cm lung nodule at 1.5 mm spacing.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2,
                 widths: Sequence[int] = (16, 32, 48, 64),
                 pools: Sequence[bool] = (False, True, True, False),
                 dropout: float = 0.2, spatial_dims: int = 2):
        super().__init__()
        _check_dims(spatial_dims)
        widths = _check_widths(widths, 4, "widths")
        pools = tuple(bool(p) for p in pools)
        if len(pools) != 4:
            raise ValueError(f"pools must hold 4 booleans (one per block), got {pools!r}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, "
                             f"{num_classes}")
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        layers["stem"] = ConvNormAct(spatial_dims, in_channels, widths[0], stride=2)
        previous = widths[0]
        for i, (width, pool) in enumerate(zip(widths, pools), start=1):
            layers[f"block{i}"] = ConvBlock(spatial_dims, previous, width, pool)
            previous = width
        self.features = nn.Sequential(layers)
        self.pool = _GAP[spatial_dims](1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


class _Up(nn.Module):
    """Upsample (linear interpolation to the skip's size), concatenate the skip, two convs."""

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.reduce = _CONV[spatial_dims](in_channels, skip_channels, 1)
        self.conv1 = ConvNormAct(spatial_dims, 2 * skip_channels, out_channels)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
        x = torch.cat([self.reduce(x), skip], dim=1)
        return self.conv2(self.conv1(x))


class UNet(nn.Module):
    """A small U-Net with three encoder levels, a bottleneck and three decoder levels.

    Any input size works (upsampling matches the skip's size); sizes divisible
    by 8 avoid pooling remainders.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2,
                 widths: Sequence[int] = (8, 16, 32), bottleneck_width: int = 64,
                 spatial_dims: int = 3):
        super().__init__()
        _check_dims(spatial_dims)
        w1, w2, w3 = _check_widths(widths, 3, "widths")
        if bottleneck_width < 1:
            raise ValueError(f"bottleneck_width must be >= 1, got {bottleneck_width}")
        self.encoder = nn.ModuleDict(OrderedDict(
            level1=ConvBlock(spatial_dims, in_channels, w1, pool=False),
            level2=ConvBlock(spatial_dims, w1, w2, pool=True),
            level3=ConvBlock(spatial_dims, w2, w3, pool=True),
        ))
        self.bottleneck = ConvBlock(spatial_dims, w3, bottleneck_width, pool=True)
        self.decoder = nn.ModuleDict(OrderedDict(
            up3=_Up(spatial_dims, bottleneck_width, w3, w3),
            up2=_Up(spatial_dims, w3, w2, w2),
            up1=_Up(spatial_dims, w2, w1, w1),
        ))
        self.head = _CONV[spatial_dims](w1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.encoder["level1"](x)
        s2 = self.encoder["level2"](s1)
        s3 = self.encoder["level3"](s2)
        x = self.bottleneck(s3)
        x = self.decoder["up3"](x, s3)
        x = self.decoder["up2"](x, s2)
        x = self.decoder["up1"](x, s1)
        return self.head(x)
