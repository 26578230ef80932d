"""Read an input with SimpleITK and refuse what no model should be shown.

A volume that is empty, constant or holds NaN voxels would not crash a model;
it would quietly produce a meaningless heatmap.  These checks run on every
input before any computation, and a mask is checked against its image's grid,
so each problem is reported as one line naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging import reading
from ..imaging.resample import grid_mismatch
from .discovery import InputItem
from .errors import UserError

def read_item(item: InputItem) -> sitk.Image | list[sitk.Image]:
    """The image of ``item`` (a file or a DICOM series), checked by :func:`check_image`; for an input of one
    file per input channel, the list of their images in channel order, each checked."""
    if item.error is not None:
        raise item.error
    if item.channel_paths:
        images = [read_image(path, str(path)) for path in item.channel_paths]
        for image, path in zip(images, item.channel_paths):
            check_image(image, str(path))
        return images
    image = read_image(item.path, item.source, item.files)
    check_image(image, item.source)
    return image


def read_image(path: Path, source: str | None = None, files: tuple[str, ...] = ()) -> sitk.Image:
    """Read a file or the given DICOM slice files with :func:`imaging.reading.read_image`'s integrity
    checks; every refusal becomes a :class:`UserError` naming ``source``."""
    try:
        return reading.read_image(path, files)
    except reading.ImageReadError as exc:
        subject = source or exc.subject
        raise UserError(subject, exc.problem) from exc


def check_image(image: sitk.Image, source: str) -> None:
    """Raise :class:`UserError` for an image a model cannot meaningfully explain."""
    dims = image.GetDimension()
    if dims not in (2, 3):
        raise UserError(source, f"is a {dims}D image; only 2D images and 3D volumes can be "
                                "explained (split 4D series into 3D volumes first)")
    if image.GetNumberOfPixels() == 0 or min(image.GetSize()) == 0:
        raise UserError(source, f"is empty (size {' x '.join(map(str, image.GetSize()))})")
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise UserError(source, "holds complex values; give a magnitude image")
    from ..engine.validation import non_finite_problem

    array = sitk.GetArrayViewFromImage(image)
    problem = non_finite_problem(array)  # the input rule every entry point applies
    if problem:
        raise UserError(source, problem)
    low, high = array.min(), array.max()
    if low == high:
        raise UserError(source, f"is constant (every voxel is {low.item():g}); there is nothing "
                                "to explain")


def read_mask(path: Path, image: sitk.Image, input_source: str) -> sitk.Image:
    """Read a mask and require it to lie on ``image``'s grid exactly.

    Resampling a mask silently would move a region of interest by up to half
    a voxel; a mask from another series or reconstruction is refused instead.
    """
    mask = read_image(Path(path))
    problem = grid_mismatch(mask, image)
    if problem:
        raise UserError(path, f"does not match the grid of {input_source}: {problem}")
    if mask.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(path, "a mask must have one value per voxel")
    values = sitk.GetArrayViewFromImage(mask)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise UserError(path, f"has {bad} NaN or infinite voxel(s); a mask holds 0 outside the region "
                              "and nonzero inside")
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise UserError(path, "is empty (no nonzero voxel)")
    return mask
