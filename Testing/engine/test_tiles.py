"""The "tiles" tiling (``windows.Tiling(steps="tiles")``) against a naive transcription of pyliverlesionseg's
``DeepVoxNet.predict`` loop (``center_sampling=False``) and ``ExtractSegment3D2`` (Tang et al., Eur J Nucl
Med Mol Imaging 47, 2020), written here from their code: starts, sampling centres, input cut, output placement
(rounded as they round it), overwrite order and the nearest fill of voxels no tile wrote.

The toy network is one 'valid' convolution with kernels of both parities, so input and output segments of
odd and even sizes (their half-voxel shifted centre) and unwritten voxels all occur.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from XAIExplainLib.engine import explain_volume, predict_volume
from XAIExplainLib.engine.windows import Tiling, tile_axis


def their_cut(image, centre, size, default=0.0):
    """ExtractSegment3D2.get_sample (subsample factor 1): ``size`` voxels around ``centre``, ``default`` beyond."""
    segment = default * np.ones(size, dtype=np.float32)
    idx_i, idx_s = [], []
    for d_i, d_s, c in zip(image.shape, size, centre):
        n_left_i, n_right_i = c, d_i - c - 1
        n_left_s = n_right_s = d_s // 2
        if d_s % 2 == 0:
            n_right_s -= 1
        if n_left_i < n_left_s:
            start_s, start_i = d_s // 2 - n_left_i, c - n_left_i
        else:
            start_s, start_i = 0, c - n_left_s
        if n_right_i < n_right_s:
            end_s, end_i = d_s // 2 + n_right_i, c + n_right_i
        else:
            end_s, end_i = d_s - 1, c + n_right_s
        idx_i.append(slice(start_i, end_i + 1))
        idx_s.append(slice(start_s, end_s + 1))
    segment[tuple(idx_s)] = image[tuple(idx_i)]
    return segment


def their_predict(image, network, in_size, out_size):
    """DeepVoxNet.predict with center_sampling=False, one output at full resolution, no ROI: ``network`` maps an
    input segment (their layout) to the output segment."""
    n = image.shape
    seg = [o if o < s else s for o, s in zip(out_size, n)]
    starts = [range(0, s, g) if not s % g else [*range(0, s, g), s - g] for s, g in zip(n, seg)]
    fill = np.full(n, np.nan, dtype=np.float64)

    def placement(start, axis):
        centre = math.ceil(start + (seg[axis] - 1) / 2)
        real = centre if in_size[axis] % 2 else centre - 0.5
        first, last = real - (out_size[axis] - 1) / 2, real + (out_size[axis] - 1) / 2
        under, over = max(0, -first), max(0, last - (n[axis] - 1))
        into = slice(round(first + math.ceil(under) - 1e-7), round(last - math.ceil(over) + 1 - 1e-7))
        out = slice(math.ceil(under), -1 * math.ceil(over) or None)
        return centre, into, out

    for x in starts[0]:
        cx, ix, ox = placement(x, 0)
        for y in starts[1]:
            cy, iy, oy = placement(y, 1)
            for z in starts[2]:
                cz, iz, oz = placement(z, 2)
                result = network(their_cut(image, (cx, cy, cz), in_size))
                fill[ix, iy, iz] = result[ox, oy, oz]
    return fill[tuple(ndimage.distance_transform_edt(np.isnan(fill), return_distances=False, return_indices=True))]


class Toy(torch.nn.Module):
    """One valid convolution (``kernel`` in their layout) run in their layout (our axes transposed, numpy axes
    ``flips`` reversed), its output placed centred in an input-shaped tensor ((in - out) // 2 before, in their
    layout) with edge replication, as LiverLesionNet places its output. The window's mean is added, so that
