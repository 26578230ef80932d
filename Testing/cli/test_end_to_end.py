"""``xaiexplain`` end to end: the installed console script on generated and real volumes.

Runs that prove what a user sees (exit status, files, geometry, the demo) go
through the console script in a subprocess.  The matrix of bad inputs is run
in-process through ``cli.main`` (the same code the script calls, without a
5-second torch import per case) so the whole file stays within the time a
shared CPU machine allows; two of those cases also run through the script to
show the exit status and the absence of a traceback there.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib import cli

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CLASSIFIER = "ct-phase-2d"
NODULE_CLASSIFIER = "lung-nodule-2d"
SEGMENTER = "lung-nodule-seg-3d"


def xaiexplain(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the installed console script (or the module when the script is not on PATH)."""
    exe = shutil.which("xaiexplain")
    command = [exe] if exe else [sys.executable, "-m", "XAIExplainLib.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, encoding="utf-8",
                          cwd=cwd, timeout=timeout)


def run_main(capsys, *args) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (f(np.radians(a)) for a in (ax, ay, az) for f in (np.cos, np.sin))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def chest_volume(seed: int = 3) -> sitk.Image:
    """A small procedural chest CT (int16 HU)."""
    from XAIExplainLib.imaging.phantoms import chest_phantom

    return chest_phantom(seed=seed, shape=(12, 72, 72), spacing=(8.0, 4.5, 4.5)).image()


def oblique_copy(image: sitk.Image) -> sitk.Image:
    """The same voxels on a grid tilted about all three axes, with an odd origin."""
    tilted = sitk.Image(image)
    tilted.SetDirection(_rotation(12.0, -7.0, 20.0).ravel().tolist())
    tilted.SetOrigin((-161.2534, -152.5071, -64.7503))
    return tilted


def nodule_volume() -> tuple[sitk.Image, sitk.Image]:
    """A small field of view of the right lung around a 14 mm nodule, and the nodule's mask.

    Small enough for the 3D segmenter's sliding windows to run in seconds on a CPU.
    """
    from XAIExplainLib.imaging.phantoms import Nodule, chest_phantom

    centre = (-85.0, 10.0, -20.0)
    phantom = chest_phantom(seed=3, nodules=[Nodule(center=centre, diameter=14.0)],
                            shape=(16, 48, 48), spacing=(2.5, 1.6, 1.6), center=centre)
    return phantom.image(), phantom.mask_image("nodule")


def same_geometry(output: Path, reference: sitk.Image) -> None:
    """Size, origin, spacing and direction as SimpleITK reads them back.

    The outputs carry the input's geometry exactly in memory; what a file can
    hold is the limit: NIfTI stores the orientation in single precision (a
    direction read back can differ by a few 1e-9 from the one written), NRRD
    stores spacing x direction as one vector per axis in decimal text (about
    1e-16 after reading splits it again).
    """
    image = sitk.ReadImage(str(output))
    assert image.GetSize() == reference.GetSize(), output.name
    tolerance = 1e-6 if output.name.endswith(".nii.gz") else 1e-12
    for name in ("GetOrigin", "GetSpacing", "GetDirection"):
        got, want = getattr(image, name)(), getattr(reference, name)()
        assert np.allclose(got, want, rtol=0, atol=tolerance), (output.name, name, got, want)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    plain = chest_volume()
    paths = {"plain": folder / "plain_ct.nrrd", "nrrd": folder / "oblique_ct.nrrd",
             "nifti": folder / "oblique_mr.nii.gz"}
    sitk.WriteImage(plain, str(paths["plain"]))
    oblique = oblique_copy(plain)
    sitk.WriteImage(oblique, str(paths["nrrd"]), useCompression=True)
    sitk.WriteImage(sitk.Cast(oblique, sitk.sitkFloat32), str(paths["nifti"]))
    nodule, mask = nodule_volume()
    paths["nodule"], paths["nodule_mask"] = folder / "nodule_ct.nrrd", folder / "nodule_mask.nrrd"
    sitk.WriteImage(nodule, str(paths["nodule"]))
    sitk.WriteImage(mask, str(paths["nodule_mask"]))
    return paths


