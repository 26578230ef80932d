"""The liver and liver-lesion U-Nets of ``pyliverlesionseg`` 0.3, written in torch.

Tang X., Jafargholi Rangraz E., Coudyzer W., et al., "Whole liver segmentation based on
deep learning and manual adjustment for clinical use in SIRT", Eur J Nucl Med Mol
Imaging 47, 2742-2752 (2020).  The package (KU Leuven, Apache-2.0) builds its networks
with ``architectures/unet_generalized.py:create_unet_like_model`` in Keras 2 and ships
the trained weights as HDF5.  :class:`GeneralizedUNet` is our own torch code for the
options the two trained networks use, computing what their Keras graph computes:

* pathways at subsample factors ``subsample_factors_per_pathway`` (liver: 1, 3, 9, 27;
  lesion: 1, 2, 4, 8), reached by max pooling; each pathway has a left (down) and a
  right (up) list of convolutions; ``padding`` ``"same"`` or ``"valid"``;
* before every convolution except the very first: their "instance normalisation"
  ``(x - mean) / (std + 1e-7)`` over the spatial axes (no learned scale; the
  population standard deviation), then a leaky ReLU (slope 0.01);
* optional residual connections: the block input, centre-cropped and, where the
  channel count changes, passed through a 1 x 1 x 1 convolution, is added to the
  block output;
* on the way up: an average pooling of size ``|left position - right position| + 1``
  (stride 1) that aligns voxel centres, the left path centre-cropped and concatenated
  *before* the upward path, and upsampling by copying (``"copy"``) or copying
  followed by an average pooling of the factor's size (``"linear"``);
* a common pathway of one normalisation, leaky ReLU and 1 x 1 x 1 convolution; their
  final sigmoid is left out, so the network returns the logit ``z``, which is what the
  engine explains.

Tensors are ``(N, C, a0, a1, a2)`` in the Keras model's spatial axis order.
:class:`LiverLesionNet` puts the network on the project's grid: it takes the volume in
numpy order ``(N, 1, Z, Y, X)`` on an LPS grid (x to the left, y to the back, z up),
flips x and y (their prediction code feeds RAS arrays), runs the network on the whole
input segment and places the output segment where their ``DeepVoxNet.predict`` puts
it: centred, every voxel outside it taking the value of the nearest output voxel
(their distance-transform fill, which for a box is edge replication).  The result has
the input's shape, as the engine needs, and two channels ``(-z / 2, z / 2)``: their
sigmoid is exactly the softmax of these (``sigmoid(z) = e^(z/2) / (e^(-z/2) + e^(z/2))``),
so the card says ``softmax`` with classes (background, foreground), the argmax is their
``p > 0.5`` and both classes have a logit to explain.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Keras' ``K.epsilon()``, added to the standard deviation by their normalisation.
KERAS_EPSILON = 1e-7
#: Their "lrelu" activation: ``LeakyReLU(alpha=0.01)``.
LEAKY_SLOPE = 0.01


class KerasInstanceNorm(nn.Module):
    """``(x - mean) / (std + 1e-7)`` over the spatial axes of each sample and channel.

    Their ``normalization_function`` (a Keras ``Lambda``); not ``nn.InstanceNorm3d``,
    which puts the epsilon under the square root.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        return (x - mean) / (var.sqrt() + KERAS_EPSILON)


