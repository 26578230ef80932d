"""``xaiexplain evaluate --metric`` with the peer libraries' metrics: map-only ones on the input grid, model ones per slice."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.evaluation import MAP_ONLY_METRICS, METRICS

NODULE_CLASSIFIER = "lung-nodule-2d"


def _nodule_volume():
    """A small field of view of the right lung around a 14 mm nodule, and the nodule's mask."""
    from XAIExplainLib.imaging.phantoms import Nodule, chest_phantom

    centre = (-85.0, 10.0, -20.0)
    phantom = chest_phantom(seed=3, nodules=[Nodule(center=centre, diameter=14.0)],
                            shape=(6, 48, 48), spacing=(2.5, 1.6, 1.6), center=centre)
    return phantom.image(), phantom.mask_image("nodule")


def test_cli_evaluate_accepts_the_new_map_and_model_metrics(tmp_path, capsys):
    image, mask = _nodule_volume()
    image_path, mask_path = tmp_path / "chest.nrrd", tmp_path / "nodule.nrrd"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(mask, str(mask_path))
    metrics = ["relevance_mass", "relevance_rank", "road_morf", "average_drop", "increase_in_confidence",
               "random_logit", "infidelity"]
    args = ["evaluate", image_path, "--mask", mask_path, "--model", NODULE_CLASSIFIER, "--method", "gradcam",
            "--target", "nodule", "--output-dir", tmp_path / "out", "--quiet"]
    for name in metrics:
        args += ["--metric", name]
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    row = json.loads((tmp_path / "out" / "chest_evaluation.json").read_text(encoding="utf-8"))["rows"][0]
    for key in ("relevance_mass", "relevance_rank", "road_morf", "road_morf_accuracy", "average_drop",
                "increase_in_confidence", "random_logit", "infidelity"):
        assert key in row, key
    # Map-only metrics run on the input grid against the mask (one value), model metrics per slice.
    assert not isinstance(row["relevance_mass"], list) and "relevance_mass_per_slice" not in row
    assert len(row["road_morf_per_slice"]) == image.GetDepth()
    assert 0.0 <= row["relevance_mass"] <= 1.0 and 0.0 <= row["relevance_rank"] <= 1.0
    assert 0.0 <= row["road_morf"] <= 1.0 and 0.0 <= row["average_drop"] <= 1.0
    assert -1.0 <= row["random_logit"] <= 1.0 and row["infidelity"] >= 0.0
    assert row["average_drop"] == pytest.approx(np.mean(row["average_drop_per_slice"]))
    header = (tmp_path / "out" / "chest_evaluation.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert sorted(header[3:]) == sorted(["relevance_mass", "relevance_rank", "road_morf", "road_morf_accuracy",
                                         "average_drop", "increase_in_confidence", "random_logit", "infidelity",
                                         # a per-slice model: map-vs-mask metrics on the slices with the mask
                                         "relevance_mass_slice_mean", "relevance_rank_slice_mean"])


def test_cli_lists_every_metric_and_the_map_only_split():
    from XAIExplainLib.cli import evaluate_run

    assert evaluate_run._check_metrics(None, METRICS) == list(MAP_ONLY_METRICS)  # the default: evaluation's list
    for name in ("road_morf", "road_lerf", "average_drop", "increase_in_confidence", "faithfulness_correlation",
                 "max_sensitivity", "infidelity", "relevance_mass", "relevance_rank", "random_logit",
                 "parameter_randomization"):
        assert name in METRICS
    for name in ("road_morf", "max_sensitivity", "random_logit", "parameter_randomization"):
        assert name not in MAP_ONLY_METRICS
