"""``xaiexplain explain`` with a 4-channel nnU-Net model: a folder in nnU-Net's naming is grouped by case, one input
is comma-joined files (on the command line or one line of a list file), and the summary names every channel file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from Testing.support.multichannel import write_brats_case, write_brats_folder
from XAIExplainLib import cli
from XAIExplainLib.cli.discovery import discover

pytest.importorskip("nnunetv2")


@pytest.fixture(scope="module")
def brats_folder(tmp_path_factory):
    return write_brats_folder(tmp_path_factory.mktemp("brats") / "Dataset137_BraTSlike")


def test_a_folder_in_nnunets_naming_is_grouped_by_case(brats_folder, tmp_path, capsys, two_torch_threads):
    from XAIExplainLib.models import load_model, predict_image

    cases = tmp_path / "cases"
    cases.mkdir()
    first = write_brats_case(cases, "BraTS_001", seed=1)
    write_brats_case(cases, "BraTS_002", seed=2)
    write_brats_case(cases, "BraTS_003", seed=3)
    (cases / "BraTS_003_0002.nii.gz").unlink()
    out = tmp_path / "out"
    status = cli.main(["explain", str(cases), "--model", str(brats_folder), "--method", "gradcam",
                       "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{cases} (case BraTS_003): case BraTS_003 does not hold one file per input channel (missing " \
           "BraTS_003_0002 (T2))" in err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = {row["stem"]: row for row in summary["inputs"]}
    assert rows["BraTS_001"]["status"] == rows["BraTS_002"]["status"] == "ok"
    assert rows["BraTS_001"]["input"] == ",".join(first)  # every channel file, in channel order
    assert rows["BraTS_003"]["status"] == "failed" and len(rows) == 3  # one row per case, none per file
    heatmap = sitk.ReadImage(str(out / "BraTS_001_gradcam.nii.gz"))
    reference = sitk.ReadImage(first[0])
    assert heatmap.GetSize() == reference.GetSize() and np.allclose(heatmap.GetOrigin(), reference.GetOrigin())
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "BraTS_001_prediction.nii.gz")))
    expected = sitk.GetArrayFromImage(predict_image(load_model(brats_folder), first, device="cpu"))
    np.testing.assert_array_equal(labels, expected)


def test_comma_joined_inputs_on_the_command_line_and_in_a_list(tmp_path):
    channels = ("T1", "T1ce", "T2", "FLAIR")
    folder = tmp_path / "patient7"
    folder.mkdir()
    files = write_brats_case(folder, "p7")
    listing = tmp_path / "cohort.txt"
    relative = ",".join(f"patient7/p7_{i:04d}.nii.gz" for i in range(4))
    listing.write_text(f"{relative}\npatient7/p7_0000.nii.gz,patient7/p7_0001.nii.gz\n")
    items = discover([",".join(files), str(listing)], channels=channels)
    # the same four files named twice are one input; the short line fails naming the count
    assert len(items) == 2
    joined, short = items
    assert joined.ok and [str(p) for p in joined.channel_paths] == files and joined.stem == "p7"
    assert not short.ok and "names 2 file(s)" in str(short.error) and "T1, T1ce, T2, FLAIR" in str(short.error)
    missing = discover([f"{files[0]},{files[1]},{folder / 'nope.nii.gz'},{files[3]}"], channels=channels)[0]
    assert not missing.ok and f"the T2 file {folder / 'nope.nii.gz'} does not exist" in str(missing.error)
    one_channel = discover([f"{files[0]},{files[1]}"], channels=("CT",))[0]
    assert not one_channel.ok and "this model takes one image" in str(one_channel.error)
    # a one-channel model sees each file of an nnU-Net-named folder as an input of its own
    assert len(discover([str(folder)], channels=("CT",))) == 4
