"""Grids, resampling and intensity transforms: geometry must survive every round trip."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib.imaging import intensity
from XAIExplainLib.imaging.resample import Grid, centered_grid, image_from_numpy, resample, resample_array
from XAIExplainLib.models.card import ModelCard
from XAIExplainLib.models.preprocessing import model_grid_for, prepare

FLIP_Y = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _image(shape=(6, 40, 50), spacing=(5.0, 0.8, 0.7), direction=FLIP_Y, origin=(-20.0, 35.0, 7.0)):
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(0, 100, shape).astype(np.float32))
    image.SetSpacing(tuple(reversed(spacing)))
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def _card(dims=2, spacing=(2.0, 2.0), size=(32, 32), patch=None, window=(-100.0, 100.0)):
    data = {"name": "t", "task": "classification", "spatial_dims": dims,
            "input": {"channels": 1, "spacing": list(spacing), "size": size and list(size),
                      "patch_size": patch and list(patch),
                      "intensity": {"mode": "window", "window": list(window)}},
            "classes": ["a", "b"], "weights": {"file": "x.ts", "format": "torchscript"}}
    return ModelCard.from_dict(data)


def test_centered_grid_keeps_centre_and_direction():
    grid = Grid.from_image(_image())
    new = centered_grid(grid, (None, 2.0, 2.0), (None, 32, 32))
    assert new.direction == grid.direction
    np.testing.assert_allclose(new.physical_center(), grid.physical_center(), atol=1e-9)
    assert new.shape == (6, 32, 32) and new.spacing_zyx == (5.0, 2.0, 2.0)
    covering = centered_grid(grid, (None, 2.0, 2.0))
    assert covering.shape == (6, 16, 18)  # ceil(40 * 0.8 / 2), ceil(50 * 0.7 / 2)


def test_resample_to_model_grid_and_back_is_exact_in_geometry():
    image = _image()
    grid = Grid.from_image(image)
    model = centered_grid(grid, (None, 1.6, 1.4), None)
    there = resample(image, model, "linear", 0.0, antialias=True)
    back = resample(there, grid, "linear", 0.0)
    for a, b in ((back.GetSize(), image.GetSize()), (back.GetSpacing(), image.GetSpacing()),
                 (back.GetOrigin(), image.GetOrigin()), (back.GetDirection(), image.GetDirection())):
        np.testing.assert_allclose(a, b)


OBLIQUE = tuple(sitk.VersorTransform((0.3, -0.2, 0.9), 0.4).GetMatrix())


@pytest.mark.parametrize("direction", [FLIP_Y, OBLIQUE], ids=["flip-y", "oblique"])
@pytest.mark.parametrize("fill", [0.0, 1.0])
@pytest.mark.parametrize("shape_spacing", [((None, 14, 20), (None, 1.9, 2.3)),   # a per-slice model grid
                                           ((4, 28, 30), (7.0, 1.5, 1.1))],     # a 3D model grid
                         ids=["in-plane", "3d"])
def test_resample_array_equals_sitk_resample(direction, fill, shape_spacing):
    """The per-axis two-tap path gives SimpleITK's linear values, its border rule and its fill
    outside the grid (the model grid is smaller than the input's extent here, and larger along x)."""
    shape, spacing = shape_spacing
    grid = Grid.from_image(_image(direction=direction))
    model = centered_grid(grid, spacing, shape)
    values = np.random.default_rng(1).random(model.shape).astype(np.float32)
    expected = sitk.GetArrayFromImage(resample(model.image_from_array(values), grid, "linear", fill))
    got = resample_array(values, model, grid, fill)
    assert got.shape == grid.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0.0, atol=1e-5)
    assert (got == fill).any() and (got != fill).any()   # both outside and inside were hit


def test_resample_array_other_direction_goes_through_sitk():
    source = Grid.from_image(_image(direction=OBLIQUE))
    target = Grid.from_image(_image(direction=FLIP_Y))
    values = np.random.default_rng(2).random(source.shape).astype(np.float32)
    expected = sitk.GetArrayFromImage(resample(source.image_from_array(values), target, "linear", 0.5))
    np.testing.assert_array_equal(resample_array(values, source, target, 0.5), expected)
    with pytest.raises(ValueError, match="does not match the grid shape"):
        resample_array(values[:-1], source, target)