# ---- the demo ------------------------------------------------------------------------------

def test_demo_runs_out_of_the_box_and_says_where_the_outputs_are(tmp_path):
    done = xaiexplain("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "xaiexplain-output" / "demo"
    pictures = sorted(folder.glob("*.png"))
    assert [p.name for p in pictures] == ["sample_abdomen_ct_gradcam.png",
                                          "sample_abdomen_ct_saliency.png"]
    assert str(Path("xaiexplain-output") / "demo" / pictures[0].name) in done.stdout
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"] == {"inputs": 1, "ok": 1, "failed": 0, "partial": 0, "skipped": 0}
    assert summary["inputs"][0]["prediction"]["predicted_class"] == "arterial"


# ---- explain: geometry, formats, DICOM, real CT --------------------------------------------

def test_explain_keeps_oblique_geometry_of_nrrd_and_nifti_exactly(volumes, tmp_path):
    before = {k: digest(p) for k, p in volumes.items()}
    out = tmp_path / "out"
    done = xaiexplain("explain", volumes["nrrd"], volumes["nifti"], "--model", CLASSIFIER,
                      "--method", "gradcam", "--method", "saliency", "--label-threshold", "otsu",
                      "--overlay", "--output-dir", out, "--jobs", "1")
    assert done.returncode == 0, done.stderr
    assert "Explained 2 of 2 input(s)" in done.stdout
    for key, stem, ending in (("nrrd", "oblique_ct", ".nrrd"), ("nifti", "oblique_mr", ".nii.gz")):
        reference = sitk.ReadImage(str(volumes[key]))
        for method in ("gradcam", "saliency"):
            heat = out / f"{stem}_{method}{ending}"
            same_geometry(heat, reference)
            values = sitk.GetArrayFromImage(sitk.ReadImage(str(heat)))
            # Maps are normalised on the model's grid; resampling may shave the very peak.
            assert values.dtype == np.float32 and values.min() >= 0 and 0.5 < values.max() <= 1
            label = out / f"{stem}_{method}_label{ending}"
            same_geometry(label, reference)
            assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label))))) == {0, 1}
            assert (out / f"{stem}_{method}.png").stat().st_size > 10_000
        scores = (out / f"{stem}_prediction.csv").read_text(encoding="utf-8").splitlines()
        assert scores[0].startswith("slice,") and len(scores) == 1 + reference.GetDepth()
    assert {k: digest(p) for k, p in volumes.items()} == before  # inputs never modified
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["device"] == "cpu" and summary["methods"] == ["gradcam", "saliency"]
    first = summary["inputs"][0]
    assert set(first["timings"]) >= {"gradcam", "saliency"}
    assert first["prediction"]["predicted_class"] in ("non_contrast", "arterial", "portal_venous",
                                                      "delayed")


def test_explain_a_dicom_series_folder(volumes, tmp_path):
    from Testing.cli.test_units import write_dicom_series

    volume = sitk.ReadImage(str(volumes["plain"]))
    write_dicom_series(volume, tmp_path / "series")
    series = sitk.ImageSeriesReader()
    series.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "series")))
    reference = series.Execute()
    out = tmp_path / "out"
    done = xaiexplain("explain", tmp_path / "series", "--model", CLASSIFIER, "--method",
                      "hirescam", "--output-dir", out, "--quiet", "--format", "nii.gz")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    same_geometry(out / "series_hirescam.nii.gz", reference)
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "series_hirescam.nii.gz")))
    assert heat.shape == sitk.GetArrayFromImage(reference).shape and 0.5 < heat.max() <= 1
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["inputs"][0]["input"] == str(tmp_path / "series")
    assert sum(summary["inputs"][0]["prediction"]["slices"].values()) == volume.GetDepth()


@pytest.mark.skipif(not (DATA / "lung1_image.nrrd").is_file(),
                    reason="real CT fixture ../shared/data/lung1_image.nrrd is not present")
