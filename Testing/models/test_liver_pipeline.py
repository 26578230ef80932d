"""pyliverlesionseg's preprocessing and post-processing of the liver model, step by step.

Each step is compared with a naive re-implementation written here from their formulas
(``cnn_liver_lesion_seg_CT_MR_functions.py`` and pymirc's ``zoom3d``, which their code calls):
the zoom (voxel by voxel loops), the zoom -> 3 x 3 x 3 median -> zoom chain with their CT
normalisation and their centred segment extraction on RAS arrays, their MR normalisation, and
their erosion / largest component / dilation of the label map.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage, signal

from XAIExplainLib.imaging.intensity import minmax
from XAIExplainLib.imaging.resample import Grid, resample_array
from XAIExplainLib.imaging.zoom import zoom_volume, zoomed_grid
from XAIExplainLib.models.card import ModelCard, load_card
from XAIExplainLib.models.card_steps import PostprocessingSpec
from XAIExplainLib.models.errors import ModelCardError
from XAIExplainLib.models.preprocessing import PreparedInput, prepare
from XAIExplainLib.models.search_paths import resolve_model_name


# ---- naive references, written from their code's formulas ----------------------------------------

def naive_zoom_axis0(array: np.ndarray, zoom: float) -> np.ndarray:
    """pymirc zoom3d along the first axis, voxel by voxel (cval 0, as their calls use)."""
    delta = 1.0 / zoom
    if zoom > 1:
        nb = array.shape[0]
        ns = math.ceil(nb / delta)
        out = np.zeros((ns,) + array.shape[1:])
        for i in range(ns):
            centre = delta * (i - 0.5 * ns + 0.5) + 0.5 * nb - 0.5
            left = math.floor(centre)
            a = array[left] * (left + 1 - centre) if left >= 0 else 0.0
            b = array[left + 1] * (centre - left) if left + 1 < nb else 0.0
            out[i] = a + b
        return out
    ns = array.shape[0]
    nb = math.ceil(ns / delta)
    out = np.zeros((nb,) + array.shape[1:])
    for i in range(ns):
        lo = (1.0 / delta) * (i - 0.5 * ns) + 0.5 * nb
        hi = (1.0 / delta) * (i + 1 - 0.5 * ns) + 0.5 * nb
        first, last = math.floor(lo), math.ceil(hi) - 1
        if first == last:
            out[first] += array[i] / delta
        else:
            cut = math.ceil(lo)
            out[first] += array[i] * (cut - lo)
            out[last] += array[i] * (hi - cut)
    return out


def naive_zoom3d(array_xyz: np.ndarray, zooms_xyz) -> np.ndarray:
    """zoom3d on their (x, y, z) array: axis 0, then 1, then 2."""
    out = np.asarray(array_xyz, dtype=np.float64)
    for axis, zoom in enumerate(zooms_xyz):
        if zoom != 1:
            out = np.moveaxis(naive_zoom_axis0(np.moveaxis(out, axis, 0), zoom), 0, axis)
    return out


def naive_segment(image_xyz: np.ndarray, size_xyz) -> np.ndarray:
    """Their ExtractSegment3D2 at the centre coordinates ``shape // 2`` with default value 0."""
    from Testing.engine.test_tiles import their_cut

    return their_cut(np.asarray(image_xyz), [d // 2 for d in np.shape(image_xyz)], tuple(size_xyz))


def their_liver_input(lps_zyx: np.ndarray, spacing_xyz, size_xyz) -> np.ndarray:
    """Their liver preprocessing of an LPS volume, returned as our numpy (z, y, x) LPS segment."""
    vol = np.asarray(lps_zyx, dtype=np.float64).transpose(2, 1, 0)  # their LPS (x, y, z) array
    vox = np.asarray(spacing_xyz, dtype=float)
    vol = naive_zoom3d(vol, vox / 1.5)
    vol = ndimage.median_filter(vol, size=3)
    vol = naive_zoom3d(vol, [1.5 / 3.0] * 3)
    vol = np.clip(vol / 1000, -0.2, 0.2) * 2.5
    ras = np.flip(vol, [0, 1])
    segment = naive_segment(ras, size_xyz)
    return np.flip(segment, [0, 1]).transpose(2, 1, 0)


def their_postprocess(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """cnn_liver_pred_postprocess before its zoom: threshold, erode, largest 6-connected component, dilate."""
    binary = probability > threshold
    ss = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 1).astype(int)
    eroded = ndimage.binary_erosion(binary, structure=ss).astype(int)
    labels, n = ndimage.label(eroded, structure=ndimage.generate_binary_structure(3, 1))
    sizes = ndimage.sum(eroded, labels, range(n + 1))
    largest = labels == np.argsort(sizes)[-1]
    return ndimage.binary_dilation(largest, structure=ss)


# ---- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("zooms", [(2.0, 0.38, 0.5), (0.5, 1.0, 1.7), (0.3801, 2.5, 0.71)])
def test_zoom_is_pymircs_zoom3d(zooms):
    rng = np.random.default_rng(0)
    array = rng.normal(0, 100, (9, 14, 11))  # numpy (z, y, x)
    ours = zoom_volume(array, zooms)
    theirs = naive_zoom3d(array.transpose(2, 1, 0), tuple(reversed(zooms))).transpose(2, 1, 0)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-10)


def test_zoomed_grid_puts_voxels_where_zoom3d_samples():
    grid = Grid((11, 14, 9), (0.8, 0.7, 2.5), (10.0, -20.0, 5.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    zooms = (2.5 / 1.5, 0.7 / 1.5, 0.8 / 1.5)  # numpy (z, y, x)
    new = zoomed_grid(grid, zooms)
    ref_old, ref_new = grid.reference(), new.reference()
    for axis_xyz, zoom in zip(range(3), reversed(zooms)):
        n_old, n_new = grid.size[axis_xyz], new.size[axis_xyz]
        assert n_new == math.ceil(n_old / (1.0 / zoom))
        for i in (0, n_new - 1):
            centre = (1.0 / zoom) * (i - 0.5 * n_new + 0.5) + 0.5 * n_old - 0.5  # zoom3d's sample position
            index_new, index_old = [0, 0, 0], [0.0, 0.0, 0.0]
            index_new[axis_xyz], index_old[axis_xyz] = i, centre
            got = ref_new.TransformIndexToPhysicalPoint(index_new)[axis_xyz]  # identity direction: one
            want = ref_old.TransformContinuousIndexToPhysicalPoint(index_old)[axis_xyz]  # coordinate per axis
            assert got == pytest.approx(want, abs=1e-9)


def _ct(shape_zyx=(13, 40, 36), spacing_xyz=(0.9, 0.8, 2.5)) -> sitk.Image:
    rng = np.random.default_rng(2)
    array = rng.normal(40, 60, shape_zyx).astype(np.float32)
    array[4:9, 10:30, 8:22] += 150.0  # an organ brighter than the window's top
    array[:, :5, :] = -1000.0  # air at the front
    array[6, 20, 18] = 3000.0  # a spike the median filter removes
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin((-12.0, 30.0, -200.0))
    return image


def _liver_card(size_zyx, crop: bool = False) -> ModelCard:
    """The bundled liver card with a small segment; its abdomen crop off unless asked (tested on its own)."""
    card = load_card(resolve_model_name("liver-seg-3d"))
    resampling = card.input.resampling if crop else dataclasses.replace(card.input.resampling, crop=None)
    return dataclasses.replace(card, input=dataclasses.replace(card.input, size=tuple(size_zyx),
                                                               resampling=resampling))


@pytest.mark.parametrize("size_zyx", [(9, 12, 13), (12, 10, 8), (14, 18, 17)])
def test_liver_input_is_their_zoom_median_zoom_normalise_and_centred_segment(size_zyx):
    image = _ct()
    prepared = prepare(_liver_card(size_zyx), image)
    want = their_liver_input(sitk.GetArrayFromImage(image), image.GetSpacing(), tuple(reversed(size_zyx)))
    assert prepared.array.shape == (1,) + tuple(size_zyx)
    assert np.unique(want).size > 20  # structure, not padding alone
    np.testing.assert_allclose(prepared.array[0], want, atol=2e-6)


def test_the_segment_sits_where_their_segment_sits():
    """The model grid's voxels lie where their zoomed voxels lie: the segment's corner voxel holds the
    zoomed voxel their extraction copies there, at the physical point zoom3d sampled it."""
    image = _ct()
    card = _liver_card((9, 12, 13))
    prepared = prepare(card, image)
    grid = Grid.from_image(image)
    spacing = np.asarray(grid.spacing)
    first = np.ceil(np.asarray(grid.size) * spacing / 1.5 - 1e-9).astype(int)  # 1.5 mm voxels (x, y, z)
    second = np.ceil(first * 0.5 - 1e-9).astype(int)  # 3 mm voxels
    size = np.asarray(tuple(reversed(card.input.size)))
    # their RAS segment voxel s holds RAS zoomed voxel s - size // 2 + n // 2; RAS x and y run against LPS
    ras_first = (0 - size // 2 + second // 2).astype(float)
    lps_first = ras_first.copy()
    lps_first[:2] = second[:2] - 1 - ras_first[:2] - (size[:2] - 1)  # our corner voxel (LPS index 0)
    # continuous index of that 3 mm voxel in the 1.5 mm grid, then in the input grid (zoom3d's centres)
    in_first = 2.0 * (lps_first - 0.5 * second + 0.5) + 0.5 * first - 0.5
    in_image = (1.5 / spacing) * (in_first - 0.5 * first + 0.5) + 0.5 * np.asarray(grid.size) - 0.5
    want = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in in_image])
    got = prepared.model_grid.reference().TransformIndexToPhysicalPoint([0, 0, 0])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_their_mr_normalisation_is_the_minmax_mode():
    rng = np.random.default_rng(3)
    volume = rng.gamma(2.0, 150.0, (6, 7, 8))
    low, high = volume.min(), volume.max()
    upper = low + 0.8 * (high - low)
    theirs = (np.clip(volume, low, upper) - low) / (upper - low) - 0.5
    np.testing.assert_allclose(minmax(volume, 0.8, to=(-0.5, 0.5)), theirs, atol=1e-6)
    card = ModelCard.from_dict({
        "name": "mr", "task": "segmentation", "spatial_dims": 3, "classes": ["background", "liver"],
        "input": {"channels": 1, "intensity": {"mode": "minmax", "upper_fraction": 0.8, "range": [-0.5, 0.5]}},
        "architecture": {"class": "XAIExplainLib.models.architectures:UNet"}, "weights": "weights.safetensors"})
    assert ModelCard.from_dict(card.to_dict()).input.intensity == card.input.intensity
    np.testing.assert_allclose(prepare(card, volume.astype(np.float32)).array[0], theirs, atol=1e-6)


def _blobs(shape=(14, 20, 22)) -> np.ndarray:
    """Foreground probabilities: a large blob, a small one, a one-voxel bridge between them, a speck."""
    p = np.full(shape, 0.1, np.float32)
    p[3:11, 3:12, 3:12] = 0.9
    p[4:8, 13:17, 14:19] = 0.8
    p[6, 12, 9:15] = 0.7  # bridge: the erosion cuts it
    p[12, 18, 20] = 0.95  # isolated speck
    return p


def test_largest_component_post_processing_is_theirs_on_the_model_grid():
    p = _blobs()
    grid = Grid(tuple(reversed(p.shape)), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    prepared = PreparedInput(np.zeros((1,) + p.shape, np.float32), grid, grid, False, True, "softmax",
                             PostprocessingSpec(largest_component=True, erosion=1))
    labels = prepared.restore_labels(np.stack([1 - p, p]), "softmax")
    want = their_postprocess(p)
    assert want.sum() > 0 and (p > 0.5).sum() > want.sum()  # something was removed
    np.testing.assert_array_equal(labels, want.astype(np.uint8))
    plain = dataclasses.replace(prepared, postprocessing=None).restore_labels(np.stack([1 - p, p]), "softmax")
    np.testing.assert_array_equal(plain, (p > 0.5).astype(np.uint8))


def test_post_processed_labels_go_to_the_input_grid_as_their_order_one_zoom_above_zero():
    p = _blobs()
    model = Grid(tuple(reversed(p.shape)), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    fine = Grid((50, 45, 30), (1.3, 1.3, 1.4), (-1.0, -1.0, -1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    prepared = PreparedInput(np.zeros((1,) + p.shape, np.float32), model, fine, False, True, "softmax",
                             PostprocessingSpec(largest_component=True, erosion=1))
    labels = prepared.restore_labels(np.stack([1 - p, p]), "softmax")
    mask = their_postprocess(p).astype(np.float32)
    want = resample_array(mask, model, fine, 0.0) > 0
    assert labels.shape == fine.shape and want.sum() > 0
    np.testing.assert_array_equal(labels, want.astype(np.uint8))


def test_the_bundled_liver_card_declares_their_steps():
    card = load_card(resolve_model_name("liver-seg-3d"))
    spec = card.input.resampling
    assert spec.method == "zoom" and spec.median_spacing == (1.5, 1.5, 1.5) and spec.median_size == 3
    assert card.postprocessing == PostprocessingSpec(largest_component=True, erosion=1)
    from XAIExplainLib.models.liver_crop import CropSpec

    assert spec.crop == CropSpec()  # their liver call: 489 x 408 x 408 mm, hip margin 20 mm, dome margin 70 mm
    again = ModelCard.from_dict(card.to_dict(), base_dir=card.base_dir)
    assert again.input.resampling == spec and again.postprocessing == card.postprocessing


@pytest.mark.parametrize("change, field", [
    ({"input": {"resampling": {"method": "cubic"}}}, "input.resampling.method"),
    ({"input": {"resampling": {"method": "zoom", "median": {"size": 3}}}}, "input.resampling.median.spacing"),
    ({"input": {"resampling": {"method": "zoom", "medain": {}}}}, "input.resampling"),
    ({"output": {"postprocessing": {"largest_component": "yes"}}}, "output.postprocessing.largest_component"),
    ({"output": {"postprocessing": {"erosion": 1}}}, "output.postprocessing.erosion"),
    ({"input": {"intensity": {"mode": "minmax", "upper_fraction": 1.5}}}, "input.intensity.upper_fraction"),
    ({"input": {"resampling": {"method": "zoom", "crop": {"hip_margin": 20}}}}, "input.resampling.crop"),
    ({"input": {"resampling": {"method": "zoom", "crop": {"required": "no"}}}}, "input.resampling.crop.required"),
    ({"input": {"resampling": {"method": "zoom", "crop": {}, "mask": {"model": "m", "class": "c"}}}},
     "input.resampling"),
])
def test_bad_pipeline_fields_name_the_field(change, field):
    data = load_card(resolve_model_name("liver-seg-3d")).to_dict()
    for key, value in change.items():
        data[key] = {**data[key], **value}
    with pytest.raises(ModelCardError, match=f"field '{field}'"):
        ModelCard.from_dict(data, base_dir=resolve_model_name("liver-seg-3d"))


def their_lesion_input(lps_zyx: np.ndarray, liver_zyx: np.ndarray, spacing_xyz) -> np.ndarray:
    """Their lesion preprocessing (normalise, zoom to 1 x 1 x 3 mm, dilated liver only, crop), as our
    numpy (z, y, x) LPS array."""
    ras = np.flip(np.asarray(lps_zyx, dtype=np.float64).transpose(2, 1, 0), (0, 1))
    liver = np.flip(np.asarray(liver_zyx, dtype=np.float64).transpose(2, 1, 0), (0, 1))
    zoom = np.asarray(spacing_xyz, dtype=float) / np.array([1.0, 1.0, 3.0])
    image = naive_zoom3d(np.clip(ras / 1000, -0.2, 0.2) * 2.5, zoom)
    liver = (naive_zoom3d(liver, zoom) > 0.5).astype("int16")
    ss = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 2).astype(int)
    dilated = ndimage.binary_dilation(liver, structure=ss).astype("int16")
    masked = image * dilated
    masked[np.where(dilated == 0)] = -0.5
    masked = np.clip(masked, -0.5, 0.5)
    x, y, z = np.where(dilated > 0)
    crop = masked[x.min():x.max() + 1, y.min():y.max() + 1, z.min():z.max() + 1]
    return np.flip(crop, (0, 1)).transpose(2, 1, 0)


@pytest.mark.parametrize("patch_zyx, tiles", [((2, 6, 6), True), ((9, 40, 30), True), ((2, 6, 6), False),
                                              ((9, 40, 30), False)])
def test_lesion_input_is_their_dilated_liver_only_cropped_to_the_liver(patch_zyx, tiles):
    from XAIExplainLib.models.card_steps import WindowsSpec

    image = _ct(shape_zyx=(12, 40, 36), spacing_xyz=(0.9, 0.8, 2.5))
    liver = np.zeros((12, 40, 36), np.uint8)
    liver[4:9, 14:26, 10:20] = 1  # the liver, as liver-seg-3d labels it on the image's grid
    card = load_card(resolve_model_name("liver-lesion-seg-3d"))
    assert card.input.windows.tiles  # the bundled card: their tiles over their crop
    windows = card.input.windows if tiles else WindowsSpec()
    card = dataclasses.replace(card, input=dataclasses.replace(card.input, patch_size=patch_zyx, windows=windows))
    prepared = prepare(card, image, region=liver == 1)
    want = their_lesion_input(sitk.GetArrayFromImage(image), liver, image.GetSpacing())
    got = prepared.array[0]
    assert (want == -0.5).any() and (want > -0.5).any()  # dilated liver and the -0.5 around it
    if tiles:  # their crop exactly: the tiles reach beyond it themselves
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-6)
        return
    # the engine's sliding windows: the box grown (centred) to the patch, 0 beyond the crop
    grown = [g - w for g, w in zip(got.shape, want.shape)]
    assert got.shape == tuple(max(w, p) for w, p in zip(want.shape, patch_zyx))
    inner = tuple(slice(d // 2, d // 2 + w) for d, w in zip(grown, want.shape))
    np.testing.assert_allclose(got[inner], want, atol=2e-6)
    beyond = np.ones(got.shape, bool)
    beyond[inner] = False
    np.testing.assert_array_equal(got[beyond], 0.0)  # their segment extraction's default beyond the crop


def test_predict_and_explain_run_the_liver_model_first_for_the_lesion_model(monkeypatch):
    import XAIExplainLib.models.pipeline as pipeline
    from XAIExplainLib.models.loaded import LoadedModel

    image = _ct(shape_zyx=(12, 40, 36), spacing_xyz=(0.9, 0.8, 2.5))
    liver = np.zeros((12, 40, 36), np.uint8)
    liver[4:9, 14:26, 10:20] = 1
    labels = sitk.GetImageFromArray(liver)
    labels.CopyInformation(image)
    liver_card = load_card(resolve_model_name("liver-seg-3d"))
    calls = []

    def fake_load(name, **kw):
        calls.append(name)
        return LoadedModel(module=torch.nn.Identity(), card=liver_card)

    monkeypatch.setattr(pipeline, "load_model", fake_load)
    monkeypatch.setattr(pipeline, "predict_image", lambda model, img, **kw: calls.append(model.name) or labels)
    card = load_card(resolve_model_name("liver-lesion-seg-3d"))
    lesion = LoadedModel(module=torch.nn.Identity(), card=card)
    prepared = pipeline._prepare(lesion, image, None, None)
    assert calls == ["liver-seg-3d", "liver-seg-3d"]  # loaded, then its prediction
    np.testing.assert_array_equal(prepared.array, prepare(card, image, region=liver == 1).array)
    with pytest.raises(ValueError, match="give its region"):
        prepare(card, image)  # alone, the card pipeline says what it needs
    with pytest.raises(ValueError, match="remove the region"):
        prepare(liver_card, image, region=liver == 1)
    empty = np.zeros_like(liver, bool)
    with pytest.raises(ValueError, match="'liver-seg-3d' finds no liver in this image"):
        prepare(card, image, region=empty)


def test_lesion_labels_are_their_threshold_then_order_one_zoom_above_zero():
    card = load_card(resolve_model_name("liver-lesion-seg-3d"))
    assert card.postprocessing == PostprocessingSpec(largest_component=False, erosion=0)
    p = _blobs()
    model = Grid(tuple(reversed(p.shape)), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    fine = Grid((30, 25, 50), (0.8, 0.8, 1.0), (-1.0, -1.0, -1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    prepared = PreparedInput(np.zeros((1,) + p.shape, np.float32), model, fine, False, True, "softmax",
                             card.postprocessing)
    labels = prepared.restore_labels(np.stack([1 - p, p]), "softmax")
    want = resample_array((p > 0.5).astype(np.float32), model, fine, 0.0) > 0
    np.testing.assert_array_equal(labels, want.astype(np.uint8))


# ---- their abdomen crop (crop_ct_image) ---------------------------------------------------------

def _first_box(mask):
    return ndimage.find_objects(np.asarray(mask).astype(np.int8))[0]


def their_crop(ct, vox, size_max=(489, 408, 408), tissue=-150, air_th=-600, bone_th=500, ratio=0.7,
               height_max=400, dome_mm=70.0, hip_mm=20.0):
    """crop_ct_image written out straight from their steps, on their (x, y, z) LPS array."""
    body = ndimage.binary_erosion(ct > tissue)
    lab, n = ndimage.label(body)
    counts = ndimage.labeled_comprehension(ct, lab, np.arange(1, n + 1), len, int, -1)
    box1 = _first_box(lab == np.arange(1, n + 1)[np.argmax(counts)])
    work = np.zeros(ct.shape) + ct.min()
    work[box1] = ct[box1]
    work[:, :, -1] = 0
    air = work < air_th
    air[:, :, :-1] = ndimage.binary_opening(air[:, :, :-1], np.ones((5, 5, 5)))
    lab_air = ndimage.label(np.pad(air, ((3, 3), (3, 3), (0, 0)), constant_values=1))[0][3:-3, 3:-3, :]
    ids = np.arange(1, lab_air.max() + 1)
    vols = ndimage.labeled_comprehension(work, lab_air, ids, len, int, -1) * np.prod(vox)
    ordered = np.sort(vols)
    inner = np.logical_and(lab_air != ids[vols == ordered[-1]][0], air)
    profile = signal.convolve(inner.sum(0).sum(0), np.ones(7), "same")
    lo, hi = profile.min(), profile.max()
    run = np.where(profile > lo + 0.5 * (hi - lo))[0]
    starts = np.where(signal.convolve(run, np.array([1, -1]), "same") != 1)[0]
    dome1 = run[0]
    if len(starts) > 1 and np.any(profile[run[starts[1] - 1]:run[starts[1]]] < lo + 0.2 * (hi - lo)):
        dome1 = run[starts[1]]
    abd = _first_box(inner)
    cx, cy = (abd[0].start + abd[0].stop + 1) // 2, (abd[1].start + abd[1].stop + 1) // 2
    two = [ids[vols == ordered[-2]][0], ids[vols == ordered[-3]][0]]
    lung = two[int(np.argmax([_first_box(lab_air == k)[2].start for k in two]))]
    dome = max(dome1, _first_box(lab_air == lung)[2].start)
    bone = signal.convolve((ct > bone_th).astype("int16").sum(0).sum(0), np.ones(7), "same")[:dome]
    top = np.argmax(bone)

    def extrema(compare, order, step):
        found = signal.argrelextrema(bone, compare, order=order)[0]
        while len(found) == 0:
            order = max(1, order - step)
            found = signal.argrelextrema(bone, compare, order=order)[0]
        return found

    mins = extrema(np.less, 15, 3)
    bottom = mins[np.argsort(bone[mins])[0]]
    maxs = extrema(np.greater, 15, 3)
    ranked = np.argsort(bone[maxs])
    second = maxs[ranked[-2]] if len(ranked) > 1 else maxs[ranked[-1]]
    if bottom < top and bottom < second:
        bottom = second + np.argmin(bone[second:])
    peaks = extrema(np.greater, 5, 1)
    r = ratio
    tall = np.where(bone > r * (bone[top] - bone[bottom]) + bone[bottom])[0]
    cand = np.intersect1d(peaks, tall)
    while len(tall) == 0 or len(cand) == 0:
        r = max(r - 0.1, 0.05)
        tall = np.where(bone > r * (bone[top] - bone[bottom]) + bone[bottom])[0]
        cand = np.intersect1d(peaks, tall)
    hip = 0 if len(np.where(cand < bottom)[0]) < 2 else cand[np.where(cand < bottom)][-1]
    if (dome - hip) * vox[2] > height_max:
        hip = dome - int(height_max / vox[2])
    z = slice(max(0, hip - int(hip_mm / vox[2])), min(ct.shape[2], dome + int(dome_mm / vox[2])))
    crop = ct[box1[0], box1[1], z]
    lab2, n2 = ndimage.label(ndimage.binary_erosion(crop > tissue, np.ones((5, 5, 5))))
    counts2 = ndimage.labeled_comprehension(crop, lab2, np.arange(1, n2 + 1), len, int, -1)
    box2 = _first_box(lab2 == np.arange(1, n2 + 1)[np.argmax(counts2)])
    xs = slice(box1[0].start + box2[0].start, box1[0].start + box2[0].stop)
    ys = slice(box1[1].start + box2[1].start, box1[1].start + box2[1].stop)
    out = []
    for s, c, v, m in ((xs, cx, vox[0], size_max[0]), (ys, cy, vox[1], size_max[1])):
        size = s.stop - s.start
        if size * v > m:
            extra = size * v - m
            s = slice(s.start + np.ceil((c - s.start) / size * extra / v).astype("int16"),
                      s.stop - np.ceil((s.stop - c) / size * extra / v).astype("int16"))
        out.append(s)
    if (z.stop - z.start) * vox[2] > size_max[2]:
        z = slice(z.start + np.ceil(((z.stop - z.start) * vox[2] - size_max[2]) / vox[2]).astype("int16"), z.stop)
    return (out[0], out[1], z)


def _torso(nz=110):
    """A torso in their (x, y, z) order, 6 x 6 x 5 mm: body, two lungs above z = 70, bowel gas, a spine,
    ribs around the lungs and hip bones low down with a second bone peak below them."""
    x, y, z = np.meshgrid(np.arange(70), np.arange(60), np.arange(nz), indexing="ij")
    ct = np.full(x.shape, -1000.0)
    body = ((x - 35) / 30.0) ** 2 + ((y - 30) / 24.0) ** 2 < 1
    ct[body] = 40.0
    for cx, base in ((22, 70), (48, 74)):
        lung = (((x - cx) / 9.0) ** 2 + ((y - 28) / 12.0) ** 2 < 1) & (z >= base) & (z < nz - 2)
        ct[lung] = -850.0
    ct[(abs(x - 35) < 4) & (abs(y - 22) < 4) & (abs(z - 40) < 4)] = -900.0  # bowel gas
    spine = 2.0 + np.clip(z - 30, 0, None) / 12.0  # vertebrae widening upwards from z = 30
    ct[((x - 35) ** 2 + (y - 46) ** 2 < spine ** 2)] = 700.0
    ribs = body & ~(((x - 35) / 27.0) ** 2 + ((y - 30) / 21.0) ** 2 < 1) & (z >= 62) & (z % 6 < 2)
    ct[ribs] = 700.0
    for centre, height, radius in ((19, 9, 11.0), (4, 4, 6.0)):  # iliac wings, then femoral heads: cones
        r = radius * np.clip(1 - abs(z - centre) / height, 0, None)
        for cx in (12, 58):
            ct[((x - cx) ** 2 + (y - 32) ** 2 < r ** 2)] = 700.0
    return ct


@pytest.mark.parametrize("which", ["torso", "phantom"])
def test_the_abdomen_crop_is_their_crop_ct_image(which):
    from XAIExplainLib.models.liver_crop import abdomen_box

    if which == "torso":
        ct, vox = _torso(), (6.0, 6.0, 5.0)
    else:
        from XAIExplainLib.imaging.phantoms import abdominal_phantom

        phantom = abdominal_phantom(seed=7, phase="portal_venous", shape=(60, 128, 128), spacing=(5.0, 3.1, 3.1),
                                    supersample=1)
        ct, vox = sitk.GetArrayFromImage(phantom.image()).transpose(2, 1, 0), (3.1, 3.1, 5.0)
    want = their_crop(ct, vox)
    got = abdomen_box(ct, vox)
    assert [(s.start, s.stop) for s in got] == [(int(s.start), int(s.stop)) for s in want]
    if which == "torso":  # a real crop: below the top and above the bottom, inside the body
        assert 0 < got[2].start and got[2].stop < ct.shape[2] and got[0].stop - got[0].start < ct.shape[0]


def test_the_trim_to_the_maximum_size_is_theirs():
    from XAIExplainLib.models.liver_crop import CropSpec, abdomen_box

    ct, vox = _torso(), (6.0, 6.0, 5.0)
    want = their_crop(ct, vox, size_max=(200, 150, 250))
    got = abdomen_box(ct, vox, CropSpec(size_mm_max=(200.0, 150.0, 250.0)))
    assert [(s.start, s.stop) for s in got] == [(int(s.start), int(s.stop)) for s in want]
    assert (got[0].stop - got[0].start) * 6 <= 200 and (got[2].stop - got[2].start) * 5 <= 250


def test_the_liver_card_crops_to_the_abdomen_before_zooming():
    ct = _torso()
    image = sitk.GetImageFromArray(ct.transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing((6.0, 6.0, 5.0))
    card = _liver_card((30, 20, 24), crop=True)
    box = their_crop(ct, (6.0, 6.0, 5.0))
    cropped = image[box]
    prepared = prepare(card, image)
    want = their_liver_input(sitk.GetArrayFromImage(cropped), (6.0, 6.0, 5.0), (24, 20, 30))
    np.testing.assert_allclose(prepared.array[0], want, atol=2e-6)
    # the labels go back onto the whole image: the model grid lies inside the cropped part
    corner = prepared.model_grid.reference().TransformIndexToPhysicalPoint([0, 0, 0])
    inside = cropped.TransformPhysicalPointToContinuousIndex(corner)
    assert inside[2] > -1.0  # not below the hip cut


def test_a_chest_ct_without_pelvis_is_used_whole_with_a_warning():
    from XAIExplainLib.models.liver_crop import CropError, abdomen_box

    from pathlib import Path

    lung1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "lung1_image.nrrd"  # as test_real_ct
    if lung1.exists():  # the shared chest CT: its lowest slices just reach the liver dome
        real = sitk.ReadImage(str(lung1))
        with pytest.raises(CropError, match="no slices below it"):
            abdomen_box(sitk.GetArrayViewFromImage(real).transpose(2, 1, 0), real.GetSpacing())
    ct = _torso()[:, :, 68:]  # from just below the lung bases up: no hip below the dome
    with pytest.raises(CropError):
        abdomen_box(ct, (6.0, 6.0, 5.0))
    image = sitk.GetImageFromArray(ct.transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing((6.0, 6.0, 5.0))
    with pytest.warns(UserWarning, match="the whole image is used instead"):
        cropped = prepare(_liver_card((10, 20, 24), crop=True), image)
    whole = prepare(_liver_card((10, 20, 24)), image)
    np.testing.assert_array_equal(cropped.array, whole.array)
    card = _liver_card((10, 20, 24), crop=True)
    strict = dataclasses.replace(card.input.resampling, crop=dataclasses.replace(card.input.resampling.crop,
                                                                                   required=True))
    with pytest.raises(ValueError, match="give a CT from the lung bases to the pelvis"):
        prepare(dataclasses.replace(card, input=dataclasses.replace(card.input, resampling=strict)), image)