def test_antialiasing_averages_noise_when_downsampling():
    image = _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    grid = centered_grid(Grid.from_image(image), (None, 3.2, 2.8))
    plain = sitk.GetArrayFromImage(resample(image, grid, "linear", 0.0))
    smooth = sitk.GetArrayFromImage(resample(image, grid, "linear", 0.0, antialias=True))
    assert smooth[:, 2:-2, 2:-2].std() < 0.6 * plain[:, 2:-2, 2:-2].std()


def test_prepare_2d_card_keeps_slices_and_restores_on_input_grid():
    image = _image()
    card = _card()
    prepared = prepare(card, image)
    assert prepared.array.shape == (1, 6, 32, 32)
    assert 0.0 <= prepared.array.min() and prepared.array.max() <= 1.0
    restored = prepared.restore_map(np.linspace(-0.5, 1.5, 6 * 32 * 32).reshape(6, 32, 32))
    assert restored.GetSize() == image.GetSize() and restored.GetDirection() == image.GetDirection()
    np.testing.assert_allclose(restored.GetOrigin(), image.GetOrigin())
    values = sitk.GetArrayFromImage(restored)
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0


def test_prepare_3d_pads_small_volumes_to_the_patch():
    card = _card(dims=3, spacing=(2.0, 2.0, 2.0), size=None, patch=(16, 16, 16))
    grid = model_grid_for(card, Grid.from_image(_image()))
    assert grid.shape == (16, 16, 18)  # z: 30 mm -> 15 voxels, padded to the patch


def test_prepare_numpy_and_2d_images():
    card = _card(size=None)
    array = np.zeros((3, 20, 20), np.float32)
    prepared = prepare(card, array, spacing=(5.0, 1.0, 1.0))
    assert prepared.array.shape == (1, 3, 10, 10)
    assert isinstance(prepared.restore_map(np.zeros((3, 10, 10))), np.ndarray)
    flat = sitk.GetImageFromArray(np.zeros((20, 30), np.float32))
    prepared = prepare(card, flat)
    restored = prepared.restore_map(np.ones(prepared.spatial_shape))
    assert restored.GetDimension() == 2 and restored.GetSize() == (30, 20)
    with pytest.raises(ValueError, match="needs a volume"):
        prepare(_card(dims=3, spacing=(1, 1, 1), size=(4, 4, 4)), flat)


def test_restore_labels_argmax_of_resampled_probabilities():
    image = _image(shape=(4, 20, 20), spacing=(2.0, 1.0, 1.0))
    card = _card(dims=3, spacing=(2.0, 2.0, 2.0), size=None)
    prepared = prepare(card, image)
    probs = np.zeros((2,) + prepared.spatial_shape, np.float32)
    probs[0] = 1.0
    probs[:, :, 3:7, 3:7] = [[[[0.1]]], [[[0.9]]]]
    labels = sitk.GetArrayFromImage(prepared.restore_labels(probs))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    assert labels.shape == (4, 20, 20)
    assert labels[:, 8:12, 8:12].all() and not labels[:, :4, :4].any()


def test_intensity_transforms():
    x = np.array([-300.0, -100.0, 0.0, 100.0, 500.0])
    np.testing.assert_allclose(intensity.window(x, -100, 100), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(intensity.scale(x, 100.0, 200.0), (x - 100) / 200)
    z = intensity.zscore(x)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    assert not intensity.zscore(np.ones(4)).any()
    with pytest.raises(ValueError, match="low < high"):
        intensity.window(x, 5, 5)
    with pytest.raises(ValueError, match="std must be > 0"):
        intensity.scale(x, 0, 0)
    with pytest.raises(ValueError, match="spacing must hold 3 positive"):
        image_from_numpy(np.zeros((2, 2, 2)), (1.0, 1.0))
