"""A TorchScript file through every entry point: the API, the command line and the logic.

A ScriptModule takes no hooks, so layer methods are refused on it with the methods
that do work; the input-gradient methods give the same maps as the eager network the
file was scripted from (loaded as a state-dict file with its architecture).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from XAIExplainLib.models import explain_image, load_model
from XAIExplainLib.models.architectures import SliceClassifier

ARCH = "XAIExplainLib.models.architectures:SliceClassifier"
KWARGS = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8, 8]}
SIDECAR = {"task": "classification", "spatial_dims": 2,
           "input": {"channels": 1, "size": [32, 32],
                     "intensity": {"mode": "window", "window": [-100, 200]}},
           "classes": ["normal", "lesion"]}


def _network() -> SliceClassifier:
    torch.manual_seed(0)
    return SliceClassifier(**KWARGS).eval()


@pytest.fixture()
def model_files(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "models"
    folder.mkdir()
    scripted = folder / "net.pt"
    torch.jit.save(torch.jit.script(_network()), str(scripted))
    scripted.with_suffix(".json").write_text(json.dumps(SIDECAR))
    eager = folder / "eager.pth"
    torch.save(_network().state_dict(), eager)
    eager.with_suffix(".json").write_text(json.dumps(
        dict(SIDECAR, architecture={"class": ARCH, "kwargs": KWARGS})))
    return {"scripted": scripted, "eager": eager}


@pytest.fixture()
def image_file(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    array = rng.normal(50.0, 60.0, (3, 32, 32)).astype(np.float32)
    array[:, 10:20, 12:22] += 120.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.2, 1.2, 3.0))
    image.SetOrigin((-10.0, 5.0, 2.0))
    path = tmp_path / "slices.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def test_api_refuses_layer_methods_and_matches_the_eager_network_on_saliency(model_files,
                                                                               image_file):
    scripted = load_model(model_files["scripted"], trust=True)
    eager = load_model(model_files["eager"])
    assert scripted.kind == "torchscript" and eager.kind == "module"
    with pytest.raises(ValueError) as info:
        explain_image(scripted, image_file, methods=["gradcam"], device="cpu")
    message = str(info.value)
    assert "gradcam" in message and "TorchScript" in message and "saliency" in message
    with pytest.raises(ValueError) as info:
        explain_image(scripted, image_file, methods=["saliency"], layer="features.block4",
                      device="cpu")
    assert str(info.value).startswith(f"{model_files['scripted'].resolve()}: is a TorchScript "
                                      "model, which takes no hooks, so layer='features.block4' "
                                      "cannot be used")
    for method in ("saliency", "integrated_gradients"):
        ours = explain_image(scripted, image_file, methods=[method], device="cpu")
        reference = explain_image(eager, image_file, methods=[method], device="cpu")
        np.testing.assert_allclose(sitk.GetArrayFromImage(ours.maps[method]),
                                   sitk.GetArrayFromImage(reference.maps[method]), atol=1e-5)
        np.testing.assert_allclose(ours.prediction, reference.prediction, atol=1e-6)


def test_cli_needs_trust_refuses_layer_methods_and_records_the_model(model_files, image_file,
                                                                    tmp_path, capsys):
    from XAIExplainLib import cli

    def run(*args):
        status = cli.main([str(a) for a in args])
        return status, capsys.readouterr().err

    out = tmp_path / "out"
    status, err = run("explain", image_file, "--model", model_files["scripted"], "--method",
                      "saliency", "--output-dir", out)
    assert status == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"xaiexplain: error: --model {model_files['scripted']}: "
                          f"{model_files['scripted']}: is a TorchScript archive, i.e. a program")
    assert "--trust-model" in err and not out.exists()
    status, err = run("explain", image_file, "--model", model_files["scripted"], "--trust-model",
                      "--method", "gradcam", "--output-dir", out)
    assert status == 2 and len(err.splitlines()) == 1
    assert "gradcam" in err and "TorchScript" in err and "saliency" in err and not out.exists()
    status, err = run("explain", image_file, "--model", model_files["scripted"], "--trust-model",
                      "--method", "saliency", "--output-dir", out)
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_source"] == {
        "kind": "torchscript", "path": str(model_files["scripted"].resolve()),
        "weights_sha256": load_model(model_files["scripted"], trust=True).weights_sha256}
    written = sorted(p.name for p in out.rglob("*.nrrd"))
    assert written and all("saliency" in name for name in written)


def test_logic_asks_for_trust_and_disables_layer_methods_with_the_reason(model_files):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from XAIExplainLib.logic import XAIExplainLogic

    logic = XAIExplainLogic()
    path = str(model_files["scripted"])
    reason = logic.trustNeeded(path)
    assert reason.startswith(f"{path}: is a TorchScript archive, i.e. a program")
    assert logic.trustNeeded(str(model_files["eager"])) == ""
    loaded = logic.loadModel(path, trust=True)
    assert loaded.scripted and logic.trustNeeded(path) == ""  # trusted once, for this session
    rows = {name: (enabled, why) for name, _, enabled, why in logic.methodsForModel(path)}
    assert rows["saliency"][0] and rows["integrated_gradients"][0]
    assert not rows["gradcam"][0] and "TorchScript" in rows["gradcam"][1]
    info = logic.describeModel(path)
    assert info["classes"] == ["normal", "lesion"] and info["spatialDims"] == 2
