"""``xaiexplain explain --model FOLDER`` with the nnU-Net ``2d`` and ``3d_cascade_fullres`` configurations.

The reference is the API on the same input (``predict_image`` / ``explain_image``), itself checked against
nnU-Net's own predictor in Testing/models/test_nnunet_configurations.py; the folders are the same tiny ones.
The CLI has no option naming a cascade's first stage: the ``3d_lowres`` folder beside it is found, and the
run's summary says, as the API's card does, that the maps explain the fullres stage.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nnunetv2")
import SimpleITK as sitk  # noqa: E402

from Testing.models.test_nnunet_configurations import PLANE  # noqa: E402
from Testing.support.nnunet_folders import ct_image, write_cascade, write_nnunet_folder  # noqa: E402
from XAIExplainLib import cli  # noqa: E402
from XAIExplainLib.models import explain_image, load_model, predict_image  # noqa: E402

pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    _, cascade = write_cascade(root / "cascade" / "Dataset999_Tiny")
    return {"2d": write_nnunet_folder(root / "plane" / "Dataset999_Tiny" / "nnUNetTrainer__nnUNetPlans__2d",
                                      **PLANE),
            "3d_cascade_fullres": cascade}


def _explain(folder, image, tmp_path, capsys):
    case = tmp_path / "case.nii.gz"
    if not case.exists():  # a rerun reads the same file (a rewritten one is a changed input)
        sitk.WriteImage(image, str(case))
    out = tmp_path / "out"
    status = cli.main(["explain", str(case), "--model", str(folder), "--trust-model", "--method", "gradcam",
                       "--device", "cpu", "--quiet", "-o", str(out)])
    assert status == 0, capsys.readouterr().err
    read = (sitk.ReadImage(str(out / f"case_{kind}.nii.gz")) for kind in ("prediction", "gradcam"))
    return (*read, json.loads((out / "summary.json").read_text()))


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("configuration", ["2d", "3d_cascade_fullres"])
def test_cli_writes_the_apis_prediction_and_a_heatmap_on_the_input_grid(folders, configuration, tmp_path, capsys):
    folder = folders[configuration]
    image = ct_image(oblique=True)
    prediction, heatmap, summary = _explain(folder, image, tmp_path, capsys)
    model = load_model(folder)
    expected = sitk.GetArrayFromImage(predict_image(model, image, device="cpu"))
    got = sitk.GetArrayFromImage(prediction)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(got, expected)
    _same_grid(prediction, image)
    _same_grid(heatmap, image)
    assert heatmap.GetNumberOfComponentsPerPixel() == 1
    maps = sitk.GetArrayFromImage(heatmap)
    assert np.isfinite(maps).all() and maps.max() > 0.5
    reference = sitk.GetArrayFromImage(explain_image(model, image, "gradcam", device="cpu").maps["gradcam"])
    np.testing.assert_allclose(maps, reference, atol=1e-4)
    assert summary["model"] == f"Dataset999_Tiny {configuration}"


def test_cli_summary_says_which_cascade_stage_the_maps_explain(folders, tmp_path, capsys):
    """The API's card says the maps explain the 3d_cascade_fullres stage and names the first stage it read;
    the run's summary, read back long after, must say the same (it named the fullres folder only)."""
    folder = folders["3d_cascade_fullres"]
    card = load_model(folder).card
    assert "maps explain this 3d_cascade_fullres stage" in card.description
    *_, summary = _explain(folder, ct_image(shape=(12, 20, 18)), tmp_path, capsys)
    source = summary["model_source"]
    assert source["explained_stage"] == "3d_cascade_fullres"
    assert source["previous_stage"] == card.extra["nnunet"]["previous_stage"]
    assert source["previous_stage"]["configuration"] == "3d_lowres"
    assert source["previous_stage"]["folder"] == str(folder.parent / "nnUNetTrainer__nnUNetPlans__3d_lowres")
    assert source["note"] == card.description


def test_cli_summary_of_a_single_stage_model_names_no_previous_stage(folders, tmp_path, capsys):
    *_, summary = _explain(folders["2d"], ct_image(shape=(12, 20, 18)), tmp_path, capsys)
    assert "previous_stage" not in summary["model_source"]


def test_a_rerun_after_the_first_stage_changed_is_not_taken_as_complete(tmp_path, capsys):
    """A rerun into the same folder skips inputs whose model and options are unchanged. The cascade's
    maps and prediction depend on the 3d_lowres stage too: with only the fullres checkpoint in the model's
    digest, new first-stage weights left the earlier (now wrong) outputs in place as complete."""
    import torch

    lowres, cascade = write_cascade(tmp_path / "Dataset999_Tiny")
    image = ct_image(shape=(12, 20, 18))
    _explain(cascade, image, tmp_path, capsys)
    before = load_model(cascade).weights_sha256
    checkpoint = lowres / "fold_0" / "checkpoint_final.pth"
    saved = torch.load(checkpoint, weights_only=False)
    for name, value in saved["network_weights"].items():
        if name.endswith("bias"):
            value.neg_()
    torch.save(saved, checkpoint)
    model = load_model(cascade)
    assert model.weights_sha256 != before
    command = ["explain", str(tmp_path / "case.nii.gz"), "--model", str(cascade), "--trust-model", "--method",
               "gradcam", "--device", "cpu", "--quiet", "-o", str(tmp_path / "out")]
    capsys.readouterr()
    assert cli.main(command) == 2
    assert "were made with other settings (the model's weights differ" in capsys.readouterr().err
    assert cli.main(command + ["--overwrite"]) == 0
    prediction = sitk.ReadImage(str(tmp_path / "out" / "case_prediction.nii.gz"))
    expected = sitk.GetArrayFromImage(predict_image(model, image, device="cpu"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(prediction), expected)
