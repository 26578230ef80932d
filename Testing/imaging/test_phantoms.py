"""Phantom generators: determinism, geometry, realistic attenuation and ground-truth masks."""
from __future__ import annotations

import numpy as np
import pytest

from XAIExplainLib.imaging.phantoms import (NODULE_KINDS, PHASE_STRUCTURES, PHASES, Nodule,
                                            abdominal_phantom, chest_phantom)

SMALL = dict(shape=(3, 112, 112), spacing=(4.0, 3.2, 3.2))


@pytest.fixture(scope="module")
def abdomen_by_phase():
    return {p: abdominal_phantom(seed=11, phase=p, center=(0, 0, 20), noise=0.0, **SMALL)
            for p in PHASES}


def _mean(ph, name):
    assert ph.masks[name].any(), f"{name} missing from the phantom"
    return float(ph.array[ph.masks[name]].mean())


def test_same_seed_same_volume_other_seed_other_anatomy():
    a = abdominal_phantom(seed=3, **SMALL)
    b = abdominal_phantom(seed=3, **SMALL)
    c = abdominal_phantom(seed=4, **SMALL)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.masks.keys() == b.masks.keys()
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert not np.array_equal(a.array, c.array)


def test_phase_changes_only_enhancing_structures(abdomen_by_phase):
    nc, art = abdomen_by_phase["non_contrast"], abdomen_by_phase["arterial"]
    # Same anatomy in every phase: the body outline and the bones do not move.
    np.testing.assert_array_equal(nc.masks["vertebra"], art.masks["vertebra"])
    np.testing.assert_array_equal(nc.masks["subcutaneous_fat"], art.masks["subcutaneous_fat"])
    changed = np.abs(art.array - nc.array) > 20
    phase_voxels = nc.mask(*[s for s in PHASE_STRUCTURES if s in nc.masks], "kidney_cortex",
                           "kidney_medulla", "kidney")
    near = np.zeros_like(phase_voxels)
    for dy in (-1, 0, 1):  # partial volume spills one voxel over structure borders
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(phase_voxels, dy, 1), dx, 2)
    assert changed[~near].mean() < 0.01


def test_phase_attenuation_follows_the_literature(abdomen_by_phase):
    aorta = {p: _mean(abdomen_by_phase[p], "aorta") for p in PHASES}
    liver = {p: _mean(abdomen_by_phase[p], "liver") for p in PHASES}
    assert 25 < aorta["non_contrast"] < 60
    assert aorta["arterial"] > 220
    assert 130 < aorta["portal_venous"] < 215
    assert 90 < aorta["delayed"] < 145
    assert aorta["arterial"] > aorta["portal_venous"] > aorta["delayed"] > aorta["non_contrast"]
    assert liver["portal_venous"] > liver["delayed"] > liver["non_contrast"]
    assert liver["portal_venous"] - liver["non_contrast"] > 30


def test_kidney_corticomedullary_then_nephrographic_then_excretory():
    art = abdominal_phantom(seed=5, phase="arterial", center=(0, 0, 0), noise=0.0, **SMALL)
    delayed = abdominal_phantom(seed=5, phase="delayed", center=(0, 0, 0), noise=0.0, **SMALL)
    assert _mean(art, "kidney_cortex") - _mean(art, "kidney_medulla") > 60
    assert _mean(delayed, "renal_pelvis") > 300


def test_tissue_values_are_those_of_ct(abdomen_by_phase):
    ph = abdomen_by_phase["portal_venous"]
    assert -130 < _mean(ph, "subcutaneous_fat") < -70
    assert 35 < _mean(ph, "muscle") < 70
    assert _mean(ph, "vertebra") > 250
    assert ph.array[0, 0, 0] < -950  # air outside the patient


