"""How far the image edge reaches into a 2D network's explained layers, and the margin that hides it.

Why: convolutions pad with zeros. At the input a zero may well be the background (a CT
window maps air to 0), but inside the network the background's features are not zero
(batch norm shifts, biases), so every cell within the receptive-field radius of the edge
holds an "edge" activation no cell inside the image has. A model trained on such slices
learns to ignore them (its output's gradient there is close to 0), yet Grad-CAM weights
each channel by its gradient averaged over the whole map (Selvaraju et al., ICCV 2017,
eq. 1-2), so these cells light up as a frame along the field of view. HiResCAM (Draelos &
Carin, 2020) describes the same class of artefact: Grad-CAM can highlight locations whose
own gradient is zero. On lung1 with lung-nodule-2d the frame held the slice maximum.

The fix keeps the model and the method as they are and moves the edge out of sight: the
explaining forward sees each slice extended by a margin of the model's background (the
value its preprocessing pads with), deep enough that the edge activations fall inside the
margin, and the maps are cropped back to the slice. :func:`edge_reach` measures that depth
for any network by comparing the layer's activations on a background slice with those on the
same slice surrounded by more background: cells that differ are the ones the edge reaches.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from .capture import explaining, run_pass
from .layers import LayerSpec, resolve_layers

#: Activations that differ by more than this share of the layer's largest activation count as
#: reached by the edge (a constant input gives bit-identical cells away from the edge).
TOLERANCE = 1e-4

_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def edge_reach(model: nn.Module, layer: LayerSpec, background, slice_shape: tuple[int, int]) -> int:
    """Input pixels from the slice edge that the edge changes at ``layer`` (the deepest of several layers).

    ``background`` holds one value per input channel (network units); ``slice_shape`` is (H, W).
    The answer is rounded up to whole cells of the layer, so a margin of this size keeps the
    layer's cells aligned with the slice's. 0 when nothing can be moved: the layer has no 2D
    grid, its grid does not scale with the input, or the network refuses a larger slice (a
    fixed-size head or position embedding).
    """
    values = torch.as_tensor(background, dtype=torch.float32).reshape(1, -1, 1, 1)
    height, width = (int(n) for n in slice_shape)
    named = layer is None or isinstance(layer, str) or (
        isinstance(layer, (list, tuple)) and all(isinstance(item, str) for item in layer))
    key = (repr(layer), height, width, tuple(float(v) for v in values.reshape(-1))) if named else None
    known = _CACHE.get(model, {}).get(key) if key is not None else None
    if known is not None:  # a cohort explains many inputs on the same grid: measure once
        return known
    reach = _measure(model, layer, values, height, width)
    if key is not None:
        _CACHE.setdefault(model, {})[key] = reach
    return reach


def _measure(model: nn.Module, layer: LayerSpec, values: torch.Tensor, height: int, width: int) -> int:
    """:func:`edge_reach` without the cache."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")

    def slice_of(pad: int) -> torch.Tensor:
        return values.expand(1, values.shape[1], height + 2 * pad, width + 2 * pad).to(device)

    limit = max(height, width)
    reach = 0
    try:
        for named in resolve_layers(model, layer, slice_of(0)):
            small = _activation(model, named, slice_of(0))
            if small is None:
                continue
            stride = max(height / small.shape[2], width / small.shape[3])
            # A surround deeper than the reach leaves the plain slice's cells untouched by the new
            # edge; steps of 32 input pixels are a multiple of any usual total stride.
            pad = 32
            while True:
                large = _activation(model, named, slice_of(pad))
                cells = None if large is None else _reached_cells(small, large, pad, (height, width))
                if cells is None:
                    break
                pixels = int(math.ceil(cells * stride))
                if pixels < pad or pad >= limit:
                    reach = max(reach, min(pixels, limit))
                    break
                pad *= 2
        if reach:
            with explaining(model), torch.no_grad():
                model(slice_of(reach))  # the whole network must take the extended slice
    except (RuntimeError, ValueError):
        return 0
    return reach


def _activation(model: nn.Module, layer: tuple[str, nn.Module], x: torch.Tensor) -> torch.Tensor | None:
    """The layer's channels-first output for ``x`` (a forward that stops after it), or None when the
    layer's output has no grid in this layout (tokens: the edge margin does not apply)."""
    with explaining(model), torch.no_grad():
        activation = run_pass(model, x, None, layers=[layer], backward=False,
                              stop_after_layers=True).activations[layer[0]]
    return activation.detach().float() if activation.dim() == 4 else None


def _reached_cells(small: torch.Tensor, large: torch.Tensor, pad: int, slice_shape: tuple[int, int]) -> int | None:
    """Depth in cells (from the nearest edge, counting the edge cell as 1) of the cells of ``small`` that
    differ from the same cells of ``large``; None when the two maps do not line up cell for cell."""
    offsets = []
    for axis, size in ((2, slice_shape[0]), (3, slice_shape[1])):
        extra = large.shape[axis] - small.shape[axis]
        if extra % 2 or extra * size != 2 * pad * small.shape[axis]:
            return None  # the layer's grid does not scale with the input: no cell-for-cell comparison
        offsets.append(extra // 2)
    rows, cols = small.shape[2], small.shape[3]
    inner = large[:, :, offsets[0]:offsets[0] + rows, offsets[1]:offsets[1] + cols]
    scale = float(small.abs().max().clamp_min(1e-12))
    differs = ((small - inner).abs().amax(dim=(0, 1)) > TOLERANCE * scale)
    if not bool(differs.any()):
        return 0
    r = torch.arange(rows).reshape(-1, 1)
    c = torch.arange(cols).reshape(1, -1)
    depth = torch.minimum(torch.minimum(r, rows - 1 - r), torch.minimum(c, cols - 1 - c)) + 1
    return int(depth[differs.cpu()].max())


def pad_slices(array: torch.Tensor, axis: int, margin: int, background) -> torch.Tensor:
    """``(C, Z, Y, X)`` extended by ``margin`` voxels of ``background`` (one value per channel) on both
    sides of the two in-slice axes (every axis but spatial ``axis``)."""
    if margin <= 0:
        return array
    values = torch.as_tensor(background, dtype=array.dtype).reshape(-1)
    shape = list(array.shape)
    for spatial in range(3):
        if spatial != axis:
            shape[spatial + 1] += 2 * margin
    out = values.reshape((-1,) + (1,) * 3).expand(shape).clone()
    out[crop_index(axis, margin, array.shape[1:], channels=True)] = array
    return out


def crop_index(axis: int, margin: int, spatial: tuple[int, ...], channels: bool = False) -> tuple[slice, ...]:
    """The index that takes the original ``spatial`` (Z, Y, X) extent out of a :func:`pad_slices` result."""
    index = tuple(slice(None) if a == axis else slice(margin, margin + int(n)) for a, n in enumerate(spatial))
    return ((slice(None),) if channels else ()) + index
