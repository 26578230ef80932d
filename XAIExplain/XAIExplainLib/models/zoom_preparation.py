"""A card's ``"zoom"`` resampling (:mod:`models.card_steps`): the image brought onto the model grid
as pyliverlesionseg's prediction code brings it (Tang et al., Eur J Nucl Med Mol Imaging 47, 2020).

Their liver pipeline zooms the CT (pymirc ``zoom3d``, :mod:`imaging.zoom`) to 1.5 mm voxels,
median filters it (3 x 3 x 3, ``scipy.ndimage.median_filter``), zooms it to 3 mm, normalises
the intensities of that whole volume and cuts the network's input segment around its centre
voxel (``ExtractSegment3D2`` at ``shape // 2``), filling what lies beyond the volume with 0.
Here the same steps run on the numpy ``(z, y, x)`` array of an LPS image; their arrays are
RAS ``(x, y, z)``, so the centre voxel ``n // 2`` of their x and y axes is counted from the
other end of ours: ``n - 1 - n // 2``. The model grid is the zoomed grid shifted by whole
voxels to the segment, so the maps and labels go back to the image with the geometry the
network saw.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..imaging.resample import Grid
from ..imaging.zoom import zoom_factors, zoom_volume, zoomed_grid
from .card import ModelCard

#: numpy axes (z, y, x) that their RAS arrays hold reversed (x and y of an LPS image).
REVERSED_AXES = (False, True, True)


def zoom_grids(card: ModelCard, input_grid: Grid) -> tuple[Grid, Grid, Grid, tuple[int, int, int]]:
    """``(finest, zoomed, model, offsets)``: the finest grid on the way (the median filter's, for
    the memory check), the zoomed volume's grid, the segment's grid and the zoomed voxel of the
    segment's first voxel, per numpy axis."""
    spec = card.input.resampling
    if spec.median_spacing is not None:
        first = zoomed_grid(input_grid, zoom_factors(input_grid, spec.median_spacing))
        zoomed = zoomed_grid(first, _second_zoom(card))
        finest = first if np.prod(first.shape) > np.prod(zoomed.shape) else zoomed
    else:
        zoomed = finest = zoomed_grid(input_grid, zoom_factors(input_grid, card.input.spacing))
    size = _segment_size(card, zoomed.shape)
    offsets = tuple(_offset(n, s, rev) for n, s, rev in zip(zoomed.shape, size, REVERSED_AXES))
    direction = np.asarray(zoomed.direction, dtype=float).reshape(3, 3)
    shift_xyz = np.asarray(list(reversed(offsets)), dtype=float) * np.asarray(zoomed.spacing)
    origin = np.asarray(zoomed.origin) + direction @ shift_xyz
    model = Grid(tuple(reversed(size)), zoomed.spacing, tuple(float(o) for o in origin), zoomed.direction)
    return finest, zoomed, model, offsets


def zoomed_array(card: ModelCard, volume: sitk.Image) -> np.ndarray:
    """The image zoomed (and median filtered) as the card says, before the intensity transform (float64)."""
    spec = card.input.resampling
    grid = Grid.from_image(volume)
    array = sitk.GetArrayFromImage(volume).astype(np.float64)
    if spec.median_spacing is None:
        return zoom_volume(array, zoom_factors(grid, card.input.spacing))
    array = zoom_volume(array, zoom_factors(grid, spec.median_spacing))
    array = ndimage.median_filter(array, size=spec.median_size)
    return zoom_volume(array, _second_zoom(card))


def cut_segment(array: np.ndarray, offsets, size, pad: float) -> np.ndarray:
    """``size`` voxels of ``array`` from ``offsets`` on (negative: before its start), ``pad`` beyond it."""
    out = np.full(tuple(size), pad, dtype=np.float32)
    source, target = [], []
    for n, s, o in zip(array.shape, size, offsets):
        start, stop = max(o, 0), min(o + s, n)
        source.append(slice(start, max(stop, start)))
        target.append(slice(start - o, start - o + max(stop - start, 0)))
    out[tuple(target)] = array[tuple(source)]
    return out


def _second_zoom(card: ModelCard) -> tuple[float, ...]:
    """Their second zoom: median-filter spacing / model spacing (1.5 mm / 3 mm = 0.5)."""
    return tuple(m / s for m, s in zip(card.input.resampling.median_spacing, card.input.spacing))


def _segment_size(card: ModelCard, zoomed_shape) -> tuple[int, int, int]:
    if card.input.size is not None:
        return tuple(int(s) for s in card.input.size)
    if card.input.patch_size is not None:
        return tuple(max(int(n), int(p)) for n, p in zip(zoomed_shape, card.input.patch_size))
    return tuple(int(n) for n in zoomed_shape)


def _offset(n: int, size: int, reversed_axis: bool) -> int:
    """The zoomed voxel of the segment's first voxel: their centre voxel ``n // 2`` on the segment's
    ``size // 2``, counted from the far end along an axis their arrays hold reversed."""
    if reversed_axis:
        return (n - 1 - n // 2) - (size - 1 - size // 2)
    return n // 2 - size // 2