class CenterCrop(nn.Module):
    """Keras ``Cropping3D`` as their code uses it: ``(l - r) // 2`` voxels off each side."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        slices = [slice(None), slice(None)]
        for have, want in zip(x.shape[2:], like.shape[2:]):
            cut = (have - want) // 2
            slices.append(slice(cut, have - cut))
        return x[tuple(slices)]


class Upsample(nn.Module):
    """``UpSampling3D(factor)`` (copies), then for ``linear`` an ``AveragePooling3D(factor)``
    with stride 1 and no padding: their "TriLinear"."""

    def __init__(self, factor: Sequence[int], linear: bool):
        super().__init__()
        self.factor = tuple(int(f) for f in factor)
        self.pool = nn.AvgPool3d(self.factor, stride=1) if linear and any(f > 1 for f in self.factor) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, f in enumerate(self.factor):
            if f > 1:
                x = x.repeat_interleave(f, dim=2 + axis)
        return x if self.pool is None else self.pool(x)


class ConvUnit(nn.Module):
    """[normalisation, leaky ReLU,] convolution: one step of a pathway."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int], padding: str,
                 pre_activation: bool):
        super().__init__()
        kernel = tuple(int(k) for k in kernel)
        if padding == "same" and any(k % 2 == 0 for k in kernel):
            raise ValueError(f"'same' padding needs odd kernel sizes, got {kernel}")
        self.norm = KerasInstanceNorm() if pre_activation else None
        self.act = nn.LeakyReLU(LEAKY_SLOPE) if pre_activation else None
        pad = tuple(k // 2 for k in kernel) if padding == "same" else 0
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.act(self.norm(x))
        return self.conv(x)


class Block(nn.Module):
    """The convolutions of one side of one pathway, with the optional residual shortcut."""

    def __init__(self, in_channels: int, kernels, features, padding: str, first: bool, residual: bool):
        super().__init__()
        units, channels = [], in_channels
        for j, (kernel, n) in enumerate(zip(kernels, features)):
            units.append(ConvUnit(channels, n, kernel, padding, pre_activation=not (first and j == 0)))
            channels = n
        self.units = nn.ModuleList(units)
        self.out_channels = channels
        self.residual = residual and bool(units)
        self.crop = CenterCrop()
        self.project = (nn.Conv3d(in_channels, channels, 1) if self.residual and in_channels != channels
                        else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        for unit in self.units:
            x = unit(x)
        if self.residual:
            shortcut = self.crop(shortcut, x)
            if self.project is not None:
                shortcut = self.project(shortcut)
            x = x + shortcut
        return x


def _positions(subsample_factors, kernels):
    """Their voxel-centre parity bookkeeping: where each left output and right input sits.

    Ported from ``create_unet_like_model`` (the ``path_left_output_positions`` /
    ``path_right_input_positions`` loops); it sets the alignment pooling sizes.
    """
    prev_factor, prev = [1, 1, 1], [0, 0, 0]
    left = []
    for factor, (down, _up) in zip([(1, 1, 1)] + list(subsample_factors), [[[], []]] + list(kernels)):
        step = [f // p for f, p in zip(factor, prev_factor)]
        prev_factor = list(factor)
        prev = [abs(q - (1 - (f * (s - 1) + 1) % 2)) for q, f, s in zip(prev, factor, step)]
        for kernel in down:
            prev = [abs(q - (1 - (f * (k - 1) + 1) % 2)) for q, f, k in zip(prev, factor, kernel)]
        left.append(prev)
    right = []
    rows = list(zip([(1, 1, 1), (1, 1, 1)] + list(subsample_factors[:-1]), [[[], []]] + list(kernels)))
    for i, (factor, (_down, up)) in reversed(list(enumerate(rows))):
        right.append(prev)
        prev = left[i]
        for kernel in up:
            prev = [abs(q - (1 - (f * (k - 1) + 1) % 2)) for q, f, k in zip(prev, factor, kernel)]
    right.reverse()
    return left, right


class GeneralizedUNet(nn.Module):
    """``create_unet_like_model`` for the options the two trained networks use (see the module notes).

    Named parts for explanations: ``down1..downP`` (left side of each pathway, full resolution
    first), ``up1..up{P-1}`` (right side, ``up1`` the full-resolution one) and ``head``
    (normalisation, leaky ReLU, 1 x 1 x 1 convolution to the output logit).
    """

    def __init__(self, *, subsample_factors_per_pathway: Sequence[Sequence[int]],
                 kernel_sizes_per_pathway: Sequence, number_features_per_pathway: Sequence,
                 number_input_features: int = 1, number_features_common_pathway: Sequence[int] = (1,),
                 padding: str = "same", upsampling: str = "linear", residual_connections: bool = False):
        super().__init__()
        factors = [tuple(int(v) for v in f) for f in subsample_factors_per_pathway]
        kernels = [[[tuple(k) for k in side] for side in p] for p in kernel_sizes_per_pathway]
        features = [[list(side) for side in p] for p in number_features_per_pathway]
        if not len(factors) == len(kernels) == len(features) >= 2:
            raise ValueError("subsample_factors_per_pathway, kernel_sizes_per_pathway and "
                             "number_features_per_pathway need one entry per pathway (at least 2)")
        if padding not in ("same", "valid") or upsampling not in ("copy", "linear"):
            raise ValueError(f"padding must be 'same' or 'valid' and upsampling 'copy' or 'linear', got "
                             f"{padding!r}, {upsampling!r}")
        if list(number_features_common_pathway) != [1]:
            raise ValueError("only the trained networks' common pathway (one 1x1x1 convolution to 1 "
                             f"output) is ported, got {list(number_features_common_pathway)}")
        self.factors, self.kernels, self.padding = factors, kernels, padding
        n = len(factors)
        left_pos, right_pos = _positions(factors, kernels)
        steps = [tuple(f // p for f, p in zip(factors[i], (1, 1, 1) if i == 0 else factors[i - 1]))
                 for i in range(n)]
        self.pools = nn.ModuleList(nn.MaxPool3d(s, s) if any(v > 1 for v in s) else nn.Identity() for s in steps)
        down, channels, left_channels = [], number_input_features, []
        for i in range(n):
            block = Block(channels, kernels[i][0], features[i][0], padding, first=(i == 0),
                          residual=residual_connections)
            down.append(block)
            channels = block.out_channels
            left_channels.append(channels)
        self.down = nn.ModuleList(down)
        # Upward, deepest first: pathway i (0-based) gets the alignment pooling of Keras'
        # index i + 1, the left path of pathway i, its right convolutions, then the upsampling
        # back to pathway i - 1.
        align, up, ups, crops = [], [], [], []
        for i in reversed(range(n)):
            size = tuple(abs(a - b) + 1 for a, b in zip(left_pos[i + 1], right_pos[i + 1]))
            align.append(nn.AvgPool3d(size, stride=1) if any(v > 1 for v in size) else nn.Identity())
            if i < n - 1:
                channels = channels + left_channels[i]
            block = Block(channels, kernels[i][1], features[i][1], padding, first=False,
                          residual=residual_connections)
            up.append(block)
            channels = block.out_channels
            ups.append(Upsample(steps[i], upsampling == "linear"))
            crops.append(CenterCrop())
        self.align = nn.ModuleList(reversed(align))
        self.up = nn.ModuleList(reversed(up))
        self.upsample = nn.ModuleList(reversed(ups))
        self.crops = nn.ModuleList(reversed(crops))
        size = tuple(abs(a - b) + 1 for a, b in zip(left_pos[0], right_pos[0]))
        self.align0 = nn.AvgPool3d(size, stride=1) if any(v > 1 for v in size) else nn.Identity()
        self.head = ConvUnit(channels, 1, (1, 1, 1), padding, pre_activation=True)

    def keras_conv_order(self) -> list[str]:
        """Names of the Conv3d modules in the order Keras created (and numbered) them."""
        names = []
        blocks = [f"down.{i}" for i in range(len(self.down))] + [f"up.{i}" for i in reversed(range(len(self.up)))]
        for prefix in blocks:
            block = self.get_submodule(prefix)
            names += [f"{prefix}.units.{j}.conv" for j in range(len(block.units))]
            if block.project is not None:
                names.append(f"{prefix}.project")
        return names + ["head.conv"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lefts = []
        for pool, block in zip(self.pools, self.down):
            x = block(pool(x))
            lefts.append(x)
        n = len(self.down)
        for i in reversed(range(n)):
            x = self.align[i](x)
            if i < n - 1:
                x = torch.cat([self.crops[i](lefts[i], x), x], dim=1)
            x = self.up[i](x)
            x = self.upsample[i](x)
        return self.head(self.align0(x))

    # -- sizes -----------------------------------------------------------------------------
    def output_length(self, length: int, axis: int) -> int | None:
        """The output size along ``axis`` for an input of ``length`` voxels; None if the network
        cannot take it (a pooling that does not divide, a crop of an odd number of voxels)."""
        valid = self.padding == "valid"
        lefts, size, prev = [], length, 1
        for factor, (down, _up) in zip(self.factors, self.kernels):
            step = factor[axis] // prev
            prev = factor[axis]
            if size % step:
                return None
            size //= step
            size -= sum(k[axis] - 1 for k in down) if valid else 0
            lefts.append(size)
        for i in reversed(range(len(self.factors))):
            pool = self.align[i]
            size -= pool.kernel_size[axis] - 1 if isinstance(pool, nn.AvgPool3d) else 0
            if (lefts[i] - size) % 2 or size < 1:
                return None
            size -= sum(k[axis] - 1 for k in self.kernels[i][1]) if valid else 0
            step = self.upsample[i].factor[axis]
            size = size * step - ((step - 1) if self.upsample[i].pool is not None else 0)
        pool = self.align0
        size -= pool.kernel_size[axis] - 1 if isinstance(pool, nn.AvgPool3d) else 0
        return size if size >= 1 else None

    def input_size_for(self, output_size: Sequence[int]) -> tuple[int, ...]:
        """The smallest input size whose output is ``output_size`` (their ``input_size``)."""
        sizes = []
        for axis, want in enumerate(output_size):
            found = next((n for n in range(1, 1200) if self.output_length(n, axis) == want), None)
            if found is None:
                raise ValueError(f"output size {want} is not possible along axis {axis} for this network")
            sizes.append(found)
        return tuple(sizes)


class LiverLesionNet(nn.Module):
    """:class:`GeneralizedUNet` on the project's grid (see the module notes).

    ``output_size`` is the network's output segment in their (RAS x, y, z) order; the
    input must be the matching input segment, ``(N, 1, z, y, x)`` in numpy order on an
    LPS grid: the card's ``input.size`` or ``input.patch_size``.
    """

    def __init__(self, output_size: Sequence[int], **network):
        super().__init__()
        self.network = GeneralizedUNet(**network)
        self.output_size = tuple(int(v) for v in output_size)
        self.input_size = self.network.input_size_for(self.output_size)

    @property
    def numpy_input_size(self) -> tuple[int, int, int]:
        """The input segment in numpy order (z, y, x): the card's size or patch size."""
        return tuple(reversed(self.input_size))

    @property
    def minimum_input_size(self) -> tuple[int, int, int]:
        """The smallest input (z, y, x) the network takes, an output of a few voxels: what the
        load-time trial forward runs on (``models.card.trial_input_shape``), so that loading
        costs a fraction of a second instead of a forward pass over the whole segment."""
        sizes = []
        for axis in range(3):
            sizes.append(next(n for n in range(1, 1200) if self.network.output_length(n, axis) is not None))
        return tuple(reversed(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, z, y, x)`` on an LPS grid -> ``(N, 2, z, y, x)``: the card's segment, or any size the
        network takes (its output centred and edge-filled the same way)."""
        sizes = tuple(reversed(x.shape[2:]))  # their (x, y, z)
        if x.dim() != 5 or any(self.network.output_length(n, axis) is None for axis, n in enumerate(sizes)):
            raise ValueError(f"this network takes input segments of {self.numpy_input_size} voxels (z, y, x) (its "
                             f"card's input.size / patch_size; the smallest it takes is {self.minimum_input_size}), "
                             f"got {tuple(x.shape[2:])}: its poolings and crops do not fit that size")
        ras = x.permute(0, 1, 4, 3, 2).flip(2, 3)
        out = self.network(ras)
        pads = []
        for have, want in zip(reversed(out.shape[2:]), reversed(sizes)):
            before = (want - have) // 2
            pads += [before, want - have - before]
        out = F.pad(out, pads, mode="replicate")
        half = out.flip(2, 3).permute(0, 1, 4, 3, 2) * 0.5
        return torch.cat([-half, half], dim=1)
