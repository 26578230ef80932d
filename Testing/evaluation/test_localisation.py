"""Map-only evaluation metrics on constructed cases with known answers, 2D and 3D.

Each metric is checked on a perfect map (equal to the mask), an inverted map
(1 - mask), a uniform map and at least one case with a non-trivial answer
computed by hand.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def box_mask(dims, n=2, size=10, low=3, high=7):
    """(n, *S) bool masks with a cube/square [low, high) in every axis."""
    mask = torch.zeros((n,) + (size,) * dims, dtype=torch.bool)
    region = (slice(None),) + (slice(low, high),) * dims
    mask[region] = True
    return mask


def cases(mask):
    """Perfect, inverted and uniform maps for a mask."""
    perfect = mask.float()
    return {"perfect": perfect, "inverted": 1.0 - perfect, "uniform": torch.full_like(perfect, 0.7)}


# --- dice sweep -------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [2, 3])
def test_dice_sweep_perfect_inverted_uniform(dims):
    mask = box_mask(dims)
    maps = cases(mask)
    perfect = ev.dice_sweep(maps["perfect"], mask)
    assert torch.allclose(perfect.dice, torch.ones_like(perfect.dice))
    assert torch.allclose(perfect.best_threshold, torch.full((2,), 0.05))  # smallest best threshold
    assert torch.allclose(perfect.otsu_threshold, torch.full((2,), 0.5))  # middle of the tied cuts
    assert torch.allclose(perfect.otsu_dice, torch.ones(2))
    for name in ("inverted", "uniform"):
        result = ev.dice_sweep(maps[name], mask)
        assert torch.count_nonzero(result.dice) == 0, name
        assert torch.count_nonzero(result.best_dice) == 0, name
        assert torch.count_nonzero(result.otsu_dice) == 0, name
    assert perfect.thresholds.numel() == 19
    assert perfect.dice.shape == (2, 19)


@pytest.mark.parametrize("dims", [2, 3])
def test_dice_sweep_finds_the_threshold_that_drops_a_halo(dims):
    mask = box_mask(dims, n=1)
    halo = box_mask(dims, n=1, low=2, high=8) & ~mask
    maps = 0.8 * mask.float() + 0.3 * halo.float()  # normalised: 1 inside, 0.375 in the halo
    result = ev.dice_sweep(maps, mask)
    inside, ring = int(mask.sum()), int(halo.sum())
    expected_low = 2 * inside / (2 * inside + ring)
    thresholds = result.thresholds
    assert torch.allclose(result.dice[0, thresholds < 0.375], torch.tensor(expected_low))
    assert torch.allclose(result.dice[0, thresholds > 0.375], torch.tensor(1.0))
    assert result.best_threshold.item() == pytest.approx(0.40)
    assert result.best_dice.item() == pytest.approx(1.0)


def test_dice_sweep_custom_thresholds_and_map_scale_does_not_matter():
    mask = box_mask(2, n=1)
    maps = mask.float() * 250.0 - 40.0  # raw attribution units; min-max makes them 0 / 1
    result = ev.dice_sweep(maps, mask[0], thresholds=[0.2, 0.9])
    assert result.thresholds.tolist() == pytest.approx([0.2, 0.9])
    assert result.dice.tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ev.dice_sweep(maps, mask, thresholds=[0.5, 1.5])


def test_otsu_threshold_separates_two_intensity_modes():
    generator = torch.Generator().manual_seed(0)
    low = 0.2 + 0.03 * torch.randn(600, generator=generator)
    high = 0.8 + 0.03 * torch.randn(400, generator=generator)
    values = torch.cat([low, high]).clamp(0, 1)
    maps = torch.cat([values, torch.tensor([0.0, 1.0])]).reshape(1, 2, 501)  # pin min/max at 0 and 1
    threshold = ev.otsu_threshold(maps).item()
    assert 0.4 < threshold < 0.6
    assert bool((low < threshold).all()) and bool((high > threshold).all())


# --- pointing games ------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [2, 3])
def test_pointing_game_perfect_inverted_uniform(dims):
    mask = box_mask(dims)
    maps = cases(mask)
    assert ev.pointing_game(maps["perfect"], mask).tolist() == [1.0, 1.0]
    assert ev.pointing_game(maps["inverted"], mask).tolist() == [0.0, 0.0]
    assert ev.pointing_game(maps["uniform"], mask).tolist() == [0.0, 0.0]  # points nowhere
    everything = torch.ones_like(mask)
    assert ev.pointing_game(maps["uniform"], everything).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("dims", [2, 3])
def test_pointing_game_tolerance_in_mm_uses_the_spacing(dims):
    mask = box_mask(dims, n=1)  # occupies indices 3..6 on every axis
    maps = torch.zeros(mask.shape)
    peak = (0,) + (5,) * (dims - 1) + (8,)  # two voxels past the box along the last axis
    maps[peak] = 1.0
    spacing = (1.0,) * (dims - 1) + (3.0,)  # 3 mm along the last axis: 6 mm away
    assert ev.pointing_game(maps, mask, spacing, tolerance_mm=5.9).item() == 0.0
    assert ev.pointing_game(maps, mask, spacing, tolerance_mm=6.0).item() == 1.0
    # Without a spacing the tolerance is in voxels: 2 voxels away.
    assert ev.pointing_game(maps, mask, tolerance_mm=1.9).item() == 0.0
    assert ev.pointing_game(maps, mask, tolerance_mm=2.0).item() == 1.0
    # Diagonal offset: sqrt(2^2 + 2^2) voxels along the last two axes.
    diagonal = torch.zeros(mask.shape)
    diagonal[(0,) + (5,) * (dims - 2) + (8, 8)] = 1.0
    assert ev.pointing_game(diagonal, mask, tolerance_mm=2.82).item() == 0.0
    assert ev.pointing_game(diagonal, mask, tolerance_mm=2.83).item() == 1.0


def test_pointing_game_requires_every_tied_maximum_to_hit():
    mask = box_mask(2, n=1)
    maps = torch.zeros(mask.shape)
    maps[0, 4, 4] = 1.0
    maps[0, 0, 0] = 1.0  # a second, equal peak far outside
    assert ev.pointing_game(maps, mask).item() == 0.0
    assert ev.pointing_game(maps, mask, tolerance_mm=4.3).item() == 1.0  # (0,0) is 3*sqrt(2) from (3,3)


@pytest.mark.parametrize("dims", [2, 3])
def test_energy_pointing_game_is_the_share_of_mass_inside(dims):
    mask = box_mask(dims)
    maps = cases(mask)
    share = mask[0].float().mean().item()
    assert ev.energy_pointing_game(maps["perfect"], mask).tolist() == [1.0, 1.0]
    assert ev.energy_pointing_game(maps["inverted"], mask).tolist() == [0.0, 0.0]
    assert ev.energy_pointing_game(maps["uniform"], mask).tolist() == pytest.approx([share, share])
    assert ev.energy_pointing_game(torch.zeros(mask.shape), mask).tolist() == [0.0, 0.0]
    signed = maps["perfect"] - 2.0 * maps["inverted"]  # negative outside: not mass
    assert ev.energy_pointing_game(signed, mask).tolist() == [1.0, 1.0]
    half = maps["perfect"] + maps["inverted"] * (mask[0].sum() / (~mask[0]).sum())
    assert ev.energy_pointing_game(half, mask).tolist() == pytest.approx([0.5, 0.5])


def test_pointing_game_on_a_real_anisotropic_mask():
    label_path = DATA / "lung1_label.nrrd"
    if not label_path.exists():
        pytest.skip("shared real-data fixtures are not beside this checkout")
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(label_path))
    mask = torch.from_numpy(sitk.GetArrayFromImage(image) != 0)  # (z, y, x)
    spacing = tuple(reversed(image.GetSpacing()))  # tensor axis order: (sz, sy, sx)
    z, y, x = torch.nonzero(mask).T
    crop = mask[z.min():z.max() + 1, y.min() - 8:y.max() + 9, x.min() - 8:x.max() + 9]
    # A peak 4 voxels past the nodule's last x on its central row; the reference distance to
    # the nearest nodule voxel, in mm, comes from scipy's exact Euclidean distance transform.
    ndimage = pytest.importorskip("scipy.ndimage")
    zc = crop.shape[0] // 2
    rows = torch.nonzero(crop[zc])
    yc = int(rows[:, 0].float().median())
    x_last = int(rows[rows[:, 0] == yc][:, 1].max())
    maps = torch.zeros((1,) + crop.shape)
    maps[0, zc, yc, x_last + 4] = 1.0
    distance = ndimage.distance_transform_edt(~crop.numpy(), sampling=spacing)[zc, yc, x_last + 4]
    assert 0.5 < distance <= 4 * spacing[2] + 1e-9
    assert ev.pointing_game(maps, crop, spacing, tolerance_mm=distance - 0.01).item() == 0.0
    assert ev.pointing_game(maps, crop, spacing, tolerance_mm=distance + 0.01).item() == 1.0
    assert ev.pointing_game(crop.float()[None], crop, spacing).item() == 1.0


# --- specificity / sensitivity ---------------------------------------------------------------------

@pytest.mark.parametrize("dims", [2, 3])
def test_specificity_and_sensitivity_known_answers(dims):
    used = box_mask(dims)
    maps = cases(used)
    perfect = ev.specificity_sensitivity(maps["perfect"], used)
    assert perfect.specificity.tolist() == [1.0, 1.0] and perfect.sensitivity.tolist() == [1.0, 1.0]
    inverted = ev.specificity_sensitivity(maps["inverted"], used)
    assert inverted.specificity.tolist() == [0.0, 0.0] and inverted.sensitivity.tolist() == [0.0, 0.0]
    uniform = ev.specificity_sensitivity(maps["uniform"], used)
    assert uniform.specificity.tolist() == [1.0, 1.0] and uniform.sensitivity.tolist() == [0.0, 0.0]
    # A map that also lights up a halo the model does not use: specificity drops by halo / negatives.
    halo = box_mask(dims, low=2, high=8) & ~used
    wide = (used | halo).float()
    negatives = (~used[0]).sum().item()
    expected = 1.0 - halo[0].sum().item() / negatives
    assert ev.specificity(wide, used).tolist() == pytest.approx([expected, expected])
    assert ev.sensitivity(wide, used).tolist() == [1.0, 1.0]


def test_specificity_threshold_options():
    used = box_mask(2, n=1)
    maps = used.float() * 0.9 + 0.1 * (box_mask(2, n=1, low=2, high=8) & ~used).float()
    # Normalised: 1 inside, 0.111 in the halo.  Threshold 0.05 keeps the halo, 0.5 and Otsu do not.
    assert ev.specificity(maps, used, threshold=0.05).item() < 1.0
    assert ev.specificity(maps, used, threshold=0.5).item() == 1.0
    result = ev.specificity_sensitivity(maps, used, threshold="otsu")
    assert result.specificity.item() == 1.0 and result.sensitivity.item() == 1.0
    assert 0.111 < result.threshold.item() < 1.0
    with pytest.raises(ValueError, match="otsu"):
        ev.specificity(maps, used, threshold="median")
    with pytest.raises(ValueError, match="whole image"):
        ev.specificity(maps, torch.ones_like(used))


# --- input checks ----------------------------------------------------------------------------------

def test_clear_errors_for_bad_maps_and_masks():
    mask = box_mask(2)
    maps = mask.float()
    with pytest.raises(ValueError, match=r"does not match the maps"):
        ev.dice_sweep(maps, mask[:, :5])
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        empty = mask.clone()
        empty[1] = False
        ev.pointing_game(maps, empty)
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, D, H, W\)"):
        ev.energy_pointing_game(maps[0, 0], mask[0, 0])
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        ev.dice_sweep(maps.tolist(), mask)
    with pytest.raises(ValueError, match="one value per spatial axis"):
        ev.pointing_game(maps, mask, spacing=(1.0, 1.0, 1.0), tolerance_mm=1)
    with pytest.raises(ValueError, match="NaN"):
        ev.dice_sweep(maps * float("nan"), mask)


def test_numpy_inputs_and_shared_masks_are_accepted():
    mask = box_mask(3, n=1)[0].numpy()
    maps = np.stack([mask.astype(np.float32), 1 - mask.astype(np.float32)])
    assert ev.pointing_game(maps, mask).tolist() == [1.0, 0.0]
    assert ev.relative_foreground(maps, mask * 5).tolist() == [1.0, -1.0]  # any nonzero label is inside
