"""Obscure messages (issue 12 item 17): each of these used to surface as a raw torch/ITK error or a
wrong text; each now says what was wrong and what to do, and leaves nothing behind."""
from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from XAIExplainLib import cli
from XAIExplainLib.cli.discovery import discover
from XAIExplainLib.engine import explain_many, explain_volume, predict_volume
from XAIExplainLib.models import WeightsError, load_model

from Testing.support.models import classifier
from .hostile import model_folder, volume


def test_a_uint16_volume_is_explained_like_its_float32_copy():
    model = classifier(dims=2)
    array = (np.random.default_rng(0).random((3, 16, 16)) * 4000).astype(np.uint16)
    got = explain_volume(model, array, "gradcam")
    want = explain_volume(model, array.astype(np.float32), "gradcam")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predict_volume(model, torch.from_numpy(array)),
                               predict_volume(model, array.astype(np.float32)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"progress": 5}, TypeError, r"progress must be None or a function progress\(done, total\), got 5"),
    ({"axis": 1.0}, ValueError, r"axis must be 0, 1 or 2 \(numpy axis of the \(z, y, x\) volume\), got 1\.0"),
    ({"memory_budget_mb": "100"}, TypeError, r"memory_budget_mb must be a positive number of megabytes "
                                             r"\(e\.g\. 2000\), got '100'"),
    ({"memory_budget_mb": -1}, TypeError, r"memory_budget_mb must be a positive number of megabytes"),
])
def test_arguments_of_the_wrong_type_get_a_clear_error(kwargs, error, message):
    model = classifier(dims=2)
    array = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    with pytest.raises(error, match=message):
        explain_volume(model, array, "gradcam", **kwargs)
    if "memory_budget_mb" not in kwargs:
        with pytest.raises(error, match=message):
            predict_volume(model, array, **kwargs)


def test_a_model_on_the_meta_device_is_named():
    with torch.device("meta"):
        model = classifier(dims=2)
    with pytest.raises(ValueError, match=r"model TinyClassifier has tensors on the meta device \(e\.g\. "
                                         r"'features\.0\.weight'\): it was built without weights"):
        explain_many(model, torch.randn(1, 1, 16, 16), ["gradcam"])


class InPlaceInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = classifier(dims=2)

    def forward(self, x):
        x.mul_(2.0)
        return self.inner(x)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_a_model_writing_into_its_input_is_named(method):
    x = torch.randn(1, 1, 16, 16)
    before = x.clone()
    with pytest.raises(ValueError, match=r"model InPlaceInput writes into its input in place"):
        explain_many(InPlaceInput(), x, [method])
    torch.testing.assert_close(x, before)


def test_a_device_as_weights_is_not_reported_as_missing(tmp_path):
    folder = model_folder(tmp_path / "m", state=False)
    os.symlink(os.devnull, folder / "weights.pt")
    with pytest.raises(WeightsError, match=r"weights\.pt is not a regular file \(a folder, device or pipe\)"):
        load_model(folder)


def test_a_bom_in_a_list_file_is_not_part_of_the_first_path(tmp_path):
    sitk.WriteImage(volume(), str(tmp_path / "a.nrrd"))
    listing = tmp_path / "inputs.txt"
    listing.write_bytes("\ufeffa.nrrd\n".encode("utf-8"))
    items = discover([str(listing)])
    assert [item.error for item in items] == [None]
    assert items[0].path == tmp_path / "a.nrrd"


def test_a_missing_detached_data_file_is_named_by_the_cli(tmp_path, capsys):
    sitk.WriteImage(volume(), str(tmp_path / "v.mhd"))
    (tmp_path / "v.raw").unlink()
    status = cli.main(["explain", str(tmp_path / "v.mhd"), "--model", str(model_folder(tmp_path / "m")),
                       "--method", "gradcam", "--output-dir", str(tmp_path / "out"), "--quiet",
                       "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "its detached data file v.raw is missing" in err and "does not exist" not in err
    assert ".cxx" not in err and "ITK ERROR" not in err


def test_evaluate_refuses_a_nan_mask_and_leaves_no_output_folder(tmp_path, capsys):
    image = volume()
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    mask = np.zeros((6, 16, 16), np.float32)
    mask[2:4, 4:8, 4:8] = 1
    mask[0, 0, 0] = np.nan
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(image)
    sitk.WriteImage(mask_image, str(tmp_path / "mask.nrrd"))
    out = tmp_path / "out"
    status = cli.main(["evaluate", str(tmp_path / "v.nrrd"), "--mask", str(tmp_path / "mask.nrrd"),
                       "--model", str(model_folder(tmp_path / "m")), "--method", "gradcam",
                       "--output-dir", str(out), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "mask.nrrd: has 1 NaN or infinite voxel(s)" in err
    assert not out.exists()


@pytest.mark.parametrize("failure", [
    MemoryError(),
    RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /build/ITK/Modules/IO/ImageBase/include/"
                 "itkImageFileReader.hxx:431:\nITK ERROR: ImageFileReader(0x55d0c0ffee00): std::bad_alloc"),
])
def test_an_allocation_failure_while_reading_says_the_image_does_not_fit(failure, tmp_path, monkeypatch):
    from XAIExplainLib.imaging.reading import ImageReadError, read_image

    sitk.WriteImage(volume(), str(tmp_path / "v.nrrd"))

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(sitk, "ReadImage", fail)
    with pytest.raises(ImageReadError) as caught:
        read_image(tmp_path / "v.nrrd")
    assert str(caught.value) == f"{tmp_path / 'v.nrrd'}: does not fit in memory; crop or downsample it first"


def test_other_itk_errors_lose_their_source_location(tmp_path, monkeypatch):
    from XAIExplainLib.imaging.reading import ImageReadError, read_image

    sitk.WriteImage(volume(), str(tmp_path / "v.nrrd"))

    def fail(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /build/ITK/Modules/IO/NRRD/src/"
                           "itkNrrdImageIO.cxx:935:\nITK ERROR: NrrdImageIO(0x555925193ec0): Read: Error reading "
                           "v.nrrd:\n[nrrd] nrrdLoad: trouble")

    monkeypatch.setattr(sitk, "ReadImage", fail)
    with pytest.raises(ImageReadError) as caught:
        read_image(tmp_path / "v.nrrd")
    assert caught.value.problem == "cannot be read as an image (Read: Error reading v.nrrd)"