def test_explain_real_lung_ct_and_evaluate_against_its_nodule_mask(tmp_path, capsys):
    image_path, mask_path = DATA / "lung1_image.nrrd", DATA / "lung1_label.nrrd"
    before = digest(image_path)
    out = tmp_path / "lung"
    done = xaiexplain("explain", image_path, "--model", NODULE_CLASSIFIER, "--method", "gradcam",
                      "--target", "nodule", "--overlay", "--output-dir", out)
    assert done.returncode == 0, done.stderr
    reference = sitk.ReadImage(str(image_path))
    same_geometry(out / "lung1_image_gradcam_nodule.nrrd", reference)
    assert (out / "lung1_image_gradcam_nodule.png").is_file()
    assert digest(image_path) == before
    status, stdout, _ = run_main(capsys, "evaluate", image_path, "--mask", mask_path, "--model",
                                 NODULE_CLASSIFIER, "--method", "gradcam", "--target", "nodule",
                                 "--metric", "pointing_game", "--metric", "energy_pointing_game",
                                 "--metric", "prediction_preserved", "--output-dir", out, "--quiet")
    assert status == 0
    rows = (out / "lung1_image_evaluation.csv").read_text(encoding="utf-8").splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    assert header == ["input", "method", "target", "pointing_game", "energy_pointing_game",
                      "pointing_game_slice_mean", "energy_pointing_game_slice_mean", "prediction_preserved"]
    energy = float(values[header.index("energy_pointing_game")])
    assert 0.0 <= energy <= 1.0
    # A per-slice model is scored slice by slice on its own grid; the CSV holds the mean.
    row = json.loads((out / "lung1_image_evaluation.json").read_text(encoding="utf-8"))["rows"][0]
    assert len(row["prediction_preserved_per_slice"]) == reference.GetDepth()
    assert row["prediction_preserved"] == pytest.approx(
        np.mean(row["prediction_preserved_per_slice"]))
    # The README's claim: Grad-CAM peaks inside the expert nodule on all three nodule slices.
    assert row["mask_slices"] == [32, 33, 34]
    assert row["pointing_game_mask_slices"] == [1.0, 1.0, 1.0] and row["pointing_game_slice_mean"] == 1.0


# ---- bad input and safety ------------------------------------------------------------------

def _bad_files(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    files = {"missing": folder / "absent.nrrd", "text": folder / "notes.nrrd",
             "empty": folder / "empty.nrrd", "constant": folder / "constant.nrrd",
             "nan": folder / "nan.nrrd", "flat": folder / "flat_2d.nrrd"}
    files["text"].write_text("these are not voxels\n")
    files["empty"].write_bytes(b"")
    sitk.WriteImage(sitk.Image(20, 20, 4, sitk.sitkInt16) + 7, str(files["constant"]))
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(good))).astype(np.float32)
    array[2, 10, 10] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(files["nan"]))
    sitk.WriteImage(sitk.ReadImage(str(good))[:, :, 5], str(files["flat"]))
    return files


