"""What discovery takes as inputs (issue 20, class 3, last two bullets).

Outputs of this tool (the files its manifests list) are never inputs: ``explain
scans/ -o scans/`` run twice resumes instead of explaining its own heatmaps, a
heatmap named on its own is refused with the reason, and an output folder
inside an input folder is named in a note.  A folder that holds a DICOM series
and loose image files explains the series and every loose file (an unreadable
one is reported, not dropped).
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.cli.cohort import explain_cohort
from XAIExplainLib.cli.discovery import discover

from .test_units import write_dicom_series

MODEL = "ct-phase-2d"


def _phantom(seed: int) -> sitk.Image:
    from XAIExplainLib.imaging.phantoms import chest_phantom

    return chest_phantom(seed=seed, shape=(3, 32, 32), spacing=(8.0, 10.0, 10.0)).image()


@pytest.fixture
def scans(tmp_path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for seed in range(2):
        sitk.WriteImage(_phantom(seed), str(folder / f"ct{seed}.nrrd"))
    return folder


def _cli(capsys, *args) -> tuple[int, str]:
    status = cli.main(["explain", *map(str, args), "--model", MODEL, "--method", "saliency",
                       "--quiet"])
    return status, capsys.readouterr().err


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "summary.json").read_text())["inputs"]


@pytest.mark.parametrize("way", ["cli", "api", "cluster"])
def test_a_folder_explained_into_itself_twice_resumes_and_never_explains_its_outputs(way, scans,
                                                                                     capsys):
    if way == "cluster":
        pytest.importorskip("distributed")

    def run() -> tuple[int, str]:
        if way == "api":
            err = io.StringIO()
            summary = explain_cohort(MODEL, [scans], scans, ["saliency"], stderr=err)
            return (0 if len(summary.succeeded) == len(summary.records) else 1), err.getvalue()
        extra = ("--cluster", "local:1") if way == "cluster" else ()
        return _cli(capsys, scans, "--output-dir", scans, *extra)

    status, err = run()
    assert status == 0, err
    first = {p.name: p.read_bytes() for p in scans.iterdir() if p.name.endswith(".nrrd")}
    status, err = run()
    assert status == 0, err
    assert [(r["stem"], r["skipped"]) for r in _rows(scans)] == [("ct0", True), ("ct1", True)]
    assert (f"xaiexplain: note: {scans}: skipped 2 file(s) written by xaiexplain (outputs its "
            "manifests list, or temporary files), which are never inputs\n") in err
    assert {p.name: p.read_bytes() for p in scans.iterdir() if p.name.endswith(".nrrd")} == first
    assert not any("saliency_saliency" in p.name for p in scans.iterdir())


def test_an_output_named_on_its_own_is_refused_with_the_reason(scans, tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli(capsys, scans / "ct0.nrrd", "--output-dir", out)[0] == 0
    heat = out / "ct0_saliency.nrrd"
    status, err = _cli(capsys, heat, "--output-dir", tmp_path / "again")
    assert status == 2
    assert err == (f"xaiexplain: error: {heat}: is an output of an earlier xaiexplain run (its "
                   f"manifest in {out} lists it); give the scan it was made from\n")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{scans / 'ct1.nrrd'}\n{heat}\n")
    status, err = _cli(capsys, listing, "--output-dir", tmp_path / "third")
    assert status == 1
    assert f"{listing}:2: {heat}: is an output of an earlier xaiexplain run" in err
    assert [r["status"] for r in _rows(tmp_path / "third")] == ["ok", "failed"]


def test_an_output_folder_inside_the_input_folder_is_noted_and_a_rerun_resumes(scans, capsys):
    out = scans / "xai"
    status, err = _cli(capsys, scans, "--output-dir", out)
    assert status == 0, err
    note = (f"xaiexplain: note: {scans}: the output folder {out.resolve()} inside it is not "
            "searched for inputs (subfolders never are)\n")
    assert note in err
    status, err = _cli(capsys, scans, "--output-dir", out)
    assert status == 0 and note in err
    assert [r["skipped"] for r in _rows(out)] == [True, True]


@pytest.mark.parametrize("way", ["cli", "api"])
def test_a_folder_with_a_dicom_series_and_loose_files_explains_or_reports_every_one(way, tmp_path,
                                                                                    capsys):
    folder = tmp_path / "patient"
    series = sitk.Cast(_phantom(3), sitk.sitkInt16)
    write_dicom_series(series, folder)
    sitk.WriteImage(_phantom(4), str(folder / "extra.nrrd"))
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    items = discover([str(folder)])
    assert [(i.stem, len(i.files)) for i in items] == [("patient", 3), ("broken", 0), ("extra", 0)]
    out = tmp_path / "out"
    if way == "api":
        summary = explain_cohort(MODEL, [folder], out, ["saliency"], stderr=io.StringIO())
        status = 1 if summary.failed else 0
    else:
        status, err = _cli(capsys, folder, "--output-dir", out)
        assert f"{folder / 'broken.nii.gz'}: " in err
    assert status == 1
    rows = {r["stem"]: r["status"] for r in _rows(out)}
    assert rows == {"patient": "ok", "extra": "ok", "broken": "failed"}
    alone = tmp_path / "alone"
    shutil.copy(folder / "extra.nrrd", tmp_path / "extra.nrrd")
    assert _cli(capsys, tmp_path / "extra.nrrd", "--output-dir", alone)[0] == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "extra_saliency.nrrd"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(alone / "extra_saliency.nrrd"))))
