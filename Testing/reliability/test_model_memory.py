"""A model file's patch and grid are checked against the budget or the free memory before allocation (issue 20 class 6).

An nnU-Net plan with ``patch_size [384, 384, 384]`` on a small CT used to allocate until the machine refused
(``allocate 1811939328 bytes``); a budget made every nnU-Net input fail with ``prepare() got an unexpected
keyword argument``. Now the window's working memory (estimated on a scaled probe, compared here with a
full-size count) and the grid nnU-Net resamples to are refused with the numbers, through the API and the CLI,
and a normal nnU-Net model runs with a budget.
"""
from __future__ import annotations

import resource
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from XAIExplainLib import cli
from XAIExplainLib import engine
from XAIExplainLib.engine.memory_estimate import activation_bytes
from XAIExplainLib.imaging import reading
from XAIExplainLib.models import explain_image, load_model, predict_image
from XAIExplainLib.models.working_memory import patch_activation_bytes

from .hostile import model_folder, volume

pytest.importorskip("nnunetv2")
from Testing.support.nnunet_folders import ct_image, write_nnunet_folder  # noqa: E402

HUGE = (384, 384, 384)


def _forbid_windows(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no window may run for this model")
    monkeypatch.setattr(engine, "explain_volume", refuse)
    monkeypatch.setattr(engine, "predict_volume", refuse)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def huge_patch_nnunet(tmp_path_factory):
    return load_model(write_nnunet_folder(tmp_path_factory.mktemp("nn") / "huge", patch=HUGE))


def test_a_huge_nnunet_patch_is_refused_with_the_numbers_before_allocation(huge_patch_nnunet, monkeypatch):
    _forbid_windows(monkeypatch)
    before = _peak_mb()
    with pytest.raises(ValueError, match=r"model '.*' \(.*huge\): one 384 x 384 x 384 window with 1 channel\(s\) "
                                         r"needs estimated [0-9.]+ GB of working memory \(activations, gradients and "
                                         r"input\), more than the memory budget of 2000 MB\. .*lower the patch size"):
        explain_image(huge_patch_nnunet, ct_image(), "saliency", device="cpu", memory_budget_mb=2000)
    assert _peak_mb() - before < 400  # 384^3 x 4 channels of float32 alone is 905 MB


def test_without_a_budget_the_free_memory_bounds_the_window_for_explain_and_predict(huge_patch_nnunet,
                                                                                    monkeypatch):
    _forbid_windows(monkeypatch)
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(ValueError, match=r"384 x 384 x 384 window .* more than the memory available on cpu "
                                         r"\(1\.0 GB\)"):
        explain_image(huge_patch_nnunet, ct_image(), "gradcam", device="cpu")
    with pytest.raises(ValueError, match=r"384 x 384 x 384 window .*\(activations and input\), more than the "
                                         r"memory available on cpu"):
        predict_image(huge_patch_nnunet, ct_image(), device="cpu")


def test_the_scaled_probe_counts_what_a_full_size_forward_holds(huge_patch_nnunet, tmp_path):
    """Independent reference: the engine's own count on a real forward of the full patch."""
    card_network = load_model(model_folder(tmp_path / "m3", spatial_dims=3)).module
    for network, patch in ((huge_patch_nnunet.module, (32, 48, 48)), (card_network, (32, 64, 64))):
        full = activation_bytes(network, torch.zeros((1, 1) + patch))
        scaled, exact = patch_activation_bytes(network, 1, patch)
        assert exact and scaled == pytest.approx(full, rel=0.02)


def _huge_patch_card(tmp_path):
    import json

    folder = model_folder(tmp_path / "card", spatial_dims=3)
    card = json.loads((folder / "card.json").read_text())
    card["input"]["patch_size"] = list(HUGE)
    card["input"].pop("size", None)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_a_card_with_a_huge_patch_is_refused_the_same_way(tmp_path, monkeypatch):
    """Every windowed form goes through the same check: a card whose patch_size is 384^3."""
    folder = _huge_patch_card(tmp_path)
    _forbid_windows(monkeypatch)
    with pytest.raises(ValueError, match=r"one 384 x 384 x 384 window .* more than the memory budget of 500 MB"):
        explain_image(load_model(folder, check=False), volume(shape=(16, 16, 16)), "saliency", device="cpu",
                      memory_budget_mb=500)


def test_loading_a_card_does_not_run_its_test_forward_on_a_patch_memory_cannot_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 2**30)
    before = _peak_mb()
    with pytest.raises(ValueError, match=r"card\.json \(field 'input\.patch_size'\): one 384 x 384 x 384 window "
                                         r"with 1 channel\(s\) needs estimated .* \(activations and input\), more "
                                         r"than the memory available on cpu \(1\.0 GB\)"):
        load_model(_huge_patch_card(tmp_path))
    assert _peak_mb() - before < 400