@pytest.mark.parametrize("case, model, message", [
    ("missing", CLASSIFIER, "absent.nrrd: no such file"),
    ("text", CLASSIFIER, "notes.nrrd: is not an image SimpleITK can read"),
    ("empty", CLASSIFIER, "empty.nrrd: is an empty file"),
    ("constant", CLASSIFIER, "constant.nrrd: is constant"),
    ("nan", CLASSIFIER, "nan.nrrd: has 1 NaN or infinite voxel"),
    ("flat", SEGMENTER, f"flat_2d.nrrd: is a 2D image but '{SEGMENTER}' is a 3D model"),
])
def test_each_bad_input_is_one_line_with_exit_status_2(case, model, message, volumes, tmp_path,
                                                       capsys):
    files = _bad_files(tmp_path / "bad", volumes["plain"])
    status, stdout, stderr = run_main(capsys, "explain", files[case], "--model", model,
                                      "--method", "gradcam", "--output-dir", tmp_path / "out")
    assert status == 2
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"xaiexplain: error: {files[case].parent}{os.sep}{message}")
    assert "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "out").exists()  # nothing produced, nothing left behind


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model", "--method", "gradcam"],
     "--model no-such-model: no model named 'no-such-model'"),
    (["--model", CLASSIFIER, "--method", "gradcan"],
     "--method gradcan: unknown method 'gradcan'; available methods: ablationcam, attention_rollout, cam, crm"),
    (["--model", CLASSIFIER, "--method", "kwc"],
     f"--method kwc: does not apply to '{CLASSIFIER}': 'kwc' explains segmentation models, not classification models; methods for this model: ablationcam, cam, crm"),
    (["--model", CLASSIFIER, "--method", "gradcam", "--target", "liver"],
     f"--target liver: unknown class; classes of '{CLASSIFIER}': 0 non_contrast"),
    (["--model", CLASSIFIER, "--method", "rise", "--option", "composite=epsilon"],
     "--option composite=epsilon: 'composite' is not an option of the chosen method(s) (rise: masks, cells, "
     "keep_probability, seed, score_baseline; for every method: output_key, reshape, token_patch_size)"),
    (["--model", CLASSIFIER, "--method", "rise", "--option", "masks"],
     "--option masks: give NAME=VALUE, e.g. --option masks=2000"),
    (["--model", CLASSIFIER, "--method", "gradcam", "--mode", "volume"],
     f"--mode volume: model '{CLASSIFIER}' is a 2D model, so it runs in mode 'slices', not 'volume'"),
    # the registry's one duplicate policy (the CLI dropped a repeated method silently before)
    (["--model", CLASSIFIER, "--method", "gradcam", "--method", "gradcam"],
     "--method gradcam: method 'gradcam' is asked for twice; give each method once"),
    # engine.devices' rule: cuda:N is a device (argparse refused it before), checked against the GPUs here
    (["--model", CLASSIFIER, "--method", "gradcam", "--device", "cuda:7"], "--device cuda:7: device 'cuda:7'"),
    (["--model", CLASSIFIER, "--method", "gradcam", "--device", "tpu"],
     "--device tpu: device must be 'auto', 'cpu', 'cuda' (or 'gpu'), 'cuda:N' or a torch.device; got 'tpu'"),
])
def test_unknown_model_method_or_class_lists_the_valid_ones(args, message, volumes, tmp_path,
                                                            capsys):
    status, _, stderr = run_main(capsys, "explain", volumes["plain"], *args, "--output-dir",
                                 tmp_path)
    assert status == 2
    assert len(stderr.splitlines()) == 1 and stderr.startswith(f"xaiexplain: error: {message}")
    if "no-such-model" in message:
        assert CLASSIFIER in stderr and SEGMENTER in stderr


def test_mask_off_the_input_grid_and_unwritable_output_are_refused(volumes, tmp_path, capsys):
    image = sitk.ReadImage(str(volumes["plain"]))
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask[30, 30, 6] = 1
    mask.SetSpacing((4.5, 4.5, 7.0))
    sitk.WriteImage(mask, str(tmp_path / "mask.nrrd"))
    status, _, stderr = run_main(capsys, "explain", volumes["plain"], "--model", SEGMENTER,
                                 "--method", "gradcam", "--region", tmp_path / "mask.nrrd",
                                 "--output-dir", tmp_path / "out")
    assert status == 2
    assert stderr == (f"xaiexplain: error: {tmp_path / 'mask.nrrd'}: does not match the grid of "
                      f"{volumes['plain']}: spacing (4.5, 4.5, 7) vs (4.5, 4.5, 8)\n")
    status, _, stderr = run_main(capsys, "evaluate", volumes["plain"], "--mask",
                                 tmp_path / "mask.nrrd", "--model", SEGMENTER, "--method",
                                 "gradcam", "--output-dir", tmp_path / "out")
    assert status == 2 and "does not match the grid of" in stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status, _, stderr = run_main(capsys, "explain", volumes["plain"], "--model", CLASSIFIER,
                                 "--method", "gradcam", "--output-dir", blocker / "out")
    assert status == 2
    assert stderr == (f"xaiexplain: error: {blocker / 'out'}: cannot create the output folder "
                      "(Not a directory)\n")


