"""``xaiexplain evaluate --metric`` runs the Quantus faithfulness metrics (issue 24) on a per-slice model."""
from __future__ import annotations

import json

import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.evaluation import MAP_ONLY_METRICS, METRICS, ON_REQUEST

from Testing.cli.test_evaluate_metrics import NODULE_CLASSIFIER, _nodule_volume

QUANTUS_FAITHFULNESS = ("irof", "pixel_flipping", "region_perturbation", "monotonicity", "monotonicity_correlation",
                        "faithfulness_estimate", "selectivity", "sensitivity_n", "sufficiency", "emprt", "smprt")


def test_the_metrics_are_registered_model_metrics_named_on_request():
    for name in QUANTUS_FAITHFULNESS:
        assert name in METRICS and name in ON_REQUEST, name
        assert name not in MAP_ONLY_METRICS, name  # they re-run the model: not in the heatmap-only table
    assert set(METRICS["emprt"]) == set(METRICS["smprt"]) == {"model", "method"}


def test_cli_evaluate_runs_sufficiency_per_slice(tmp_path, capsys):
    """Sufficiency runs the model once; the removal metrics cost hundreds of passes per slice at 160 x 160."""
    image, mask = _nodule_volume()
    image_path, mask_path = tmp_path / "chest.nrrd", tmp_path / "nodule.nrrd"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(mask, str(mask_path))
    args = ["evaluate", image_path, "--mask", mask_path, "--model", NODULE_CLASSIFIER, "--method", "gradcam",
            "--target", "nodule", "--output-dir", tmp_path / "out", "--quiet"]
    args += ["--metric", "sufficiency", "--metric", "relevance_mass"]
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    row = json.loads((tmp_path / "out" / "chest_evaluation.json").read_text(encoding="utf-8"))["rows"][0]
    slices = image.GetDepth()
    per_slice = row["sufficiency_per_slice"]  # the slices are the batch whose maps cover each other
    assert len(per_slice) == slices and all(0.0 <= v <= 1.0 for v in per_slice)
    assert row["sufficiency"] == pytest.approx(sum(per_slice) / slices)
    header = (tmp_path / "out" / "chest_evaluation.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "sufficiency" in header and "relevance_mass" in header
