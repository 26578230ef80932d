"""The phantom-trained nodule models on a real chest CT (lung1, nodule on slices z = 32..34).

These tests pin what the models do on real data, including where they fall
short, so that a change in behaviour is noticed; the numbers are written to
Testing/artifacts/real_ct_report.json.  They skip when ../shared/data is absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from XAIExplainLib.models import validate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = pytest.mark.skipif(not (DATA / "lung1_image.nrrd").is_file()
                                or not (DATA / "lung1_label.nrrd").is_file(),
                                reason="real CT fixtures ../shared/data/lung1_image.nrrd and "
                                       "lung1_label.nrrd are not present")


@pytest.fixture(scope="module")
def report():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = validate.real_ct_report(DATA)
    finally:
        torch.set_num_threads(previous)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "real_ct_report.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def test_report_covers_the_nodule_slices(report):
    assert report["nodule_slices"] == [32, 33, 34]
    two_d = report["lung-nodule-2d"]
    assert len(two_d["score_nodule_slices"]) == 3 and two_d["other_slices"] == 45
    assert all(0.0 <= s <= 1.0 for s in two_d["score_nodule_slices"].values())
    layer = [k for k in two_d if k.startswith("gradcam_")][0]
    assert len(two_d[layer]["pointing_game_per_slice"]) == 3
    seg = report["lung-nodule-seg-3d"]
    assert seg["true_voxels"] == 837 and 0.0 <= seg["dice_crop"] <= 1.0
