"""Input files that are not what they claim get one line naming them (issue 20, class 7, input side).

A DICOM series with one slice of another size names that slice (ITK named
only itself, with its source location); an NRRD header whose detached data
file is ``/dev/zero`` or a FIFO says so (it was reported "missing"), and an
image that is itself a FIFO is never opened.  Through the reader, the command
line in process and a one-worker Dask cluster (the worker reads the input).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.imaging.reading import ImageReadError, read_image

from Testing.cli.test_units import write_dicom_series

from .hostile import volume

MODEL = "ct-phase-2d"


def _explain(capsys, source: Path, out: Path, way: str) -> tuple[int, str]:
    extra = []
    if way == "cluster":
        pytest.importorskip("distributed")
        extra = ["--cluster", "local:1"]
    status = cli.main(["explain", str(source), "--model", MODEL, "--method", "saliency",
                       "--output-dir", str(out), "--quiet", *extra])
    err = capsys.readouterr().err
    if way == "cluster":  # the cluster's own line (its dashboard) comes first
        banner, err = err.split("\n", 1)
        assert banner.startswith("xaiexplain: Dask cluster of 1 worker(s); ")
    return status, err


def _odd_series(tmp_path: Path, odd: int) -> Path:
    """A series of six 32 x 32 slices whose slice ``odd`` is a 40 x 40 slice at the same place."""
    folder, other = tmp_path / "series", tmp_path / "other"
    write_dicom_series(volume(shape=(6, 32, 32), spacing=(1.0, 1.0, 5.0), dtype=np.int16), folder)
    write_dicom_series(volume(shape=(6, 40, 40), spacing=(1.0, 1.0, 5.0), dtype=np.int16, seed=1), other)
    shutil.copy(other / f"slice{odd:03d}.dcm", folder / f"slice{odd:03d}.dcm")
    return folder


@pytest.mark.parametrize("odd", [0, 2, 5])
def test_a_slice_of_another_size_is_named_by_the_reader(odd, tmp_path):
    folder = _odd_series(tmp_path, odd)
    files = sorted(str(p) for p in folder.glob("*.dcm"))
    with pytest.raises(ImageReadError) as caught:
        read_image(folder, files)
    assert str(caught.value) == (f"{folder}: slice file slice{odd:03d}.dcm is 40 x 40 pixels where the "
                                 "other slices are 32 x 32; it belongs to another image: remove it from "
                                 "the series' folder")


@pytest.mark.parametrize("way", ["cli", "cluster"])
def test_a_slice_of_another_size_is_one_line_from_the_cli(way, tmp_path, capsys):
    folder = _odd_series(tmp_path, 2)
    status, err = _explain(capsys, folder, tmp_path / "out", way)
    assert status == 2
    assert err == (f"xaiexplain: error: {folder}: slice file slice002.dcm is 40 x 40 pixels where the "
                   "other slices are 32 x 32; it belongs to another image: remove it from the series' "
                   "folder\n")


def _detached(tmp_path: Path, data_file: str) -> Path:
    header = tmp_path / "v.nhdr"
    header.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 16 16 4\nencoding: raw\n"
                      f"endian: little\nspacings: 1 1 5\ndata file: {data_file}\n\n")
    return header


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
@pytest.mark.parametrize("way", ["reader", "cli", "cluster"])
def test_a_detached_data_file_that_is_a_device_or_fifo_is_reported_as_such(kind, way, tmp_path,
                                                                          capsys):
    if kind == "dev-zero":
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero here")
        data, what = Path("/dev/zero"), "a character device"
    else:
        data, what = tmp_path / "v.raw", "a FIFO (named pipe)"
        os.mkfifo(data)
    header = _detached(tmp_path, str(data) if kind == "dev-zero" else data.name)
    message = (f"{header}: its detached data file {data} is {what}, not a regular file; point the "
               "header at the file holding its voxels")
    if way == "reader":
        with pytest.raises(ImageReadError) as caught:
            read_image(header)
        assert str(caught.value) == message
    else:
        assert _explain(capsys, header, tmp_path / "out", way) == (2, f"xaiexplain: error: {message}\n")


def test_a_detached_data_file_that_is_missing_is_still_reported_missing(tmp_path):
    header = _detached(tmp_path, "gone.raw")
    with pytest.raises(ImageReadError, match=r"its detached data file gone\.raw is missing"):
        read_image(header)


def test_a_complete_detached_nrrd_still_reads(tmp_path):
    header = _detached(tmp_path, "v.raw")
    values = (np.arange(4 * 16 * 16) % 300).astype("<i2")
    (tmp_path / "v.raw").write_bytes(values.tobytes())
    image = read_image(header)
    assert np.array_equal(sitk.GetArrayFromImage(image).ravel(), values)


def test_an_image_that_is_a_fifo_is_refused_without_opening_it(tmp_path, capsys):
    fifo = tmp_path / "scan.nrrd"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError) as caught:
        read_image(fifo)
    assert str(caught.value) == f"{fifo}: is a FIFO (named pipe), not a regular file; give an image file"
