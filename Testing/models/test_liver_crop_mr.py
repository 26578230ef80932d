"""pyliverlesionseg's MR abdomen crop (``crop_mr_image``) against ours (:mod:`models.liver_crop_mr`).

The reference below is their function written out step by step from
``cnn_liver_lesion_seg_CT_MR_functions.py`` (Tang et al., Eur J Nucl Med Mol Imaging 47, 2020), on
their ``(x, y, z)`` LPS array, with two changes that do not alter a result: ``find_objects`` is
given an integer mask (current scipy refuses their boolean one) and their search loop counts its
turns, so that where it would never end the test sees an exception instead of hanging.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_erosion, find_objects, label, labeled_comprehension
from scipy.signal import argrelextrema, convolve

from XAIExplainLib.models.card import ModelCard, load_card
from XAIExplainLib.models.errors import ModelCardError
from XAIExplainLib.models.liver_crop import CropError, CropSpec
from XAIExplainLib.models.liver_crop_mr import MrCropSpec, mr_abdomen_box
from XAIExplainLib.models.search_paths import resolve_model_name
from XAIExplainLib.models.zoom_preparation import crop_to_abdomen

BRAIN1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "brain1_image.nrrd"


class TheirLoopNeverEnds(RuntimeError):
    """Their search for a front edge went on past any bound (it would run forever)."""


def their_crop_mr_image(mr_vol, voxsize_mr, size_mm_max=(489, 408, 408), tissue_ratio=0.01, liver_height_max=400,
                        zstart_margin_mm=30.0):
    """``crop_mr_image`` as their main function calls it (their defaults), step by step."""
    mr_size = mr_vol.shape
    y_profile = np.sum(mr_vol, (0, 2))
    y_profile = convolve(y_profile, np.ones(7), 'same')
    y_prof_diff = convolve(y_profile, np.concatenate((np.ones(30), np.zeros(1), -np.ones(30))), 'same')
    y_prof_diff_argmin = np.argmin(y_prof_diff)
    y_prof_diff_arg_local_max = argrelextrema(y_prof_diff, np.greater, order=70)[0]
    order_tmp = 70
    while len(y_prof_diff_arg_local_max) <= 1 and order_tmp != 2:
        order_tmp = max(order_tmp - 10, 2)
        y_prof_diff_arg_local_max = argrelextrema(y_prof_diff, np.greater, order=order_tmp)[0]
    if len(y_prof_diff_arg_local_max) == 1:
        y_abd_max = y_prof_diff_arg_local_max[0]
    else:
        y_prof_diff_local_max_sort = np.sort(y_prof_diff[y_prof_diff_arg_local_max])
        possbile_y_abd_maxs = y_prof_diff_arg_local_max[
            np.where(y_prof_diff[y_prof_diff_arg_local_max] > 0.5 * y_prof_diff_local_max_sort[-2])]
        possbile_y_abd_maxs = possbile_y_abd_maxs[np.where(possbile_y_abd_maxs < y_prof_diff_argmin - 100)]
        diff_tmp = 100
        while len(possbile_y_abd_maxs) < 1:
            diff_tmp = diff_tmp - 10
            if diff_tmp < -len(y_prof_diff):  # every row is in front of argmin - diff_tmp: the set stays empty
                raise TheirLoopNeverEnds(diff_tmp)
            possbile_y_abd_maxs = y_prof_diff_arg_local_max[
                np.where(y_prof_diff[y_prof_diff_arg_local_max] > 0.5 * y_prof_diff_local_max_sort[-2])]
            possbile_y_abd_maxs = possbile_y_abd_maxs[np.where(possbile_y_abd_maxs < y_prof_diff_argmin - diff_tmp)]
        possbile_y_abd_maxs = possbile_y_abd_maxs[np.where(possbile_y_abd_maxs < 0.4 * mr_size[1])]
        if len(possbile_y_abd_maxs) == 0:
            y_abd_max = np.argmax(y_prof_diff)
            if y_abd_max >= 0.4 * mr_size[1]:
                y_abd_max = 0
        else:
            if len(possbile_y_abd_maxs) > 1 and np.all(
                    y_prof_diff[possbile_y_abd_maxs[-2]:possbile_y_abd_maxs[-1] + 1]
                    > 0.5 * y_prof_diff[possbile_y_abd_maxs[-1]]):
                y_abd_max = possbile_y_abd_maxs[-2]
            elif len(possbile_y_abd_maxs) > 1 and \
                    y_prof_diff[possbile_y_abd_maxs[-1]] < 0.5 * y_prof_diff[possbile_y_abd_maxs[-2]]:
                y_abd_max = possbile_y_abd_maxs[-2]
            else:
                y_abd_max = possbile_y_abd_maxs[-1]
    possible_y_abd_starts = np.array(np.where(y_prof_diff < 0.45 * y_prof_diff[y_abd_max]))
    possible_y_abd_starts = possible_y_abd_starts[np.where(possible_y_abd_starts < y_abd_max)]
    Th_tmp = 0.45
    while len(possible_y_abd_starts) == 0 and Th_tmp < 1.0:
        Th_tmp = Th_tmp + 0.05
        possible_y_abd_starts = np.array(np.where(y_prof_diff < Th_tmp * y_prof_diff[y_abd_max]))
        possible_y_abd_starts = possible_y_abd_starts[np.where(possible_y_abd_starts < y_abd_max)]
    y_abd_start = 0 if len(possible_y_abd_starts) == 0 else possible_y_abd_starts[-1]
    possbile_y_abd_ends = np.array(np.where(y_prof_diff > 0.6 * y_prof_diff[y_prof_diff_argmin]))
    possbile_y_abd_ends = possbile_y_abd_ends[np.where(possbile_y_abd_ends > y_prof_diff_argmin)]
    ratio_tmp = 0.6
    while len(possbile_y_abd_ends) < 1:
        ratio_tmp = ratio_tmp + 0.05
        if ratio_tmp > 1.0:
            break
        possbile_y_abd_ends = np.array(np.where(y_prof_diff > ratio_tmp * y_prof_diff[y_prof_diff_argmin]))
        possbile_y_abd_ends = possbile_y_abd_ends[np.where(possbile_y_abd_ends > y_prof_diff_argmin)]
    if ratio_tmp <= 1.0:
        possbile_y_abd_ends_diff = convolve(possbile_y_abd_ends, np.concatenate((np.ones(1), -np.ones(1))), 'same')
        idx_div = np.where(possbile_y_abd_ends_diff > 1)[0]
        if len(idx_div) > 1:
            possbile_y_abd_ends = possbile_y_abd_ends[idx_div[-1]:]
        y_abd_end = y_prof_diff_argmin if len(possbile_y_abd_ends) == 0 else possbile_y_abd_ends[0]
    else:
        y_abd_end = mr_size[1]
    slice_abd_y = slice(y_abd_start, y_abd_end, None)
    zstart = max(0, mr_vol.shape[2] - int(liver_height_max / voxsize_mr[2]) - int(zstart_margin_mm / voxsize_mr[2]))
    slice_z = slice(zstart, mr_vol.shape[2], None)
    mr_vol_cropped = mr_vol[:, :, slice_z]
    bin_mr_vol = (mr_vol_cropped > tissue_ratio * np.max(mr_vol_cropped))
    bin_mr_vol = binary_erosion(bin_mr_vol, np.ones((5, 5, 5))).astype('int16')
    labeled_array, nlbl = label(bin_mr_vol)
    labels = np.arange(1, nlbl + 1)
    nvox = labeled_comprehension(mr_vol_cropped, labeled_array, labels, len, int, -1)
    bbox = find_objects((labeled_array == labels[np.argmax(nvox)]).astype(np.int8))[0]
    slice_y = slice(max(bbox[1].start, slice_abd_y.start), min(bbox[1].stop, slice_abd_y.stop), None)
    bbox_final = (bbox[0], slice_y, slice_z)
    out = []
    for axis in range(2):  # their x and y blocks, alike
        size = bbox_final[axis].stop - bbox_final[axis].start
        if size * voxsize_mr[axis] > size_mm_max[axis]:
            offset_mm = size * voxsize_mr[axis] - size_mm_max[axis]
            delta_start = np.ceil(offset_mm / (2 * voxsize_mr[axis])).astype('int16')
            delta_stop = np.ceil(offset_mm / (2 * voxsize_mr[axis])).astype('int16')
            out.append(slice(bbox_final[axis].start + delta_start, bbox_final[axis].stop - delta_stop, None))
        else:
            out.append(bbox_final[axis])
    zsize = bbox_final[2].stop - bbox_final[2].start
    if zsize * voxsize_mr[2] > size_mm_max[2]:
        delta_z_start = np.ceil((zsize * voxsize_mr[2] - size_mm_max[2]) / voxsize_mr[2]).astype('int16')
        out.append(slice(bbox_final[2].start + delta_z_start, bbox_final[2].stop, None))
    else:
        out.append(bbox_final[2])
    return tuple(out)


def _pairs(box):
    return [(int(s.start), int(s.stop)) for s in box]


def _theirs_and_ours(mr, vox, spec=MrCropSpec()):
    """``(their box or their exception, our box or our CropError)``."""
    try:
        want = _pairs(their_crop_mr_image(mr, vox, spec.size_mm_max, spec.tissue_ratio, spec.liver_height_max_mm,
                                          spec.zstart_margin_mm))
    except (IndexError, ValueError, TheirLoopNeverEnds) as exc:
        want = exc
    try:
        got = _pairs(mr_abdomen_box(mr, vox, spec))
    except CropError as exc:
        got = exc
    return want, got


def _is_empty(box):
    return any(stop <= start for start, stop in box)


def mr_like(hu: np.ndarray) -> np.ndarray:
    """A T1-like MR from a CT: air 0, fat brightest, soft tissue and liver mid, dense bone dark."""
    return np.interp(hu, [-1000, -150, -50, 60, 300, 1500], [0, 700, 900, 400, 500, 100])


def _mr_phantom(seed, shape, spacing_zyx):
    from XAIExplainLib.imaging.phantoms import abdominal_phantom

    phantom = abdominal_phantom(seed=seed, phase="portal_venous", shape=shape, spacing=spacing_zyx, supersample=1)
    image = phantom.image()
    mr = sitk.GetImageFromArray(mr_like(sitk.GetArrayFromImage(image)).astype(np.float32))
    mr.CopyInformation(image)
    return mr


SMALL = MrCropSpec(size_mm_max=(200.0, 150.0, 100.0), liver_height_max_mm=150.0)


@pytest.mark.parametrize("seed, shape, spacing, spec", [
    (7, (60, 128, 128), (5.0, 3.1, 3.1), MrCropSpec()),  # one local maximum of the rise: the front edge
    (3, (32, 192, 192), (5.0, 2.0, 2.0), MrCropSpec()),  # two maxima; the margin lowered from 100 rows
    (7, (60, 128, 128), (5.0, 3.1, 3.1), SMALL),  # trimmed in x, y and z, the top 150 + 30 mm kept
    (3, (32, 192, 192), (5.0, 2.0, 2.0), SMALL),
])
def test_the_mr_crop_of_an_abdomen_phantom_is_their_crop_mr_image(seed, shape, spacing, spec):
    image = _mr_phantom(seed, shape, spacing)
    mr = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    want, got = _theirs_and_ours(mr, image.GetSpacing(), spec)
    assert got == want
    (x0, x1), (y0, y1), (z0, z1) = got
    assert 0 < x0 < x1 < mr.shape[0] and 0 < y0 < y1 < mr.shape[1]  # the body, not the whole image
    if spec == SMALL:
        assert z0 > 0 and z1 == mr.shape[2]  # the top slices kept
        assert (x1 - x0) * spacing[2] <= 200 and (y1 - y0) * spacing[1] <= 150 and (z1 - z0) * spacing[0] <= 100


@pytest.mark.skipif(not BRAIN1.exists(), reason="the shared brain MR (brain1_image.nrrd) is not in the checkout")
@pytest.mark.parametrize("spec", [MrCropSpec(), MrCropSpec(size_mm_max=(100.0, 120.0, 60.0))])
def test_the_mr_crop_of_the_brain_mr_is_theirs(spec):
    image = sitk.ReadImage(str(BRAIN1))
    mr = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    want, got = _theirs_and_ours(mr, image.GetSpacing(), spec)
    if isinstance(want, Exception) or isinstance(got, Exception):
        assert isinstance(got, CropError) and isinstance(want, Exception), (want, got)
    else:
        assert got == want


def _profile_volume(seed):
    """A volume whose front-to-back profile is a body, an organ of another brightness, something in
    front of it (arms, a coil) and a faint haze around them (at random rows and levels, the haze
    half the time above the tissue threshold); 12 voxels wide in x and z."""
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(220, 300))
    profile = np.zeros(rows)
    start, stop = int(rng.integers(50, 110)), int(rng.integers(rows - 80, rows - 10))
    profile[start:stop] = 1.0
    profile[start + int(rng.integers(10, 60)):stop - 10] += rng.uniform(-0.5, 0.5)
    front = int(rng.integers(0, start - 10))
    profile[front:int(rng.integers(front + 5, start + 5))] += rng.uniform(0.2, 1.5)
    profile[:stop + 10] += rng.uniform(0.0, 0.04)
    return np.broadcast_to(profile[None, :, None], (12, rows, 12)).copy()


@pytest.mark.parametrize("seed", [
    0,  # one strong maximum in front of the fall
    3,  # a single local maximum of the rise
    2,  # several: the last
    7,  # several, the rise high between the last two: the one before the last
    246,  # several, the last below half the one before: the one before the last
    283,  # none in the front 40 %, nor the highest: row 0
    70,  # none in the front 40 %: the highest rise
])
def test_each_choice_of_the_front_edge_is_theirs(seed):
    mr = _profile_volume(seed)
    want, got = _theirs_and_ours(mr, (3.0, 2.0, 3.0))
    assert got == want


def test_random_profiles_crop_as_theirs_or_fail_where_theirs_fails_or_is_empty():
    outcomes = {"same": 0, "both fail": 0, "theirs empty": 0}
    for seed in range(200):
        want, got = _theirs_and_ours(_profile_volume(seed), (3.0, 2.0, 3.0))
        if isinstance(got, CropError):
            assert isinstance(want, Exception) or _is_empty(want), (seed, want, got)
            outcomes["both fail" if isinstance(want, Exception) else "theirs empty"] += 1
        else:
            assert got == want, seed
            outcomes["same"] += 1
    assert outcomes["same"] > 150 and outcomes["both fail"] > 0 and outcomes["theirs empty"] > 0, outcomes


def _rows(profile, width=12):
    return np.broadcast_to(np.asarray(profile, dtype=float)[None, :, None], (width, len(profile), 12)).copy()


@pytest.mark.parametrize("make, theirs, message", [
    (lambda: np.zeros((40, 50, 30)), IndexError, "no local maximum of its rise"),
    (lambda: np.random.default_rng(0).random((3, 3, 3)), IndexError, "no local maximum of its rise"),
    # a profile falling all the way, with ripples: every local maximum of the rise is negative
    (lambda: _rows(-np.arange(300.0) + 40 * np.sin(2 * np.pi * np.arange(300.0) / 45), 1), TheirLoopNeverEnds,
     "exceeds half the second highest"),
    (lambda: _profile_volume(0)[:3], ValueError, "no body to crop to"),  # 3 voxels thin: nothing survives erosion
])
def test_degenerate_images_give_a_crop_error_where_theirs_crashes_or_never_ends(make, theirs, message):
    mr = make()
    with pytest.raises(theirs):
        their_crop_mr_image(mr, (3.0, 2.0, 3.0))
    with pytest.raises(CropError, match=message):
        mr_abdomen_box(mr, (3.0, 2.0, 3.0))


@pytest.mark.parametrize("mr, spec, message", [
    (_profile_volume(64), MrCropSpec(), "lies outside the abdomen's front and back edges"),
    (_profile_volume(0), MrCropSpec(size_mm_max=(1.0, 408.0, 408.0)), "leaves no voxel"),
    (_profile_volume(0), MrCropSpec(liver_height_max_mm=1.0, zstart_margin_mm=2.0), "no slices to crop to"),
])
def test_an_empty_box_is_a_crop_error(mr, spec, message):
    try:  # theirs: an empty box, or a crash on the empty slices
        assert _is_empty(_pairs(their_crop_mr_image(mr, (3.0, 2.0, 3.0), spec.size_mm_max, spec.tissue_ratio,
                                                    spec.liver_height_max_mm, spec.zstart_margin_mm)))
    except ValueError:
        pass
    with pytest.raises(CropError, match=message):
        mr_abdomen_box(mr, (3.0, 2.0, 3.0), spec)


# ---- the card field and the pipeline step ----------------------------------------------------------

def _card_data(crop):
    data = load_card(resolve_model_name("liver-seg-3d")).to_dict()
    data["input"] = {**data["input"], "resampling": {**data["input"]["resampling"], "crop": crop}}
    return data


def _card(crop):
    return ModelCard.from_dict(_card_data(crop), base_dir=resolve_model_name("liver-seg-3d"))


def test_their_main_function_s_mr_call_is_the_default():
    assert MrCropSpec() == MrCropSpec(size_mm_max=(489.0, 408.0, 408.0), tissue_ratio=0.01,
                                      liver_height_max_mm=400.0, zstart_margin_mm=30.0, required=False)
    assert _card({"method": "mr"}).input.resampling.crop == MrCropSpec()


def test_an_mr_crop_round_trips_through_the_card():
    card = _card({"method": "mr", "tissue_ratio": 0.02, "zstart_margin_mm": 0, "size_mm_max": [400, 300, 300],
                  "required": True})
    spec = card.input.resampling.crop
    assert spec == MrCropSpec(size_mm_max=(400.0, 300.0, 300.0), tissue_ratio=0.02, zstart_margin_mm=0.0,
                              required=True)
    written = card.to_dict()["input"]["resampling"]["crop"]
    assert written["method"] == "mr" and "hip_margin_mm" not in written
    again = ModelCard.from_dict(card.to_dict(), base_dir=card.base_dir)
    assert again.input.resampling == card.input.resampling
    ct = _card({"hip_margin_mm": 25})  # no method: their CT crop, as before
    assert ct.input.resampling.crop == CropSpec(hip_margin_mm=25.0)
    assert ct.to_dict()["input"]["resampling"]["crop"]["method"] == "ct"
    assert ModelCard.from_dict(ct.to_dict(), base_dir=ct.base_dir).input.resampling == ct.input.resampling


@pytest.mark.parametrize("crop, field, message", [
    ({"method": "mr", "air_abd_ratio": 0.2}, "input.resampling.crop",
     "unknown key(s) ['air_abd_ratio']; with method 'mr' it takes method, size_mm_max, tissue_ratio, "
     "liver_height_max_mm, zstart_margin_mm, required"),
    ({"method": "mr", "hip_margin_mm": 20}, "input.resampling.crop", "unknown key(s) ['hip_margin_mm']; with "
                                                                     "method 'mr'"),
    ({"tissue_ratio": 0.01}, "input.resampling.crop", "unknown key(s) ['tissue_ratio']; with method 'ct'"),
    ({"method": "pet"}, "input.resampling.crop.method", "must be one of 'ct', 'mr'"),
    ({"method": "mr", "zstart_margin_mm": -5}, "input.resampling.crop.zstart_margin_mm", "must be >= 0"),
    ({"method": "mr", "tissue_ratio": 0}, "input.resampling.crop.tissue_ratio", "must be > 0"),
])
def test_bad_mr_crop_fields_are_refused(crop, field, message):
    with pytest.raises(ModelCardError, match=f"field '{field}'") as caught:
        _card(crop)
    assert message in str(caught.value)


def test_the_pipeline_crops_an_mr_with_their_mr_crop_and_says_mr_when_it_cannot():
    card = load_card(resolve_model_name("liver-seg-3d"))
    mr_card = dataclasses.replace(card, input=dataclasses.replace(
        card.input, resampling=dataclasses.replace(card.input.resampling, crop=MrCropSpec())))
    image = _mr_phantom(3, (32, 192, 192), (5.0, 2.0, 2.0))
    box = their_crop_mr_image(sitk.GetArrayFromImage(image).transpose(2, 1, 0), image.GetSpacing())
    (cropped,) = crop_to_abdomen(mr_card, [image])
    want = image[box]
    assert cropped.GetSize() == want.GetSize() and cropped.GetSize() != image.GetSize()
    assert cropped.GetOrigin() == want.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(cropped), sitk.GetArrayFromImage(want))

    blank = sitk.Image(40, 50, 30, sitk.sitkFloat32)
    with pytest.warns(UserWarning, match=r"crops the MR to the abdomen \(lungs to below the liver\).*no local "
                                         r"maximum.*the whole image is used instead"):
        (whole,) = crop_to_abdomen(mr_card, [blank])
    assert whole is blank
    strict = dataclasses.replace(mr_card, input=dataclasses.replace(mr_card.input, resampling=dataclasses.replace(
        mr_card.input.resampling, crop=MrCropSpec(required=True))))
    with pytest.raises(ValueError, match="crops the MR.*give an MR of the abdomen from the lungs down"):
        crop_to_abdomen(strict, [blank])