overlapping tiles differ (as LiverLesionNet's normalisation makes them) and the overwrite order shows."""

    def __init__(self, kernel, flips=()):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv3d(1, 2, tuple(kernel))
        self.flips = tuple(flips)

    def theirs(self, segment: np.ndarray) -> np.ndarray:
        """Their network on a segment in their layout: the raw output segment (channel 1)."""
        with torch.no_grad():
            window = torch.from_numpy(segment)[None, None].float()
            return (self.conv(window) + window.mean())[0, 1].double().numpy()

    def forward(self, x):
        dims = [2 + a for a in self.flips]
        theirs = (x.flip(dims) if dims else x).permute(0, 1, 4, 3, 2)
        out = self.conv(theirs) + theirs.mean(dim=(1, 2, 3, 4), keepdim=True)
        pads = []
        for have, want in zip(reversed(out.shape[2:]), reversed(theirs.shape[2:])):
            pads += [(want - have) // 2, want - have - (want - have) // 2]
        out = F.pad(out, pads, mode="replicate").permute(0, 1, 4, 3, 2)
        return out.flip(dims) if dims else out


def _ours(theirs_array: np.ndarray, flips) -> np.ndarray:
    """Their (x, y, z) array as our numpy (z, y, x) volume."""
    return np.ascontiguousarray(np.flip(theirs_array, flips).transpose(2, 1, 0)) if flips else \
        np.ascontiguousarray(theirs_array.transpose(2, 1, 0))


@pytest.mark.parametrize("shape_xyz, kernel_xyz, in_xyz, flips", [
    ((19, 16, 5), (2, 3, 4), (9, 9, 10), (0, 1)),   # x, y: remainders; z shorter than the output segment (7)
    ((10, 7, 23), (3, 2, 1), (9, 8, 6), ()),         # x: 7 + 3; y: exactly one output segment; z: remainder
    ((5, 30, 12), (4, 4, 3), (10, 11, 7), (1,)),     # x shorter than the output segment; odd/even mixes
])
def test_tiles_are_their_deepvoxnet_predict(shape_xyz, kernel_xyz, in_xyz, flips, two_torch_threads):
    toy = Toy(kernel_xyz, [2 - a for a in flips]).eval()  # their axis a is our numpy axis 2 - a
    out_xyz = tuple(i - k + 1 for i, k in zip(in_xyz, kernel_xyz))
    image = np.random.default_rng(0).uniform(-1, 1, size=shape_xyz).astype(np.float32)
    want = _ours(their_predict(image, toy.theirs, in_xyz, out_xyz), flips)
    tiling = Tiling(steps="tiles", tile=out_xyz[::-1], source_axes=(2, 1, 0), reversed_axes=tuple(2 - a for a in flips),
                    pad_value=0.0)
    volume = _ours(image, flips)
    got = predict_volume(toy, volume, mode="volume", patch_size=in_xyz[::-1], tiling=tiling, batch_size=3)
    assert np.abs(got[1] - want).max() <= 1e-5
    _, outputs = explain_volume(toy, volume, "saliency", mode="volume", patch_size=in_xyz[::-1], tiling=tiling,
                                return_outputs=True, normalize=False)
    assert np.abs(outputs[1] - want).max() <= 1e-5


def test_their_sampling_segment_is_the_axis_when_the_output_is_longer():
    # N < output segment: one tile whose sampling segment is the whole axis (their min(N, output)), centred on it
    assert tile_axis(5, 10, 8) == [(2 - 5, 0, 5)]
    assert tile_axis(5, 9, 8) == [(2 - 4, 0, 4)]  # odd input, even output: their rounding leaves voxel 4 out
    assert tile_axis(10, 9, 8) == [(0, 0, 8), (8, 8, 9), (2, 2, 9)]  # the appended start last; voxel 9 unwritten
    # a reversed axis counts from the far end
    assert tile_axis(10, 9, 8, reversed_axis=True) == [(10 - 0 - 9, 2, 10), (10 - 8 - 9, 1, 2), (10 - 2 - 9, 1, 8)]


def test_tiles_refuse_what_does_not_apply():
    with pytest.raises(ValueError, match="Tiling.tile"):
        Tiling(steps="tiles")
    with pytest.raises(ValueError, match="Tiling.tile"):
        Tiling(tile=(2, 2, 2))
    with pytest.raises(ValueError, match="source_axes"):
        Tiling(steps="tiles", tile=(2, 2, 2), source_axes=(0, 0, 1))
    with pytest.raises(ValueError, match="reversed_axes"):
        Tiling(steps="tiles", tile=(2, 2, 2), reversed_axes=(3,))
    toy = Toy((1, 1, 1))
    with pytest.raises(ValueError, match="leave window_weights out"):
        predict_volume(toy, np.zeros((4, 4, 4), np.float32), mode="volume", patch_size=2,
                       tiling=Tiling(steps="tiles", tile=(2, 2, 2)), window_weights=np.ones((2, 2, 2)))
