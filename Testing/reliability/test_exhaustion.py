"""Memory and time exhaustion (issue 12 items 13-16): sizes are checked against the file, the memory
and the budget before anything large is allocated, read or resampled, with the numbers in the message."""
from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from XAIExplainLib import cli
from XAIExplainLib.imaging import reading
from XAIExplainLib.models import WeightsError, explain_image, load_model
from XAIExplainLib.models import preprocessing

from .hostile import model_folder, network, volume


def _forbid(monkeypatch, owner, name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} must not run for this input")
    monkeypatch.setattr(owner, name, refuse)


def _huge_header_nifti(path):
    """A valid NIfTI header claiming 1600^3 int16 voxels over 1 KB of file."""
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.int16)), str(path))
    data = bytearray(path.read_bytes())
    data[40:56] = struct.pack("<8h", 3, 1600, 1600, 1600, 1, 1, 1, 1)
    path.write_bytes(bytes(data[:1024]))
    return path


def test_a_header_claiming_8_gb_over_1_kb_is_refused_before_any_voxel_is_read(tmp_path, monkeypatch):
    path = _huge_header_nifti(tmp_path / "huge.nii")
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 2**40)  # the file check, not the memory one
    _forbid(monkeypatch, sitk, "ReadImage")
    with pytest.raises(reading.ImageReadError,
                       match=r"huge\.nii: is truncated: the header declares 8192000000 bytes of voxel data but "
                             r"the file holds 128"):
        reading.read_image(path)


def test_a_declared_size_beyond_free_memory_is_refused_with_the_numbers(tmp_path, monkeypatch):
    sitk.WriteImage(volume(shape=(16, 32, 32)), str(tmp_path / "v.nrrd"))
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 16 * 1024)
    _forbid(monkeypatch, sitk, "ReadImage")
    with pytest.raises(reading.ImageReadError, match=r"v\.nrrd: its header declares 64\.0 KB of voxel data, "
                                                     r"more than the 16\.0 KB of memory available"):
        reading.read_image(tmp_path / "v.nrrd")


def test_cli_with_jobs_refuses_the_lying_header_once_per_input_with_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 2**40)
    paths = [_huge_header_nifti(tmp_path / f"huge{i}.nii") for i in range(3)]
    status = cli.main(["explain", *map(str, paths), "--model", str(model_folder(tmp_path / "model")),
                       "--method", "gradcam", "--output-dir", str(tmp_path / "out"), "--quiet",
                       "--jobs", "3", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("declares 8192000000 bytes") == 3


def test_a_tiny_image_at_a_huge_spacing_is_refused_before_resampling(tmp_path, monkeypatch):
    model = load_model(model_folder(tmp_path / "m3", spatial_dims=3))
    image = volume(shape=(16, 16, 16), spacing=(10.0, 10.0, 10.0))
    _forbid(monkeypatch, preprocessing, "resample")
    with pytest.raises(ValueError, match=r"would resample this 16 x 16 x 16 image \(spacing 10 x 10 x 10 mm\) to "
                                         r"a 128 x 128 x 128 grid at 1\.25 x 1\.25 x 1\.25 mm: 2097152 voxels, at "
                                         r"least 32\.0 MB for the run, more than the memory budget of 20 MB"):
        explain_image(model, image, methods="saliency", device="cpu", memory_budget_mb=20)


def test_the_grid_check_uses_free_memory_without_a_budget(tmp_path, monkeypatch):
    model = load_model(model_folder(tmp_path / "m3", spatial_dims=3))
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 2**20)
    _forbid(monkeypatch, preprocessing, "resample")
    with pytest.raises(ValueError, match=r"128 x 128 x 128 grid .* more than the memory available \(1\.0 MB\)"):
        explain_image(model, volume(shape=(16, 16, 16), spacing=(10.0, 10.0, 10.0)), methods="saliency",
                      device="cpu")


def _deflated(state: dict) -> bytes:
    """``torch.save(state)`` re-packed with every member deflate-compressed."""
    stored = io.BytesIO()
    torch.save(state, stored)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(stored.getvalue())) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def test_a_deflated_pt_expanding_1000x_is_refused_before_torch_load(tmp_path, monkeypatch):
    state = network().state_dict()
    state["features.stem.0.weight"] = torch.zeros(24 * 2**20 // 4)  # 24 MB of zeros, ~25 KB deflated
    folder = model_folder(tmp_path / "bomb", state=False)
    (folder / "weights.pt").write_bytes(_deflated(state))
    assert (folder / "weights.pt").stat().st_size < 100_000
    _forbid(monkeypatch, torch, "load")
    with pytest.raises(WeightsError, match=r"weights\.pt: the archive declares 24\.\d MB of uncompressed data in "
                                           r"\d+\.\d KB of file, but the SliceClassifier architecture needs"):
        load_model(folder)


def test_a_deflated_pt_of_the_right_size_still_loads(tmp_path):
    folder = model_folder(tmp_path / "ok", state=False)
    (folder / "weights.pt").write_bytes(_deflated(network().state_dict()))
    loaded = load_model(folder)
    for key, value in network().state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[key], value)


def test_the_budget_covers_the_input_grid_arrays_of_explain_image(tmp_path, monkeypatch):
    from XAIExplainLib import engine

    model = load_model(model_folder(tmp_path / "m2"))
    image = volume(shape=(8, 64, 64))
    seen = {}
    real = engine.explain_volume

    def spy(*args, **kwargs):
        seen["budget"] = kwargs.get("memory_budget_mb")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "explain_volume", spy)
    explain_image(model, image, methods=["gradcam", "saliency"], device="cpu", memory_budget_mb=50)
    held = 8 * 64 * 64 * 4 * (1 + 2 * 2) / 2**20  # float32 input + two maps restored, each with a copy
    assert seen["budget"] == pytest.approx(50 - held)
    with pytest.raises(ValueError, match=r"memory_budget_mb=0\.5 is too small: the image's own grid alone needs "
                                         r"2 MB \(131072 voxels as float32 input and 2 map\(s\)"):
        explain_image(model, volume(shape=(8, 128, 128)), methods=["gradcam", "saliency"], device="cpu",
                      memory_budget_mb=0.5)


def test_cli_memory_budget_refuses_an_input_that_cannot_fit(tmp_path, capsys):
    sitk.WriteImage(volume(shape=(8, 128, 128)), str(tmp_path / "v.nrrd"))
    status = cli.main(["explain", str(tmp_path / "v.nrrd"), "--model", str(model_folder(tmp_path / "m")),
                       "--method", "gradcam", "--output-dir", str(tmp_path / "out"), "--quiet",
                       "--memory-budget", "0.5", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and "memory_budget_mb=0.5 is too small" in err, err
    status = cli.main(["explain", str(tmp_path / "v.nrrd"), "--model", str(model_folder(tmp_path / "m")),
                       "--method", "gradcam", "--output-dir", str(tmp_path / "out2"), "--quiet",
                       "--memory-budget", "-3", "--device", "cpu"])
    assert status == 2 and "--memory-budget -3: must be a positive number" in capsys.readouterr().err
