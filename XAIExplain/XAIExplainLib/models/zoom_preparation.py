"""A card's ``"zoom"`` resampling (:mod:`models.card_steps`): the image brought onto the model grid
as pyliverlesionseg's prediction code brings it (Tang et al., Eur J Nucl Med Mol Imaging 47, 2020).

Their liver pipeline zooms the CT (pymirc ``zoom3d``, :mod:`imaging.zoom`) to 1.5 mm voxels,
median filters it (3 x 3 x 3, ``scipy.ndimage.median_filter``), zooms it to 3 mm, normalises
the intensities of that whole volume and cuts the network's input segment around its centre
voxel (``ExtractSegment3D2`` at ``shape // 2``), filling what lies beyond the volume with 0.
Their lesion pipeline normalises first, zooms the CT and the liver mask to 1 x 1 x 3 mm, keeps
the dilated liver (everything else -0.5) and crops to the dilated liver's bounding box (the model
grid; their windows then tile it, :func:`engine.windows.tile_placements`).

Here the same steps run on the numpy ``(z, y, x)`` array of an LPS image; their arrays are
RAS ``(x, y, z)``, so the centre voxel ``n // 2`` of their x and y axes is counted from the
other end of ours: ``n - 1 - n // 2``. The model grid is the zoomed grid shifted by whole
voxels to the segment, so maps and labels go back to the image with the geometry the network
saw.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..imaging.resample import Grid
from ..imaging.zoom import zoom_factors, zoom_volume, zoomed_grid
from .card import ModelCard

#: numpy axes (z, y, x) that their RAS arrays hold reversed (x and y of an LPS image).
REVERSED_AXES = (False, True, True)


def crop_to_abdomen(card: ModelCard, volumes: Sequence[sitk.Image]) -> list[sitk.Image]:
    """The volumes cut to the abdomen their crop (the card's method: :mod:`models.liver_crop` for a CT,
    :mod:`models.liver_crop_mr` for an MR) finds in the first one; the cut images keep their place in
    space, so results go back onto the whole image."""
    from .liver_crop import CropError

    spec = card.input.resampling.crop
    values = sitk.GetArrayViewFromImage(volumes[0]).transpose(2, 1, 0)  # their (x, y, z) LPS array
    try:
        box = spec.box(values, volumes[0].GetSpacing())
    except CropError as exc:
        what = (f"model '{card.name}' crops the {spec.modality} to the abdomen ({spec.extent}) as pyliverlesionseg "
                f"does, and this image has no such abdomen: {exc}")
        if spec.required:
            raise ValueError(f"{what}; give {spec.needs}") from exc
        warnings.warn(what + "; the whole image is used instead", stacklevel=2)
        return list(volumes)
    return [volume[box] for volume in volumes]


def zoom_grids(card: ModelCard, input_grid: Grid) -> tuple[Grid, Grid]:
    """``(finest, zoomed)``: the finest grid on the way (the median filter's, for the memory check) and
    the zoomed volume's grid."""
    spec = card.input.resampling
    if spec.median_spacing is None:
        zoomed = zoomed_grid(input_grid, zoom_factors(input_grid, card.input.spacing))
        return zoomed, zoomed
    first = zoomed_grid(input_grid, zoom_factors(input_grid, spec.median_spacing))
    zoomed = zoomed_grid(first, _second_zoom(card))
    return (first if np.prod(first.shape) > np.prod(zoomed.shape) else zoomed), zoomed


def zoomed_array(card: ModelCard, array: np.ndarray, grid: Grid) -> np.ndarray:
    """``array`` on ``grid`` zoomed (and median filtered) as the card says (float64)."""
    spec = card.input.resampling
    if spec.median_spacing is None:
        return zoom_as_theirs(array, zoom_factors(grid, card.input.spacing))
    array = zoom_as_theirs(array, zoom_factors(grid, spec.median_spacing))
    array = ndimage.median_filter(array, size=spec.median_size)
    return zoom_as_theirs(array, _second_zoom(card))


def zoom_as_theirs(array: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """:func:`imaging.zoom.zoom_volume` on their RAS orientation of the array (x and y reversed), so that
    every weight is computed as theirs is: a mask value of exactly 0.5 then rounds as theirs does."""
    flip = tuple(axis for axis, reversed_axis in enumerate(REVERSED_AXES) if reversed_axis)
    return np.flip(zoom_volume(np.flip(array, flip), zooms), flip)


def segment_grid(zoomed: Grid, offsets: Sequence[int], size: Sequence[int]) -> Grid:
    """The grid of ``size`` voxels (numpy order) whose first voxel is zoomed voxel ``offsets``."""
    direction = np.asarray(zoomed.direction, dtype=float).reshape(3, 3)
    shift_xyz = np.asarray(list(reversed(offsets)), dtype=float) * np.asarray(zoomed.spacing)
    origin = np.asarray(zoomed.origin) + direction @ shift_xyz
    return Grid(tuple(int(s) for s in reversed(size)), zoomed.spacing, tuple(float(o) for o in origin),
                zoomed.direction)


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


def centred_offset(n: int, size: int, reversed_axis: bool) -> int:
    """The zoomed voxel of the segment's first voxel: their centre voxel ``n // 2`` on the segment's
    ``size // 2``, counted from the far end along an axis their arrays hold reversed."""
    if reversed_axis:
        return (n - 1 - n // 2) - (size - 1 - size // 2)
    return n // 2 - size // 2


def dilation_structure(steps: int) -> np.ndarray:
    """Their ``iterate_structure(generate_binary_structure(3, 2), steps)``: the 18-neighbourhood grown
    by itself ``steps - 1`` times."""
    return ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), steps)


def mask_region(card: ModelCard, region: np.ndarray, input_grid: Grid) -> np.ndarray:
    """The mask model's class (``region``: boolean, numpy order, on the input grid) on the zoomed grid, kept
    above 0.5 after the zoom and dilated: their lesion network's liver."""
    mask = card.input.resampling.mask
    region = np.asarray(region, dtype=bool)
    if region.shape != input_grid.shape:
        raise ValueError(f"model '{card.name}': the {mask.label} region has shape {region.shape} but the image is "
                         f"{input_grid.shape} (z, y, x); give the region '{mask.model}' predicts for this image")
    if not region.any():
        raise ValueError(f"model '{card.name}' is fed the {mask.label} that '{mask.model}' segments, and "
                         f"'{mask.model}' finds no {mask.label} in this image; give an image that shows it")
    zoomed = zoom_as_theirs(region.astype(np.float64), zoom_factors(input_grid, card.input.spacing)) > 0.5
    if mask.dilation:
        zoomed = ndimage.binary_dilation(zoomed, structure=dilation_structure(mask.dilation))
    return zoomed


def box_segment(card: ModelCard, region: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The region's bounding box as ``(offsets, size)``: their crop (``bbox_liver``) itself for a card whose
    windows are their tiles (``input.windows``), else grown (centred) to the card's patch size."""
    where = np.argwhere(region)
    low, high = where.min(axis=0), where.max(axis=0) + 1
    size = high - low
    if card.input.windows.tiles:
        return tuple(int(o) for o in low), tuple(int(s) for s in size)
    patch = card.input.patch_size or card.input.size or tuple(size)
    grown = np.maximum(size, np.asarray(patch))
    offsets = low - (grown - size) // 2
    return tuple(int(o) for o in offsets), tuple(int(s) for s in grown)


def beyond_box(array: np.ndarray, region: np.ndarray, pad: float) -> np.ndarray:
    """``array`` with ``pad`` outside the region's bounding box: their crop, before their segment
    extraction pads with 0 where a window runs past it."""
    where = np.argwhere(region)
    low, high = where.min(axis=0), where.max(axis=0) + 1
    out = np.full(array.shape, pad, dtype=array.dtype)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    out[box] = array[box]
    return out


def _second_zoom(card: ModelCard) -> tuple[float, ...]:
    """Their second zoom: median-filter spacing / model spacing (1.5 mm / 3 mm = 0.5)."""
    return tuple(m / s for m, s in zip(card.input.resampling.median_spacing, card.input.spacing))


def segment_size(card: ModelCard, zoomed_shape) -> tuple[int, int, int]:
    if card.input.size is not None:
        return tuple(int(s) for s in card.input.size)
    if card.input.patch_size is not None:
        return tuple(max(int(n), int(p)) for n, p in zip(zoomed_shape, card.input.patch_size))
    return tuple(int(n) for n in zoomed_shape)
