"""What the command line shows on a first look at a volume (issue 25 sections 1 and 4).

* a per-slice classifier's outputs explain one class, named in the summary, and the
  overlay cuts through the slice with the highest probability of that class;
* one method that cannot run does not sink the others (exit 1, the row names it);
* CAM and CRM use the card's GAP-fed layer when no layer is given.
References: the engine on the model-grid array and the run's own prediction CSV.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import XAIExplainLib as xai
from XAIExplainLib import cli
from XAIExplainLib.imaging.phantoms import chest_phantom


@pytest.fixture(scope="module")
def chest_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "chest.nrrd"
    sitk.WriteImage(chest_phantom(seed=2, shape=(12, 160, 160), spacing=(5.0, 1.8, 1.8)).image(), str(path))
    return path


def run(capsys, *args):
    status = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def _row(folder):
    with open(folder / "summary.csv", newline="") as handle:
        return next(csv.DictReader(handle))


def _neighbour_mean(values):
    """The mean of each value with its neighbours that exist, written out."""
    return [float(np.mean(values[max(0, i - 1):i + 2])) for i in range(len(values))]


def test_the_overlay_names_one_class_and_cuts_where_it_is_most_probable_with_its_neighbours(
        chest_path, tmp_path, capsys, monkeypatch):
    from XAIExplainLib.cli import explain_run, montage

    seen = {}
    original = montage.render_overlay

    def spy(image, heat, path, title, subtitle="", *args):
        seen.update(title=title, args=args)
        return original(image, heat, path, title, subtitle, *args)

    monkeypatch.setattr(explain_run, "render_overlay", spy)
    status, _, err = run(capsys, "explain", chest_path, "--model", "lung-nodule-2d", "--method", "gradcam",
                         "--overlay", "-o", tmp_path)
    assert status == 0, err
    assert _row(tmp_path)["explained_class"] == "nodule"
    with open(tmp_path / "chest_prediction.csv", newline="") as handle:
        p_nodule = [float(r["nodule"]) for r in csv.DictReader(handle)]
    evidence = _neighbour_mean(p_nodule)
    best = int(np.argmax(evidence))
    focus, caption, strip, outline = seen["args"][3:7]
    assert focus[0] == best  # the slice of strongest evidence, not the map's global peak
    assert f"slice {best} of 12" in caption
    assert f"highest p(nodule) together with its neighbouring slices (mean {evidence[best]:.2f}" in caption
    assert f"class nodule (p = {p_nodule[best]:.2f} on slice {best})" in seen["title"]
    assert strip.chosen == best and np.allclose(strip.values, p_nodule, atol=1e-6)
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "chest_gradcam.nrrd")))
    assert focus[1:] == np.unravel_index(np.argmax(heat[best]), heat[best].shape)
    assert outline == ""  # nothing outlined for a classifier
    assert (tmp_path / "chest_gradcam.png").stat().st_size > 0


def test_per_slice_target_is_explicit(chest_path, tmp_path, capsys):
    status, _, err = run(capsys, "explain", chest_path, "--model", "lung-nodule-2d", "--method", "gradcam",
                         "--target", "per-slice", "-o", tmp_path)
    assert status == 0, err
    assert _row(tmp_path)["explained_class"] == "per-slice"
    assert (tmp_path / "chest_gradcam_per_slice.nrrd").is_file()


def test_a_method_that_cannot_run_is_reported_and_the_others_are_written(chest_path, tmp_path, capsys):
    status, _, err = run(capsys, "explain", chest_path, "--model", "lung-nodule-2d", "--method", "gradcam",
                         "--method", "crm", "--layer", "features.block2", "-o", tmp_path)
    assert status == 1
    assert "crm: CRM (like CAM) needs layer 'features.block2'" in err
    row = _row(tmp_path)
    assert row["status"] == "partial" and "crm:" in row["error"]
    assert (tmp_path / "chest_gradcam.nrrd").is_file() and not (tmp_path / "chest_crm.nrrd").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["partial"] == 1
    # a re-run with the same command retries the input instead of skipping it as complete
    status, _, err = run(capsys, "explain", chest_path, "--model", "lung-nodule-2d", "--method", "gradcam",
                         "--method", "crm", "--layer", "features.block2", "-o", tmp_path)
    assert status == 1 and "crm:" in err and _row(tmp_path)["skipped"] == "False"


def test_cam_and_crm_use_the_cards_gap_fed_layer_when_none_is_given(chest_path):
    model = xai.load_model("lung-nodule-2d", device="cpu")
    result = xai.explain_image(model, str(chest_path), methods=["gradcam", "cam", "crm"], device="cpu",
                               normalize=False)
    assert result.layers == {"gradcam": "features.block2", "cam": "features.block4", "crm": "features.block4"}
    array = result.prepared.array
    background = float(array.min())  # layer maps see each slice inside a margin of background (edge_margin)
    for method, layer, margin in (("cam", "features.block4", 48), ("crm", "features.block4", 48),
                                  ("gradcam", "features.block2", 12)):
        padded = np.pad(array, ((0, 0), (0, 0), (margin, margin), (margin, margin)), constant_values=background)
        raw = xai.explain_volume(model.module, padded, method, target=1, layer=layer, normalize=False)
        reference = result.prepared.restore_map(raw[:, margin:-margin, margin:-margin], clamp=False)
        np.testing.assert_allclose(sitk.GetArrayFromImage(result.maps[method]), sitk.GetArrayFromImage(reference),
                                   rtol=1e-5, atol=1e-6)
    assert torch.is_tensor(torch.as_tensor(array))


def test_evaluate_scores_a_per_slice_model_on_each_slice_with_the_mask(tmp_path, capsys):
    phantom = chest_phantom(seed=2, shape=(12, 160, 160), spacing=(5.0, 1.8, 1.8))
    image_path, mask_path = tmp_path / "chest.nrrd", tmp_path / "nodule.nrrd"
    sitk.WriteImage(phantom.image(), str(image_path))
    sitk.WriteImage(phantom.mask_image("nodule"), str(mask_path))
    status, out, err = run(capsys, "evaluate", image_path, "--mask", mask_path, "--model", "lung-nodule-2d",
                           "--method", "gradcam", "-o", tmp_path / "ev")
    assert status == 0, err
    row = json.loads((tmp_path / "ev" / "chest_evaluation.json").read_text())["rows"][0]
    assert row["target"] == "nodule"  # the explained class of the whole volume
    heat = xai.explain_image("lung-nodule-2d", phantom.image(), methods="gradcam", device="cpu").maps["gradcam"]
    heat = sitk.GetArrayFromImage(heat)
    mask = phantom.mask("nodule")
    slices = [z for z in range(len(mask)) if mask[z].any()]
    assert row["mask_slices"] == slices
    naive = [float(mask[z].ravel()[np.argmax(heat[z])]) for z in slices]  # peak of each slice in the mask?
    assert row["pointing_game_mask_slices"] == naive
    assert row["pointing_game_slice_mean"] == pytest.approx(np.mean(naive))
    energy = [float(heat[z][mask[z]].sum() / heat[z].sum()) for z in slices]
    np.testing.assert_allclose(row["energy_pointing_game_mask_slices"], energy, rtol=1e-4)
    assert "pointing_game_slice_mean" in out.splitlines()[0]


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, -1),
                                       (0, 1, 0, 1, 0, 0, 0, 0, 1)])
def test_views_cross_at_the_chosen_voxel_whatever_the_orientation(direction):
    from XAIExplainLib.cli.montage import focus_voxel, views_through_peak

    rng = np.random.default_rng(0)
    array = rng.uniform(0, 1, (6, 9, 11)).astype(np.float32)
    focus = (4, 2, 7)
    array[focus] = 50.0  # a marker the three views must all contain
    heat = np.zeros_like(array)
    heat[1, 1, 1] = 1.0  # the map's global peak is elsewhere
    heat[focus] = 0.5
    region = np.zeros(array.shape, bool)
    region[3:6, 1:4, 5:9] = True
    assert focus_voxel(heat, region=region) == focus  # the peak inside the region, not the global one
    assert focus_voxel(heat, slice_axis=0, slice_index=4) == focus
    images = []
    for values in (array, heat):
        image = sitk.GetImageFromArray(values)
        image.SetDirection(direction)
        image.SetSpacing((0.8, 1.1, 2.5))
        images.append(image)
    for view in views_through_peak(images[0], images[1], focus=focus):
        assert view.image.max() == 50.0, view.name


LUNG1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "lung1_image.nrrd"


@pytest.mark.skipif(not LUNG1.is_file(), reason="real CT fixture ../shared/data/lung1_image.nrrd is not present")
def test_the_readme_overlay_on_lung1_cuts_through_the_nodule(tmp_path, capsys, monkeypatch):
    """`xaiexplain explain lung1_image.nrrd --model lung-nodule-2d --method gradcam --overlay` cut slice 30
    (a single-slice false positive, p = 0.9997); the expert nodule lies on slices 32-34."""
    from XAIExplainLib.cli import explain_run, montage

    seen = {}
    original = montage.render_overlay

    def spy(image, heat, path, title, subtitle="", *args):
        seen.update(title=title, args=args)
        return original(image, heat, path, title, subtitle, *args)

    monkeypatch.setattr(explain_run, "render_overlay", spy)
    status, _, err = run(capsys, "explain", LUNG1, "--model", "lung-nodule-2d", "--method", "gradcam", "--overlay",
                         "-o", tmp_path)
    assert status == 0, err
    focus, caption = seen["args"][3:5]
    assert 32 <= focus[0] <= 34, caption
    assert "class nodule" in seen["title"] and "neighbouring slices" in caption