def test_a_bundle_with_a_huge_inferer_window_is_refused_at_load_and_its_grid_before_preprocessing(tmp_path,
                                                                                                 monkeypatch):
    pytest.importorskip("monai")
    pytest.importorskip("nibabel")
    import copy

    from Testing.models.test_monai_bundle import CONFIG, _image, _write_bundle

    config = copy.deepcopy(CONFIG)
    config["inferer"]["roi_size"] = list(HUGE)
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(ValueError, match=r"inference\.json \(the inferer's roi_size\): one 384 x 384 x 384 window "
                                         r".* more than the memory available on cpu"):
        load_model(_write_bundle(tmp_path / "huge", config), trust=True)
    monkeypatch.undo()

    fine = copy.deepcopy(CONFIG)
    fine["preprocessing"]["transforms"][3]["pixdim"] = [0.05, 0.05, 0.05]
    bundle = load_model(_write_bundle(tmp_path / "fine", fine), trust=True)
    with pytest.raises(ValueError, match=r"MONAI bundle 'tiny-spleen' would resample this 24 x 28 x 20 image "
                                         r"\(spacing 1\.2 x 0\.9 x 2\.5 mm\) to a 576 x 504 x 1000 grid at "
                                         r"0\.05 x 0\.05 x 0\.05 mm: .* more than the memory budget of 2000 MB"):
        explain_image(bundle, _image(), "saliency", device="cpu", memory_budget_mb=2000)


def test_an_nnunet_plan_resampling_a_small_ct_to_a_huge_grid_is_refused_before_preprocessing(tmp_path, monkeypatch):
    model = load_model(write_nnunet_folder(tmp_path / "fine", spacing=(0.05, 0.05, 0.05)))

    from XAIExplainLib.models.nnunet import pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("no copy of the image may be made for nnU-Net's preprocessor")
    monkeypatch.setattr(pipeline.sitk, "GetArrayFromImage", refuse)
    with pytest.raises(ValueError, match=r"nnU-Net model .* would resample this 30 x 36 x 20 image \(spacing 0\.8 x "
                                         r"0\.9 x 2\.5 mm\) to a 480 x 648 x 1000 grid at 0\.05 x 0\.05 x 0\.05 mm: "
                                         r"311040000 voxels, .* more than the memory budget of 3000 MB"):
        explain_image(model, ct_image(), "saliency", device="cpu", memory_budget_mb=3000)


def test_cli_memory_budget_runs_an_nnunet_model_and_refuses_the_huge_patch(tmp_path, capsys):
    sitk.WriteImage(ct_image(), str(tmp_path / "ct.nrrd"))
    folder = write_nnunet_folder(tmp_path / "nnunet")
    status = cli.main(["explain", str(tmp_path / "ct.nrrd"), "--model", str(folder), "--method", "saliency",
                       "--output-dir", str(tmp_path / "out"), "--quiet", "--memory-budget", "1500",
                       "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 0, err
    maps = list((tmp_path / "out").rglob("*saliency*.nrrd"))
    assert maps and np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(maps[0])))).all()
    huge = write_nnunet_folder(tmp_path / "huge", patch=HUGE)
    status = cli.main(["explain", str(tmp_path / "ct.nrrd"), "--model", str(huge), "--method", "saliency",
                       "--output-dir", str(tmp_path / "out2"), "--quiet", "--memory-budget", "1500",
                       "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and "384 x 384 x 384 window" in err and "more than the memory budget" in err, err


def test_without_a_budget_the_free_memory_bounds_the_batch_of_windows(monkeypatch, two_torch_threads):
    """A CPU that runs out of memory kills the process, so the engine's default of 16 windows per batch is cut to
    what the free memory holds (liver-lesion-seg-3d's 32 windows took 21.6 GB at 16 per batch)."""
    from XAIExplainLib.models import pipeline
    from XAIExplainLib.models.working_memory import window_bytes

    model = load_model(write_nnunet_folder(Path(tempfile.mkdtemp()) / "small", patch=(16, 24, 24)))
    seen = []
    real = pipeline.run_networks

    def spy(loaded, array, mode, axis, device, batch_size, *args, **kwargs):
        seen.append(batch_size)
        return real(loaded, array, mode, axis, device, batch_size, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run_networks", spy)
    for gradients, run in ((False, lambda: predict_image(model, ct_image(), device="cpu")),
                           (True, lambda: explain_image(model, ct_image(), "gradcam", device="cpu"))):
        need, _ = window_bytes(model.module, 1, (16, 24, 24), gradients=gradients)
        monkeypatch.setattr(reading, "available_memory_bytes", lambda need=need: 3 * need + need // 2)
        seen.clear()
        run()
        assert seen and seen[0] == 3, (gradients, seen)  # three windows fit, not the default 16
    monkeypatch.setattr(reading, "available_memory_bytes", lambda: 2**40)
    seen.clear()
    predict_image(model, ct_image(), device="cpu")
    assert seen == [16]  # plenty of memory: the engine's default, never more
    seen.clear()
    predict_image(model, ct_image(), device="cpu", batch_size=5)
    assert seen == [5]  # the caller's batch is the caller's
