"""``xai.evaluate`` takes SimpleITK maps and masks, as ``explain_image`` returns them (issue 25 section 5)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import XAIExplainLib as xai


def _image(array, spacing=(0.7, 0.8, 3.0), origin=(1.0, 2.0, 3.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_images_give_the_numbers_of_the_arrays_with_the_images_spacing():
    rng = np.random.default_rng(0)
    heat = rng.random((5, 12, 10)).astype(np.float32)
    mask = np.zeros((5, 12, 10), np.uint8)
    mask[2, 4:8, 3:6] = 1
    heat[2, 0, 0] = 2.0  # the peak: 3.8 mm from the mask (5 voxels)
    metrics = ["dice_sweep", "pointing_game", "energy_pointing_game"]
    from_images = xai.evaluate(None, None, _image(heat), mask=_image(mask), metrics=metrics, tolerance_mm=4.0)
    spacing = (3.0, 0.8, 0.7)  # numpy order
    from_arrays = xai.evaluate(None, None, torch.from_numpy(heat)[None], mask=torch.from_numpy(mask), metrics=metrics,
                               spacing=spacing, tolerance_mm=4.0)
    assert from_images == from_arrays
    assert from_images["pointing_game"] == [1.0]  # within 4 mm only with the image spacing


def test_a_mask_on_another_grid_is_refused():
    heat = np.random.default_rng(1).random((3, 6, 6)).astype(np.float32)
    mask = np.ones((3, 6, 6), np.uint8)
    with pytest.raises(ValueError, match="not on the map's grid.*origin"):
        xai.evaluate(None, None, _image(heat), mask=_image(mask, origin=(0.0, 2.0, 3.0)), metrics=["pointing_game"])
    with pytest.raises(ValueError, match="size"):
        xai.evaluate(None, None, _image(heat), mask=_image(np.ones((3, 6, 5), np.uint8)), metrics=["pointing_game"])
