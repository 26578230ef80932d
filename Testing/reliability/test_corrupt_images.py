"""Silent corruption (issue 12 items 4, 5): a file cut short or an incomplete DICOM series is refused
with a message that says so, by the reader every caller uses, never explained on zero-filled voxels."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.imaging.reading import ImageReadError, read_image
from XAIExplainLib.models import explain_image

from Testing.cli.test_units import write_dicom_series
from .hostile import model_folder, truncated_copy, volume

FORMATS = ["nii", "nii.gz", "nrrd", "mha"]


@pytest.mark.parametrize("ext", FORMATS)
def test_a_complete_file_reads_back_exactly(ext, tmp_path):
    image = volume()
    sitk.WriteImage(image, str(tmp_path / f"v.{ext}"), ext.endswith("gz"))
    back = read_image(tmp_path / f"v.{ext}")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("ext", FORMATS)
def test_a_truncated_file_is_refused_by_the_reader_and_explain_image(ext, tmp_path):
    path = truncated_copy(volume(), tmp_path / f"cut.{ext}")
    declared = 6 * 16 * 16 * 4
    with pytest.raises(ImageReadError, match=rf"cut\.{ext.replace('.', '[.]')}: is truncated: the header "
                                             rf"declares {declared} bytes of voxel data but the"):
        read_image(path)
    with pytest.raises(ValueError, match="is truncated"):
        explain_image(model_folder(tmp_path / "model"), str(path), methods="gradcam", device="cpu")


@pytest.mark.parametrize("ext", ["nii", "nii.gz"])
def test_cli_refuses_a_truncated_nifti_with_exit_2_and_writes_nothing(ext, tmp_path, capsys):
    path = truncated_copy(volume(), tmp_path / f"cut.{ext}")
    out = tmp_path / "out"
    status = cli.main(["explain", str(path), "--model", str(model_folder(tmp_path / "model")),
                       "--method", "gradcam", "--output-dir", str(out), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "is truncated" in err and "Traceback" not in err
    assert not any(p.name.startswith("cut") for p in out.rglob("*")) if out.exists() else True


def test_a_detached_mhd_without_its_data_file_names_the_missing_file(tmp_path):
    sitk.WriteImage(volume(), str(tmp_path / "v.mhd"))
    (tmp_path / "v.raw").unlink()
    with pytest.raises(ImageReadError, match=r"v\.mhd: its detached data file v\.raw is missing"):
        read_image(tmp_path / "v.mhd")


def _series(tmp_path: Path, spacing: float = 20.0) -> list[Path]:
    write_dicom_series(volume(shape=(6, 8, 8), spacing=(1.0, 1.0, spacing), dtype=np.int16), tmp_path / "s")
    return sorted((tmp_path / "s").glob("*.dcm"))


def test_a_complete_series_reads_on_its_own_grid(tmp_path):
    files = _series(tmp_path)
    image = read_image(tmp_path / "s", [str(f) for f in files])
    assert image.GetSize() == (8, 8, 6) and image.GetSpacing()[2] == pytest.approx(20.0)


def test_a_series_with_a_missing_slice_is_refused_not_placed_on_a_22mm_grid(tmp_path):
    files = _series(tmp_path)
    files[3].unlink()
    remaining = [str(f) for f in files if f.exists()]
    with pytest.raises(ImageReadError, match=r"slice positions are not evenly spaced: slice002\.dcm to "
                                             r"slice004\.dcm is 40 mm where the other slices are 20 mm apart"):
        read_image(tmp_path / "s", remaining)


def test_a_series_with_a_duplicate_slice_is_refused(tmp_path):
    files = _series(tmp_path)
    shutil.copy(files[2], tmp_path / "s" / "slice002_copy.dcm")
    names = sorted(str(f) for f in (tmp_path / "s").glob("*.dcm"))
    with pytest.raises(ImageReadError, match=r"slices slice002(_copy)?\.dcm and slice002(_copy)?\.dcm are at the "
                                             r"same position .* the series holds duplicates"):
        read_image(tmp_path / "s", names)


def test_a_series_with_an_unreadable_slice_names_it(tmp_path):
    files = _series(tmp_path)
    files[4].write_bytes(b"\0" * 200)
    with pytest.raises(ImageReadError, match=r"slice file slice004\.dcm cannot be read .* the series is "
                                             r"incomplete"):
        read_image(tmp_path / "s", [str(f) for f in files])


def test_cli_refuses_a_series_folder_with_a_missing_slice(tmp_path, capsys):
    files = _series(tmp_path)
    files[3].unlink()
    status = cli.main(["explain", str(tmp_path / "s"), "--model", str(model_folder(tmp_path / "model")),
                       "--method", "gradcam", "--output-dir", str(tmp_path / "out"), "--quiet",
                       "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and "not evenly spaced" in err, err
