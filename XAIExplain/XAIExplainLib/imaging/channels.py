"""Several images, one per input channel (multi-sequence MRI, CT + PET), as one vector image.

A model with C input channels sees C co-registered images voxel by voxel. The images
come as separate files that need not share a grid (a T2 at 0.5 mm in plane, a FLAIR with
5 mm slices), so they are put on the FIRST image's grid, the grid every map and
prediction lands on:

- an image already on that grid (:func:`imaging.resample.grid_mismatch` finds no
  difference beyond header rounding) is taken voxel for voxel;
- another grid is resampled onto it linearly (``resample=True``), provided the image
  covers the first one's field of view up to :data:`COVERAGE_TOLERANCE` of its own
  voxels; an image that does not (another region, another study, not co-registered)
  is an error naming both images, never a channel padded with a constant;
- with ``resample=False`` (nnU-Net, whose reader stacks channel arrays voxel by voxel
  and refuses differing shapes or spacings: ``SimpleITKIO.read_images``) any grid
  difference is an error naming both images. nnU-Net only warns about a differing
  origin or direction; here it is an error too, since stacking by voxel index would
  then pair voxels from different places.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .resample import grid_mismatch

#: How far (in its own voxels) a channel image may fall short of the first image's field of
#: view (the first image's corner voxel centres) before it is not the same region.
COVERAGE_TOLERANCE = 0.5


def stack_channels(images: Sequence[sitk.Image], labels: Sequence[str], resample: bool = True) -> sitk.Image:
    """One float32 vector image (a component per channel, in the order given) on ``images[0]``'s grid.

    ``labels`` name the images in messages (a file name, or the channel's name). A single
    image comes back as it is (scalar or already a vector image).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} image(s) but {len(labels)} label(s)")
    if not images:
        raise ValueError("no channel images given")
    if len(images) == 1:
        return images[0]
    first, first_label = images[0], labels[0]
    for image, label in zip(images, labels):
        _check_scalar(image, label)
    channels = []
    for image, label in zip(images, labels):
        problem = grid_mismatch(image, first)
        if problem == "":
            on_grid = sitk.Cast(image, sitk.sitkFloat32)
        elif not resample:
            raise ValueError(f"{label} is not on the grid of {first_label} ({problem}); this model stacks its "
                             "channels voxel by voxel as nnU-Net does, so every channel must share the first "
                             "one's grid: resample the images onto it first (e.g. with Slicer's Resample Scalar "
                             "Volume, or SimpleITK.Resample with the first image as reference)")
        else:
            _check_coverage(image, label, first, first_label, problem)
            default = float(sitk.GetArrayViewFromImage(image).min())
            on_grid = sitk.Resample(image, first, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32)
        on_grid.CopyInformation(first)  # exact geometry of the first (header rounding included)
        channels.append(on_grid)
    return sitk.Compose(channels)


def _check_scalar(image: sitk.Image, label: str) -> None:
    if not isinstance(image, sitk.Image):
        raise TypeError(f"{label} must be a SimpleITK.Image, got {type(image).__name__}")
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise ValueError(f"{label} has {components} components per voxel; when the channels are given as "
                         "separate images, each must hold one value per voxel")


def _check_coverage(image: sitk.Image, label: str, first: sitk.Image, first_label: str, problem: str) -> None:
    """Refuse ``image`` when the first image's corner voxel centres fall outside it by more than the tolerance."""
    if image.GetDimension() != first.GetDimension():
        raise ValueError(f"{label} is {image.GetDimension()}D but {first_label} is {first.GetDimension()}D; "
                         "every channel image must have the first one's dimension")
    size = np.asarray(image.GetSize(), dtype=float)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    for corner in itertools.product(*[(0.0, n - 1.0) for n in first.GetSize()]):
        point = first.TransformContinuousIndexToPhysicalPoint(corner)
        index = np.asarray(image.TransformPhysicalPointToContinuousIndex(point))
        outside = np.maximum(np.maximum(-0.5 - index, index - (size - 0.5)), 0.0)
        if np.any(outside > COVERAGE_TOLERANCE):
            miss = float(np.linalg.norm(outside * spacing))
            raise ValueError(
                f"{label} does not cover the region of {first_label} (its grid differs: {problem}; a corner of "
                f"{first_label} lies {miss:.1f} mm outside {label}); the channels must be co-registered images "
                "of the same region (register them, or crop them to the same field of view)")