def test_geometry_of_image_and_masks():
    ph = abdominal_phantom(seed=2, shape=(2, 40, 50), spacing=(5.0, 2.0, 2.5), center=(10, -5, 30))
    image = ph.image()
    assert image.GetSize() == (50, 40, 2)
    assert image.GetSpacing() == (2.5, 2.0, 5.0)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint((24.5, 19.5, 0.5)))
    np.testing.assert_allclose(centre, (10, -5, 30), atol=1e-6)
    mask = ph.mask_image("liver")
    assert mask.GetSize() == image.GetSize() and mask.GetOrigin() == image.GetOrigin()


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match="phase must be one of non_contrast"):
        abdominal_phantom(phase="venous")
    with pytest.raises(ValueError, match="shape must be 3 positive integers"):
        abdominal_phantom(shape=(0, 10, 10))
    with pytest.raises(ValueError, match="spacing must be 3 positive numbers"):
        abdominal_phantom(spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="noise must be >= 0"):
        chest_phantom(noise=-1, shape=(1, 8, 8))
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        chest_phantom(seed=-3, shape=(1, 8, 8))
    with pytest.raises(KeyError, match="unknown structure"):
        abdominal_phantom(shape=(1, 16, 16)).mask("appendix")


def test_chest_lungs_vessels_and_nodule_ground_truth():
    ph = chest_phantom(seed=7, nodules=2, shape=(24, 96, 96), spacing=(5.0, 3.0, 3.0), noise=0.0)
    lung = ph.masks["lung"]
    assert -900 < np.median(ph.array[lung]) < -780
    assert ph.masks["pulmonary_vessels"].sum() > 50
    assert len(ph.info["nodules"]) == 2
    nodule = ph.mask("nodule")
    assert nodule.any()
    assert np.median(ph.array[nodule]) > -700  # denser than lung
    # Every nodule of the list is in the mask, near its centre.
    image = ph.image()
    for item in ph.info["nodules"]:
        index = image.TransformPhysicalPointToIndex(item["center"])
        z, y, x = index[2], index[1], index[0]
        window = nodule[max(z - 1, 0):z + 2, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        assert window.any(), f"nodule at {item['center']} missing from the mask"


def test_explicit_nodules_and_none():
    nodule = Nodule(center=(-70.0, 0.0, 20.0), diameter=16.0, kind="solid", hu=40.0)
    ph = chest_phantom(seed=1, nodules=[nodule], shape=(5, 64, 64), spacing=(2.0, 1.5, 1.5),
                       center=(-70, 0, 20), noise=0.0)
    mask = ph.mask("nodule")
    volume_mm3 = mask.sum() * np.prod(ph.spacing)
    expected = 4 / 3 * np.pi * 8.0 ** 3
    # Clipped by 10 mm of slab in z: compare with the slab's share of the sphere.
    slab = np.pi * (8.0 ** 2 * 10 - (5.0 ** 3) * 2 / 3)  # sphere section |z| < 5 mm
    assert 0.8 * slab < volume_mm3 < 1.15 * slab < expected
    assert 15 < np.median(ph.array[mask]) < 65
    empty = chest_phantom(seed=1, nodules=0, shape=(2, 32, 32), spacing=3.0)
    assert not empty.mask("nodule").any() and empty.info["nodules"] == []


@pytest.mark.parametrize("kind", NODULE_KINDS)
def test_nodule_kinds_have_their_density(kind):
    nodule = Nodule(center=(-70.0, 0.0, 20.0), diameter=20.0, kind=kind,
                    hu={"solid": 40.0, "part_solid": -450.0, "ground_glass": -550.0}[kind])
    ph = chest_phantom(seed=1, nodules=[nodule], shape=(1, 48, 48), spacing=(1.5, 1.0, 1.0),
                       center=(-70, 0, 20), noise=0.0)
    values = ph.array[ph.mask("nodule")]
    low, high = {"solid": (10, 70), "part_solid": (-520, 60), "ground_glass": (-640, -300)}[kind]
    assert low < np.median(values) < high
