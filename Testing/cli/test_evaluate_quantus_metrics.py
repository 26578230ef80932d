"""``xaiexplain evaluate --metric`` runs the Quantus robustness / localisation / complexity metrics (issue 24)."""
from __future__ import annotations

import json

import SimpleITK as sitk

from XAIExplainLib import cli

from Testing.cli.test_evaluate_metrics import NODULE_CLASSIFIER, _nodule_volume


def _write(tmp_path):
    image, mask = _nodule_volume()
    image_path, mask_path = tmp_path / "chest.nrrd", tmp_path / "nodule.nrrd"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(mask, str(mask_path))
    return image, ["evaluate", image_path, "--mask", mask_path, "--model", NODULE_CLASSIFIER, "--method",
                   "gradcam", "--target", "nodule", "--quiet"]


def test_cli_evaluate_runs_a_map_only_and_a_model_quantus_metric(tmp_path, capsys):
    image, args = _write(tmp_path)
    args += ["--output-dir", tmp_path / "out", "--metric", "sparseness", "--metric", "auc",
             "--metric", "avg_sensitivity"]
    status = cli.main([str(a) for a in args])
    assert status == 0, capsys.readouterr().err
    row = json.loads((tmp_path / "out" / "chest_evaluation.json").read_text(encoding="utf-8"))["rows"][0]
    # Map-only metrics: one value on the input grid (and per mask slice); the model metric per slice.
    assert 0.0 <= row["sparseness"] < 1.0 and 0.0 <= row["auc"] <= 1.0
    assert "sparseness_per_slice" not in row and "auc_slice_mean" in row
    assert len(row["avg_sensitivity_per_slice"]) == image.GetDepth() and row["avg_sensitivity"] >= 0.0


def test_cli_evaluate_says_focus_needs_a_mosaic(tmp_path, capsys):
    _, args = _write(tmp_path)
    args += ["--output-dir", tmp_path / "focus", "--metric", "focus"]
    status = cli.main([str(a) for a in args])
    assert status == 2
    assert "metric 'focus' needs tiles" in capsys.readouterr().err
    assert not (tmp_path / "focus").exists()  # nothing written


def test_cli_metric_option_reaches_the_metric(tmp_path, capsys):
    """With k = 1 the top-k intersection asks whether the map's highest voxel is in the mask: the
    pointing game's question (tolerance 0), so the two columns must agree; the default k = 1000 differs."""
    _, args = _write(tmp_path)
    chosen = ["--metric", "pointing_game", "--metric", "top_k_intersection"]
    status = cli.main([str(a) for a in args + ["--output-dir", tmp_path / "k1", *chosen,
                                               "--metric-option", "top_k_intersection.k=1"]])
    assert status == 0, capsys.readouterr().err
    row = json.loads((tmp_path / "k1" / "chest_evaluation.json").read_text(encoding="utf-8"))["rows"][0]
    assert row["top_k_intersection"] == row["pointing_game"]
    assert row["top_k_intersection_mask_slices"] == row["pointing_game_mask_slices"]
    status = cli.main([str(a) for a in args + ["--output-dir", tmp_path / "k1000", *chosen]])
    assert status == 0
    default = json.loads((tmp_path / "k1000" / "chest_evaluation.json").read_text(encoding="utf-8"))["rows"][0]
    assert default["top_k_intersection_mask_slices"] != row["top_k_intersection_mask_slices"]


def test_cli_metric_option_errors_name_the_option_and_write_nothing(tmp_path, capsys):
    _, args = _write(tmp_path)
    cases = {
        "unchosen": (["--metric", "auc", "--metric-option", "irof.patch_size=4"], "'irof' is not a chosen metric"),
        "shape": (["--metric", "auc", "--metric-option", "auc=4"], "give METRIC.NAME=VALUE"),
        "unknown option": (["--metric", "top_k_intersection", "--metric-option", "top_k_intersection.bogus=1"],
                           "bogus"),
    }
    for name, (extra, message) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        status = cli.main([str(a) for a in args + ["--output-dir", out, *extra]])
        err = capsys.readouterr().err
        assert status == 2 and "--metric-option" in err and message in err, (name, err)
        assert not out.exists(), name