def test_existing_outputs_are_kept_without_overwrite(volumes, tmp_path, capsys):
    """A re-run of the same command resumes; other settings or foreign files need --overwrite."""
    args = ["explain", volumes["plain"], "--model", CLASSIFIER, "--method", "gradcam",
            "--output-dir", tmp_path, "--quiet"]
    assert run_main(capsys, *args)[0] == 0
    heat, scores = tmp_path / "plain_ct_gradcam.nrrd", tmp_path / "plain_ct_prediction.csv"
    stamps = digest(heat), digest(scores), heat.stat().st_mtime_ns
    assert run_main(capsys, *args)[0] == 0  # complete with the same settings: skipped
    assert (digest(heat), digest(scores), heat.stat().st_mtime_ns) == stamps
    assert json.loads((tmp_path / "summary.json").read_text())["inputs"][0]["skipped"] is True
    status, _, stderr = run_main(capsys, *args, "--target", "arterial")
    manifest = tmp_path / "plain_ct.xaiexplain.json"
    assert status == 2
    assert stderr == (f"xaiexplain: error: {manifest}: the outputs of {volumes['plain']} were "
                      "made with other settings (option targets differs (was ['predicted'], now "
                      "['arterial'])); pass --overwrite to replace them or choose another "
                      "--output-dir\n")
    manifest.unlink()  # the files are now nobody's: never replaced without --overwrite
    status, _, stderr = run_main(capsys, *args)
    assert status == 2
    assert stderr == (f"xaiexplain: error: {scores}: already exists; pass --overwrite to replace "
                      "it or choose another --output-dir\n")
    assert (digest(heat), digest(scores)) == stamps[:2]
    assert run_main(capsys, *args, "--overwrite")[0] == 0


def test_debug_shows_the_traceback(volumes, tmp_path, capsys):
    status, _, stderr = run_main(capsys, "explain", volumes["plain"], "--model", CLASSIFIER,
                                 "--method", "gradcam", "--layer", "no.such.layer", "--debug",
                                 "--output-dir", tmp_path)
    assert status == 2
    assert "Traceback (most recent call last)" in stderr
    # The layer is checked against the network before any input is read.
    assert stderr.splitlines()[-1].startswith("xaiexplain: error: --layer no.such.layer: the "
                                              "model has no layer named 'no.such.layer'")


def test_batch_with_bad_inputs_completes_the_others_and_exits_1(volumes, tmp_path):
    files = _bad_files(tmp_path / "bad", volumes["plain"])
    listing = tmp_path / "cohort.txt"
    listing.write_text(f"# a cohort\n{volumes['plain']}\n{files['constant']}\n"
                       f"{files['missing']}\n{volumes['nrrd']}\n")
    out = tmp_path / "out"
    done = xaiexplain("explain", listing, "--model", CLASSIFIER, "--method", "gradcam",
                      "--output-dir", out, "--jobs", "2")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("xaiexplain: error:")]
    assert errors == [
        f"xaiexplain: error: {listing}:3: {files['constant']}: is constant (every voxel is 7); "
        "there is nothing to explain",
        f"xaiexplain: error: {listing}:4: {files['missing']}: no such file or folder (listed in "
        f"{listing})"]
    assert "[4/4] " in done.stderr and "Explained 2 of 4 input(s)" in done.stdout
    assert (out / "plain_ct_gradcam.nrrd").is_file() and (out / "oblique_ct_gradcam.nrrd").is_file()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [r["status"] for r in summary["inputs"]] == ["ok", "failed", "failed", "ok"]
    assert summary["counts"] == {"inputs": 4, "ok": 2, "failed": 2, "partial": 0, "skipped": 0}
    single = xaiexplain("explain", files["nan"], "--model", CLASSIFIER, "--method", "gradcam",
                        "--output-dir", tmp_path / "single")
    assert single.returncode == 2
    assert single.stderr.splitlines() == [
        f"xaiexplain: error: {files['nan']}: has 1 NaN or infinite voxel(s); fix or mask them "
        "before explaining"]


# ---- segmentation targets, evaluate, listings ----------------------------------------------

