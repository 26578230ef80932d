"""A card with an input pipeline per modality (pyliverlesionseg's liver networks take CT and MR).

The card's ``input.modality`` and ``input.variants`` are parsed and refused as a card's other
fields; the modality an image runs with is the one asked for, else its DICOM header's, else what its
intensities show (a CT reaches air at -1000 HU, an MR has no negative values), else a refusal that
says how to name it. The API, the command line and the Slicer logic pass it on, the lesion network's
liver-seg-3d runs with the same one, and each result says which ran. The references: the card's own
fields written here, and their MR lesion normalisation written out from their code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from Testing.support import slicer_scene as support
from Testing.support.slicer_scene import scene  # noqa: F401 - the fixture
from XAIExplainLib.imaging.intensity import region_median
from XAIExplainLib.models.card import ModelCard, load_card
from XAIExplainLib.models.errors import ModelCardError
from XAIExplainLib.models.modality import choose_modality
from XAIExplainLib.models.search_paths import resolve_model_name

CT_WINDOW, MR_WINDOW = [-1000.0, 400.0], [0.0, 800.0]


def _two_modality_card(tmp_path: Path) -> Path:
    """A bright-spot 3D segmenter whose CT and MR inputs differ only in their window."""
    path = support.write_card(tmp_path / "two", task="segmentation", dims=3, window=CT_WINDOW)
    data = json.loads(path.read_text())
    data["name"] = "two-modalities"
    data["input"]["modality"] = "CT"
    data["input"]["variants"] = {"MR": {"intensity": {"mode": "window", "window": MR_WINDOW}}}
    path.write_text(json.dumps(data))
    return path


def _image(values: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(spacing)
    return image


def _ct() -> sitk.Image:
    array = np.full((6, 16, 16), -1000.0)
    array[:, 3:13, 3:13] = 40.0
    array[2:4, 6:10, 6:10] = 300.0
    return _image(array)


def _mr() -> sitk.Image:
    array = np.zeros((6, 16, 16))
    array[:, 3:13, 3:13] = 200.0
    array[2:4, 6:10, 6:10] = 700.0
    return _image(array)


# ---- the card -----------------------------------------------------------------------------------------

def test_variants_are_the_cards_input_with_their_fields_replaced(tmp_path):
    card = load_card(_two_modality_card(tmp_path))
    assert card.input.modalities == ("CT", "MR")
    mr = card.for_modality("MR")
    assert mr.input.intensity.window == tuple(MR_WINDOW) and mr.input.modality == "MR"
    assert mr.input.spacing == card.input.spacing and mr.input.channels == card.input.channels
    assert card.for_modality("CT") is card
    again = ModelCard.from_dict(card.to_dict(), base_dir=card.base_dir)
    assert again.input == card.input  # written and read back unchanged
    with pytest.raises(ValueError, match=r"has no 'PET' input pipeline \(modalities: CT, MR\)"):
        card.for_modality("PET")


@pytest.mark.parametrize("change, message", [
    (lambda i: i["variants"]["MR"].update(spacing=[1, 1, 1]),
     r"'input.variants.MR' has unknown key\(s\) \['spacing'\]; a variant sets intensity, resampling, pad_value"),
    (lambda i: i.pop("modality"), r"'input.variants' needs input.modality"),
    (lambda i: i["variants"].update(ct={"pad_value": 0}), r"'input.variants.ct' repeats the modality 'ct'"),
    (lambda i: i["variants"]["MR"].update(intensity={"mode": "window", "window": [5, 1]}),
     r"'input.variants.MR' makes an invalid input: field 'input.intensity.window' must have low < high"),
    (lambda i: i["variants"]["MR"].update(intensity={"mode": "region_median"}),
     r"'region_median' centres on a region another model segments.*input.resampling.mask"),
    (lambda i: i.update(modality="C T"), r"'input.modality' must be a modality name such as 'CT' or 'MR'"),
])
def test_a_wrong_variant_is_refused_naming_the_field(tmp_path, change, message):
    path = _two_modality_card(tmp_path)
    data = json.loads(path.read_text())
    change(data["input"])
    path.write_text(json.dumps(data))
    with pytest.raises(ModelCardError, match=message):
        load_card(path)


def test_the_bundled_liver_models_take_ct_and_mr():
    for name in ("liver-seg-3d", "liver-lesion-seg-3d"):
        card = load_card(resolve_model_name(name))
        assert card.input.modalities == ("CT", "MR")
    lesion = load_card(resolve_model_name("liver-lesion-seg-3d")).for_modality("MR")
    assert lesion.input.intensity.mode == "region_median" and lesion.input.resampling.mask.model == "liver-seg-3d"


# ---- choosing ----------------------------------------------------------------------------------------

def test_the_modality_asked_for_wins_and_is_spelled_as_the_card_spells_it(tmp_path):
    card = load_card(_two_modality_card(tmp_path))
    assert choose_modality(card, _ct(), "mri").modality == "MR"  # DICOM's and people's "MRI"
    assert choose_modality(card, _ct(), "ct").reason == "asked for"
    assert choose_modality(card, _ct(), "auto").modality == "CT"  # "auto": the image decides
    with pytest.raises(ValueError, match=r"takes CT or MR images; the modality asked for is 'PT'"):
        choose_modality(card, _ct(), "PT")


def test_the_dicom_header_decides_before_the_intensities(tmp_path):
    card = load_card(_two_modality_card(tmp_path))
    image = _ct()  # CT-looking values ...
    image.SetMetaData("0008|0060", "MR")  # ... but the scanner wrote MR
    choice = choose_modality(card, image)
    assert (choice.modality, choice.reason) == ("MR", "the image's DICOM header")
    image.SetMetaData("0008|0060", "PT")
    with pytest.raises(ValueError, match=r"the image's DICOM Modality is 'PT'"):
        choose_modality(card, image)


def test_the_intensities_decide_and_an_undecidable_image_is_refused(tmp_path):
    card = load_card(_two_modality_card(tmp_path))
    assert choose_modality(card, _ct()) .modality == "CT"
    assert choose_modality(card, _mr()).modality == "MR"
    assert choose_modality(card, sitk.GetArrayFromImage(_mr())).modality == "MR"  # a numpy array alike
    soft_tissue = _image(np.full((6, 16, 16), -100.0))  # a CT cropped inside the body, or a signed MR
    with pytest.raises(ValueError, match=r"do not tell which it is \(lowest value -100.*name the modality"):
        choose_modality(card, soft_tissue)


def test_a_model_without_modalities_refuses_one_and_needs_none(tmp_path):
    card = load_card(support.write_card(tmp_path / "one", task="segmentation", dims=3))
    assert choose_modality(card, _mr()).modality is None
    with pytest.raises(ValueError, match=r"declares no modality .*remove the modality 'MR'"):
        choose_modality(card, _mr(), "MR")


def test_a_dicom_series_keeps_its_modality(tmp_path):
    from XAIExplainLib.imaging.reading import read_dicom_series

    array = (sitk.GetArrayFromImage(_mr())).astype(np.int16)
    files = []
    for z in range(array.shape[0]):
        slice_image = sitk.GetImageFromArray(array[z:z + 1])
        slice_image.SetSpacing((1.0, 1.0, 2.0))
        slice_image.SetOrigin((0.0, 0.0, 2.0 * z))
        writer = sitk.ImageFileWriter()
        for key, value in (("0008|0060", "MR"), ("0020|0032", f"0\\0\\{2.0 * z}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|000e", "1.2.3.4"), ("0020|0013", str(z))):
            slice_image.SetMetaData(key, value)
        writer.SetFileName(str(tmp_path / f"{z:02d}.dcm"))
        writer.KeepOriginalImageUIDOn()
        writer.Execute(slice_image)
        files.append(str(tmp_path / f"{z:02d}.dcm"))
    image = read_dicom_series(files)
    assert image.GetMetaData("0008|0060") == "MR"


# ---- their MR normalisation of the lesion network's input ---------------------------------------------

def naive_liver_median_normalisation(image: np.ndarray, liver: np.ndarray) -> np.ndarray:
    """Their cnn_liver_lesion_seg_CT_MR_main, Modality 'MR', before the zoom."""
    min_liv = np.min(image[np.where(liver > 0)])
    max_liv = np.max(image[np.where(liver > 0)])
    median_liv = np.median(image[np.where(liver > 0)])
    with np.errstate(divide="ignore"):
        ratio = min(0.5 / abs(min_liv - median_liv), 0.5 / abs(max_liv - median_liv))
    return (image - median_liv) * ratio


def test_region_median_is_their_mr_normalisation():
    rng = np.random.default_rng(0)
    image = rng.gamma(3.0, 120.0, (10, 20, 18))
    liver = np.zeros(image.shape, bool)
    liver[2:8, 4:15, 3:12] = True
    np.testing.assert_allclose(region_median(image, liver), naive_liver_median_normalisation(image, liver),
                               atol=1e-6)
    skewed = image.copy()
    skewed[liver] = np.where(skewed[liver] < np.median(skewed[liver]), np.median(skewed[liver]), skewed[liver])
    np.testing.assert_allclose(region_median(skewed, liver), naive_liver_median_normalisation(skewed, liver),
                               atol=1e-6)  # min == median: the maximum alone sets the scale, as in theirs
    with pytest.raises(ValueError, match="one intensity .* everywhere"):
        region_median(np.ones((4, 4, 4)), np.ones((4, 4, 4), bool))


def test_the_mr_lesion_input_is_their_normalised_zoomed_masked_liver():
    """The lesion card's MR pipeline on a given liver: their normalisation, then the CT path's zoom, mask and
    crop (checked against theirs in test_liver_pipeline) — so the prepared array equals the CT pipeline's on the
    image normalised their MR way beforehand."""
    from XAIExplainLib.models.preprocessing import prepare

    card = load_card(resolve_model_name("liver-lesion-seg-3d"))
    rng = np.random.default_rng(2)
    values = rng.gamma(4.0, 80.0, (30, 60, 56))
    liver = np.zeros(values.shape, bool)
    liver[8:22, 15:45, 12:40] = True
    image = _image(values, spacing=(1.6, 1.6, 4.0))
    mr = prepare(card.for_modality("MR"), image, region=liver)
    normalised = naive_liver_median_normalisation(values, liver)
    # the CT card's window maps [-200, 200] HU onto [-0.5, 0.5]: 400 x their value + 0 is the same input
    as_hu = _image(normalised * 400.0, spacing=(1.6, 1.6, 4.0))
    ct = prepare(card, as_hu, region=liver)
    assert mr.array.shape == ct.array.shape and mr.model_grid == ct.model_grid
    np.testing.assert_allclose(mr.array, ct.array, atol=2e-6)


# ---- the faces pass it on ------------------------------------------------------------------------------

def test_the_api_runs_the_chosen_pipeline_and_says_which(tmp_path, two_torch_threads):
    from XAIExplainLib.models import explain_image, load_model, predict_image

    model = load_model(_two_modality_card(tmp_path), trust=True)
    ct = explain_image(model, _ct(), "gradcam")
    assert (ct.prepared.modality, ct.prepared.modality_reason) == ("CT", "the image's intensities")
    as_mr = explain_image(model, _ct(), "gradcam", modality="MR")
    assert (as_mr.prepared.modality, as_mr.prepared.modality_reason) == ("MR", "asked for")
    window = lambda lo, hi: np.clip((sitk.GetArrayFromImage(_ct()) - lo) / (hi - lo), 0, 1)  # noqa: E731
    np.testing.assert_allclose(ct.prepared.array[0], window(*CT_WINDOW), atol=1e-6)
    np.testing.assert_allclose(as_mr.prepared.array[0], window(*MR_WINDOW), atol=1e-6)
    labels = predict_image(model, _ct(), modality="MR")
    assert sitk.GetArrayFromImage(labels).shape == sitk.GetArrayFromImage(_ct()).shape
    plain = load_model(support.write_card(tmp_path / "one", task="segmentation", dims=3), trust=True)
    with pytest.raises(ValueError, match="declares no modality"):
        predict_image(plain, _ct(), modality="CT")


def test_the_command_line_takes_and_records_the_modality(tmp_path, two_torch_threads):
    from XAIExplainLib.cli.main import main

    card = _two_modality_card(tmp_path)
    sitk.WriteImage(_mr(), str(tmp_path / "scan.nrrd"))
    out = tmp_path / "out"
    run = ["explain", "--model", str(card), "--method", "gradcam", "--trust-model", "--quiet"]
    assert main(run + ["--output-dir", str(out), str(tmp_path / "scan.nrrd")]) == 0
    record = json.loads((out / "summary.json").read_text())["inputs"][0]["prediction"]
    assert (record["modality"], record["modality_from"]) == ("MR", "the image's intensities")
    out2 = tmp_path / "out2"
    assert main(run + ["--output-dir", str(out2), "--modality", "ct", str(tmp_path / "scan.nrrd")]) == 0
    record = json.loads((out2 / "summary.json").read_text())["inputs"][0]["prediction"]
    assert (record["modality"], record["modality_from"]) == ("CT", "asked for")
    # the modality is part of what made the outputs: resuming with another is refused, with the same resumes
    assert main(run + ["--output-dir", str(out2), "--modality", "MR", str(tmp_path / "scan.nrrd")]) != 0
    assert main(run + ["--output-dir", str(out2), "--modality", "CT", str(tmp_path / "scan.nrrd")]) == 0
    assert main(run + ["--output-dir", str(out), str(tmp_path / "scan.nrrd")]) == 0


def test_the_command_line_refuses_a_modality_the_model_lacks_before_any_input(tmp_path, capsys):
    from XAIExplainLib.cli.main import main

    card = _two_modality_card(tmp_path)
    sitk.WriteImage(_mr(), str(tmp_path / "scan.nrrd"))
    out = tmp_path / "out"
    assert main(["explain", "--model", str(card), "--method", "gradcam", "--trust-model", "--output-dir", str(out),
                 "--modality", "PET", str(tmp_path / "scan.nrrd")]) != 0
    assert "--modality PET" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_the_slicer_logic_passes_the_modality(tmp_path, scene, two_torch_threads):  # noqa: F811
    logic = support.trusting_logic()
    node = support.add_volume(sitk.GetArrayFromImage(_ct()).astype(np.int16))
    card = str(_two_modality_card(tmp_path))
    with pytest.raises(ValueError, match=r"takes CT or MR images; the modality asked for is 'PT'"):
        logic.explainVolume(node, card, methods=["gradcam"], modality="PT")
    seen = {}
    from XAIExplainLib.models import pipeline

    original = pipeline._prepare

    def spy(*args, **kwargs):
        prepared = original(*args, **kwargs)
        seen["modality"] = prepared.modality
        return prepared

    pipeline._prepare = spy
    try:
        logic.explainVolume(node, card, methods=["gradcam"], modality="MR")
    finally:
        pipeline._prepare = original
    assert seen["modality"] == "MR"


# ---- their MR liver input, end to end ------------------------------------------------------------------

def their_mr_liver_input(lps_zyx: np.ndarray, spacing_xyz, size_xyz) -> np.ndarray:
    """cnn_liver_lesion_seg_CT_MR_main with Modality 'MR': crop_mr_image (their call's arguments), zoom3d to
    1.5 mm, 3 x 3 x 3 median, zoom3d to 3 mm, min .. min + 80 % of the range onto [-0.5, 0.5], the centred
    segment of the RAS array; returned as our numpy (z, y, x) LPS segment."""
    from scipy import ndimage

    from Testing.models.test_liver_crop_mr import their_crop_mr_image
    from Testing.models.test_liver_pipeline import naive_segment, naive_zoom3d

    vol = np.asarray(lps_zyx, dtype=np.float64).transpose(2, 1, 0)
    vox = np.asarray(spacing_xyz, dtype=float)
    vol = vol[their_crop_mr_image(vol, vox, size_mm_max=[489, 408, 408], tissue_ratio=0.01, liver_height_max=400,
                                  zstart_margin_mm=30.0)]
    vol = naive_zoom3d(vol, vox / 1.5)
    vol = ndimage.median_filter(vol, size=3)
    vol = naive_zoom3d(vol, [1.5 / 3.0] * 3)
    lower, upper = vol.min(), vol.min() + 0.8 * (vol.max() - vol.min())
    vol = (np.clip(vol, lower, upper) - lower) / (upper - lower) - 0.5
    segment = naive_segment(np.flip(vol, [0, 1]), size_xyz)
    return np.flip(segment, [0, 1]).transpose(2, 1, 0)


def test_the_liver_mr_input_is_their_mr_crop_zoom_median_zoom_minmax_and_segment():
    from Testing.models.test_liver_crop_mr import _mr_phantom
    from XAIExplainLib.models.preprocessing import prepare

    image = _mr_phantom(7, (60, 128, 128), (5.0, 3.1, 3.1))
    bundled = load_card(resolve_model_name("liver-seg-3d"))
    data = bundled.to_dict()
    data["input"]["size"] = [40, 44, 48]  # a smaller segment, for both modalities (variants share the rest)
    card = ModelCard.from_dict(data, base_dir=bundled.base_dir)
    prepared = card_pipeline_prepare(card, image)
    assert (prepared.modality, prepared.modality_reason) == ("MR", "the image's intensities")
    want = their_mr_liver_input(sitk.GetArrayFromImage(image), image.GetSpacing(), (48, 44, 40))
    assert np.unique(want).size > 20  # structure, not padding alone
    np.testing.assert_allclose(prepared.array[0], want, atol=2e-6)
    with pytest.warns(UserWarning, match="crops the CT to the abdomen"):  # their CT crop finds no lungs in an MR
        as_ct = prepare(card, image)  # the card's own (CT) pipeline is another input altogether
    assert np.abs(as_ct.array - prepared.array).max() > 0.1


def card_pipeline_prepare(card, image):
    from XAIExplainLib.models.preprocessing import CardPipeline

    return CardPipeline(card).prepare(image)