def test_segmenter_with_a_region_mask_overlay_and_evaluate(volumes, tmp_path, capsys):
    reference = sitk.ReadImage(str(volumes["nodule"]))
    status, _, stderr = run_main(capsys, "explain", volumes["nodule"], "--model", SEGMENTER,
                                 "--method", "gradcam", "--target", "nodule", "--region",
                                 volumes["nodule_mask"], "--overlay", "--label-threshold", "0.5",
                                 "--output-dir", tmp_path, "--quiet")
    assert status == 0, stderr
    for name in ("nodule_ct_gradcam_nodule.nrrd", "nodule_ct_gradcam_nodule_label.nrrd",
                 "nodule_ct_prediction.nrrd"):
        same_geometry(tmp_path / name, reference)
    assert (tmp_path / "nodule_ct_gradcam_nodule.png").is_file()
    record = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["inputs"][0]
    assert record["prediction"]["task"] == "segmentation"
    assert record["prediction"]["label_threshold"] == {"nodule_ct_gradcam_nodule": 0.5}
    status, stdout, stderr = run_main(capsys, "evaluate", volumes["nodule"], "--mask",
                                      volumes["nodule_mask"], "--model", SEGMENTER, "--method",
                                      "gradcam", "--target", "nodule", "--metric",
                                      "pointing_game", "--metric", "prediction_preserved",
                                      "--output-dir", tmp_path)
    assert status == 0, stderr
    assert stdout.splitlines()[0].split() == ["method", "target", "pointing_game",
                                              "prediction_preserved"]
    result = json.loads((tmp_path / "nodule_ct_evaluation.json").read_text(encoding="utf-8"))
    assert result["rows"][0]["pointing_game"] in (0.0, 1.0)
    assert 0.0 <= result["rows"][0]["prediction_preserved"] <= 1.0


def test_method_options_reach_their_method_only(volumes, tmp_path, capsys):
    """--option masks/seed set RISE's map (the API's map with the same options), and Grad-CAM,
    run in its own pass, is not handed RISE's options; a changed option is a different setting."""
    from XAIExplainLib.models import explain_image, load_model

    out = tmp_path / "out"
    status, _, stderr = run_main(capsys, "explain", volumes["plain"], "--model", CLASSIFIER, "--method", "rise",
                                 "--method", "gradcam", "--option", "masks=24", "--option", "seed=5",
                                 "--output-dir", out)
    assert status == 0, stderr
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "plain_ct_rise.nrrd")))
    image = sitk.ReadImage(str(volumes["plain"]))
    expected = explain_image(load_model(CLASSIFIER), image, methods=["rise"], device="cpu", masks=24, seed=5)
    np.testing.assert_allclose(written, sitk.GetArrayFromImage(expected.maps["rise"]), atol=1e-6)
    default = explain_image(load_model(CLASSIFIER), image, methods=["rise"], device="cpu", masks=24)
    assert np.abs(written - sitk.GetArrayFromImage(default.maps["rise"])).max() > 1e-3   # the seed was used
    assert (out / "plain_ct_gradcam.nrrd").is_file()
    record = json.loads((out / "plain_ct.xaiexplain.json").read_text(encoding="utf-8"))
    assert "masks" in json.dumps(record)
    status, _, stderr = run_main(capsys, "explain", volumes["plain"], "--model", CLASSIFIER, "--method", "rise",
                                 "--method", "gradcam", "--option", "masks=24", "--option", "seed=6",
                                 "--output-dir", out)
    assert status != 0 and "other settings" in stderr


def test_models_and_methods_are_listed(capsys):
    status, stdout, _ = run_main(capsys, "models")
    assert status == 0
    for name in (CLASSIFIER, NODULE_CLASSIFIER, SEGMENTER):
        assert name in stdout
    status, stdout, _ = run_main(capsys, "methods", "--task", "segmentation")
    assert status == 0 and "kwc" in stdout and "\ncam " not in stdout
    assert "--option masks, cells, keep_probability, seed" in run_main(capsys, "methods")[1]
    metrics = run_main(capsys, "methods", "--metrics")[1].splitlines()
    assert metrics[0].split() == ["METRIC", "NEEDS", "(besides", "the", "heatmap)", "COMPUTED"]
    assert metrics[1].split() == ["dice_sweep", "mask", "by", "default"]
