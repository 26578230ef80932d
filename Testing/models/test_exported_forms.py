"""ONNX files and torch.export programs as model forms (issue 21 section 3).

Each test writes its file the way the framework does (``torch.onnx.export`` with the
TorchScript-based and the dynamo exporter, ``torch.export.export`` + ``save``) and
compares against an independent reference: onnxruntime for the converted ONNX graph,
the eager network the file was exported from for maps and predictions.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from XAIExplainLib.models import ModelCardError, UntrustedModelError, explain_image, load_model
from XAIExplainLib.models.architectures import SliceClassifier
from XAIExplainLib.models.trust_check import trust_needed

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
if importlib.util.find_spec("onnx2torch") is None:  # not importorskip: its import pulls torchvision
    pytest.skip("onnx2torch is not installed", allow_module_level=True)

ARCH = "XAIExplainLib.models.architectures:SliceClassifier"
KWARGS = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8, 8]}
SIDECAR = {"task": "classification", "spatial_dims": 2,
           "input": {"channels": 1, "size": [32, 32],
                     "intensity": {"mode": "window", "window": [-100, 200]}},
           "classes": ["normal", "lesion"]}
SEGMENTER = {"task": "segmentation", "spatial_dims": 3, "classes": ["background", "lesion"],
             "patch_size": [8, 16, 16], "normalization": "zscore"}
GRADIENT_METHODS = ("saliency", "integrated_gradients", "smoothgrad", "input_x_gradient",
                    "gradient_shap", "occlusion", "rise")
BATCH = torch.export.Dim("batch")


def _classifier() -> SliceClassifier:
    torch.manual_seed(0)
    net = SliceClassifier(**KWARGS).eval()
    with torch.no_grad():  # trained-looking batch norms (distinct folded biases)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return net


def _segmenter() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Conv3d(4, 2, 1)).eval()


def _export_onnx(net: nn.Module, path: Path, shape, dynamo: bool = False) -> Path:
    x = torch.randn(*shape)
    if dynamo:
        torch.onnx.export(net, (x,), str(path), dynamo=True, opset_version=18,
                          dynamic_shapes=({0: BATCH},))
    else:  # the TorchScript-based exporter, with the batch axis dynamic
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


def _export_pt2(net: nn.Module, path: Path, shape, dynamic: bool = True) -> Path:
    shapes = ({0: BATCH},) if dynamic else None
    torch.export.save(torch.export.export(net, (torch.randn(*shape),), dynamic_shapes=shapes), str(path))
    return path


def _onnxruntime(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture()
def folder(tmp_path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture()
def slices(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    array = rng.normal(50.0, 60.0, (3, 32, 32)).astype(np.float32)
    array[:, 10:20, 12:22] += 120.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.2, 1.2, 3.0))
    image.SetOrigin((-10.0, 5.0, 2.0))
    path = tmp_path / "slices.nrrd"
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture()
def volume(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    array = rng.normal(0.0, 1.0, (8, 16, 16)).astype(np.float32)
    array[2:6, 4:10, 5:12] += 3.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    path = tmp_path / "volume.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def _onnx_classifier(folder: Path) -> Path:
    path = _export_onnx(_classifier(), folder / "classifier.onnx", (2, 1, 32, 32))
    path.with_suffix(".json").write_text(json.dumps(SIDECAR))
    return path


def _eager_classifier(folder: Path) -> Path:
    path = folder / "eager.pth"
    torch.save(_classifier().state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(dict(SIDECAR, architecture={"class": ARCH,
                                                                             "kwargs": KWARGS})))
    return path


def _maps_equal(ours, reference, method: str, atol: float = 1e-4) -> None:
    np.testing.assert_allclose(sitk.GetArrayFromImage(ours.maps[method]),
                               sitk.GetArrayFromImage(reference.maps[method]), atol=atol)


# --- ONNX ---------------------------------------------------------------------------------


def test_onnx_classifier_equals_onnxruntime_and_loads_without_trust(folder):
    path = _onnx_classifier(folder)
    assert trust_needed(path) == ""
    loaded = load_model(path)  # ONNX is data: no trust
    assert loaded.kind == "onnx" and not loaded.scripted and loaded.card.class_names == ["normal", "lesion"]
    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = loaded.module(x).numpy()
    assert _relative_error(ours, _onnxruntime(path, x)) <= 1e-4
    with torch.no_grad():
        assert _relative_error(ours, _classifier()(x).numpy()) <= 1e-4
    names = dict(loaded.module.named_modules())
    assert isinstance(names["features/block4/conv2/conv/Conv"], nn.Conv2d)


def test_onnx_segmenter_from_the_dynamo_exporter_equals_onnxruntime(folder, volume):
    path = _export_onnx(_segmenter(), folder / "seg.onnx", (1, 1, 8, 16, 16), dynamo=True)
    loaded = load_model(path, **SEGMENTER)
    x = torch.randn(2, 1, 8, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = loaded.module(x).numpy()
    assert ours.shape == (2, 2, 8, 16, 16)
    assert _relative_error(ours, _onnxruntime(path, x)) <= 1e-4
    result = explain_image(loaded, volume, methods=["gradcam", "saliency"], device="cpu")
    reference = explain_image(load_model(_export_pt2(_segmenter(), folder / "seg.pt2", (2, 1, 8, 16, 16)),
                                         trust=True, **SEGMENTER), volume, methods=["saliency"], device="cpu")
    _maps_equal(result, reference, "saliency")
    assert sitk.GetArrayFromImage(result.maps["gradcam"]).shape == (8, 16, 16)


def test_onnx_gradcam_at_an_onnx_node_equals_the_eager_network(folder, slices):
    onnx_model = load_model(_onnx_classifier(folder))
    eager = load_model(_eager_classifier(folder))
    ours = explain_image(onnx_model, slices, methods=["gradcam"], layer="features/block4/conv2/act/Relu",
                         device="cpu")
    reference = explain_image(eager, slices, methods=["gradcam"], layer="features.block4", device="cpu")
    _maps_equal(ours, reference, "gradcam")
    np.testing.assert_allclose(ours.prediction, reference.prediction, atol=1e-5)
    default = explain_image(onnx_model, slices, methods=["gradcam", "saliency"], device="cpu")
    assert sitk.GetArrayFromImage(default.maps["gradcam"]).max() > 0
    _maps_equal(default, explain_image(eager, slices, methods=["saliency"], device="cpu"), "saliency")


def test_onnx_unsupported_operators_are_refused_by_name(folder):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Hardmax", ["r"], ["y"], name="hard", axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    path = folder / "hard.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(ModelCardError) as info:
        load_model(path, task="classification", spatial_dims=2, classes=["a", "b"])
    assert str(info.value).startswith(f"{path}: uses operators that cannot be converted to PyTorch: "
                                      "Hardmax (ai.onnx, opset 13);")


def test_onnx_custom_domains_need_trust_with_the_reason(folder):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("FusedThing", ["x"], ["y"], name="fused", domain="com.example")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = folder / "custom.onnx"
    onnx.save(model, str(path))
    description = {"task": "classification", "spatial_dims": 2, "classes": ["a", "b"]}
    with pytest.raises(UntrustedModelError) as info:
        load_model(path, **description)
    assert str(info.value).startswith(f"{path}: uses custom ONNX operator domain(s) com.example, whose "
                                      "operators are implemented by code outside the file")
    assert trust_needed(path) == str(info.value)
    with pytest.raises(ModelCardError, match=r"FusedThing \(com.example, opset 1\)"):
        load_model(path, trust=True, **description)


def test_onnx_external_data_outside_the_folder_needs_trust(folder, tmp_path):
    path = _export_onnx(_segmenter(), folder / "seg.onnx", (1, 1, 8, 16, 16))
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="seg.data", size_threshold=0)
    assert load_model(path, **SEGMENTER).kind == "onnx"  # beside it: fine
    (folder / "seg.data").rename(tmp_path / "seg.data")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../seg.data"
    onnx.save_model(model, str(path))
    with pytest.raises(UntrustedModelError, match=r"external tensor data \S+\.\./seg\.data .*lies outside "
                                                   r"the model folder"):
        load_model(path, **SEGMENTER)
    assert "lies outside the model folder" in trust_needed(path)


def test_onnx_and_pt2_are_refused_with_a_clear_error_when_corrupt(folder):
    (folder / "bad.onnx").write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ValueError, match=r"bad\.onnx: is not a readable ONNX model"):
        load_model(folder / "bad.onnx", **SEGMENTER)
    (folder / "bad.pt2").write_bytes(b"PK not a zip")
    with pytest.raises(ValueError, match=r"bad\.pt2: cannot load the torch.export program"):
        load_model(folder / "bad.pt2", trust=True, **SEGMENTER)


# --- torch.export ---------------------------------------------------------------------------


def test_pt2_needs_trust_because_loading_it_unpickles(folder, tmp_path):
    """The decision tested: torch.export.load runs a pickle in the archive, so a .pt2 needs trust."""
    path = _export_pt2(_classifier(), folder / "net.pt2", (2, 1, 32, 32))
    with pytest.raises(UntrustedModelError) as info:
        load_model(path, **{k: v for k, v in SIDECAR.items() if k != "input"}, size=[32, 32])
    assert str(info.value).startswith(f"{path}: is a torch.export program (.pt2); torch.export.load "
                                      "unpickles")
    assert trust_needed(path) == str(info.value)
    # What the refusal protects against: a weight marked use_pickle runs its pickle on load.
    marker = tmp_path / "ran"
    crafted = folder / "crafted.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w", zipfile.ZIP_STORED) as target:
        config_name = next(n for n in source.namelist() if n.endswith("weights_config.json"))
        config = json.loads(source.read(config_name))
        entry = next(iter(config["config"].values()))
        entry["use_pickle"] = True
        payload = f"{config_name.rsplit('/', 1)[0]}/{entry['path_name']}"
        for item in source.infolist():
            if item.filename == config_name:
                target.writestr(item, json.dumps(config))
            elif item.filename == payload:
                target.writestr(item, pickle.dumps(_Creates(str(marker))))
            else:
                target.writestr(item, source.read(item.filename))
    with pytest.raises(UntrustedModelError):
        load_model(crafted, task="classification", spatial_dims=2, classes=["a", "b"], size=[32, 32])
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch makes of the payload afterwards
        torch.export.load(str(crafted))
    assert marker.exists()  # the file's pickle ran while torch.export.load read it


class _Creates:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pt2_gradient_and_layer_methods_equal_the_eager_network(folder, slices):
    path = _export_pt2(_classifier(), folder / "net.pt2", (2, 1, 32, 32))
    path.with_suffix(".json").write_text(json.dumps(SIDECAR))
    program = load_model(path, trust=True)
    eager = load_model(_eager_classifier(folder))
    assert program.kind == "exported-program" and not program.scripted
    methods = list(GRADIENT_METHODS) + ["gradcam"]
    ours = explain_image(program, slices, methods=methods, layer="features.block4", device="cpu")
    reference = explain_image(eager, slices, methods=methods, layer="features.block4", device="cpu")
    for method in methods:
        assert np.ptp(sitk.GetArrayFromImage(ours.maps[method])) > 0, method  # a map, not a constant
        _maps_equal(ours, reference, method)
    np.testing.assert_allclose(ours.prediction, reference.prediction, atol=1e-5)


def test_pt2_with_a_fixed_batch_is_refused_with_how_to_export(folder):
    path = _export_pt2(_classifier(), folder / "fixed.pt2", (1, 1, 32, 32), dynamic=False)
    with pytest.raises(ModelCardError) as info:
        load_model(path, trust=True, **{k: v for k, v in SIDECAR.items() if k != "input"}, size=[32, 32])
    assert str(info.value).startswith(f"{path}: the program was exported for batch size 1 only")
    assert "torch.export.Dim('batch')" in str(info.value)


def test_pt2_that_cannot_be_unflattened_refuses_layer_methods_with_those_that_work(folder, slices,
                                                                                    monkeypatch):
    path = _export_pt2(_classifier(), folder / "net.pt2", (2, 1, 32, 32))
    path.with_suffix(".json").write_text(json.dumps(SIDECAR))

    def refuse(program):
        raise ValueError("cannot unflatten")

    monkeypatch.setattr(torch.export, "unflatten", refuse)
    flat = load_model(path, trust=True)
    assert flat.scripted
    with pytest.raises(ValueError) as info:
        explain_image(flat, slices, methods=["gradcam"], device="cpu")
    assert "gradcam" in str(info.value) and "saliency, " in str(info.value)
    ours = explain_image(flat, slices, methods=["saliency"], device="cpu")
    _maps_equal(ours, explain_image(load_model(_eager_classifier(folder)), slices, methods=["saliency"],
                                    device="cpu"), "saliency")


# --- entry points ---------------------------------------------------------------------------


def test_cli_runs_onnx_without_trust_and_pt2_with_it(folder, slices, tmp_path, capsys):
    from XAIExplainLib import cli

    onnx_path = _onnx_classifier(folder)
    pt2 = _export_pt2(_classifier(), folder / "net.pt2", (2, 1, 32, 32))
    pt2.with_suffix(".json").write_text(json.dumps(SIDECAR))

    def run(*args):
        status = cli.main([str(a) for a in args])
        return status, capsys.readouterr().err

    out = tmp_path / "onnx-out"
    status, err = run("explain", slices, "--model", onnx_path, "--method", "gradcam", "--output-dir", out)
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_source"]["kind"] == "onnx"
    assert summary["model_source"]["path"] == str(onnx_path.resolve())
    assert any("gradcam" in p.name for p in out.rglob("*.nrrd"))
    out = tmp_path / "pt2-out"
    status, err = run("explain", slices, "--model", pt2, "--method", "saliency", "--output-dir", out)
    assert status == 2 and "torch.export.load unpickles" in err and "--trust-model" in err
    assert not out.exists()
    status, err = run("explain", slices, "--model", pt2, "--trust-model", "--method", "gradcam",
                      "--output-dir", out)
    assert status == 0, err
    assert json.loads((out / "summary.json").read_text())["model_source"]["kind"] == "exported-program"


def test_logic_loads_both_forms_with_layer_methods_enabled(folder):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from XAIExplainLib.logic import XAIExplainLogic

    onnx_path = str(_onnx_classifier(folder))
    pt2 = _export_pt2(_classifier(), folder / "net.pt2", (2, 1, 32, 32))
    pt2.with_suffix(".json").write_text(json.dumps(SIDECAR))
    logic = XAIExplainLogic()
    assert logic.trustNeeded(onnx_path) == ""
    assert "torch.export.load unpickles" in logic.trustNeeded(str(pt2))
    for path, trust in ((onnx_path, False), (str(pt2), True)):
        loaded = logic.loadModel(path, trust=trust)
        assert not loaded.scripted
        rows = {name: enabled for name, _, enabled, _ in logic.methodsForModel(path)}
        assert rows["gradcam"] and rows["saliency"] and rows["occlusion"]
        assert logic.describeModel(path)["classes"] == ["normal", "lesion"]


def test_onnx_constants_shared_through_identity_nodes_convert(folder):
    """torch.onnx shares equal constants (an untrained net's folded zero biases) via Identity nodes."""
    torch.manual_seed(0)
    net = SliceClassifier(**KWARGS).eval()
    path = _export_onnx(net, folder / "shared.onnx", (2, 1, 32, 32))
    assert any(node.op_type == "Identity" for node in onnx.load(str(path)).graph.node)
    loaded = load_model(path, **{k: v for k, v in SIDECAR.items() if k != "input"}, size=[32, 32])
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert _relative_error(loaded.module(x).numpy(), _onnxruntime(path, x)) <= 1e-4


def test_a_card_may_name_an_onnx_file_or_a_pt2_program(folder):
    _export_onnx(_classifier(), folder / "net.onnx", (2, 1, 32, 32))
    _export_pt2(_classifier(), folder / "net.pt2", (2, 1, 32, 32))
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    for weights, trust, needs in (("net.onnx", False, ""), ("net.pt2", True, "unpickles")):
        card = dict(SIDECAR, name="tiny", weights=weights)  # the format follows the file's ending
        (folder / "card.json").write_text(json.dumps(card))
        reason = trust_needed(folder)
        assert (needs in reason) if needs else reason == ""
        loaded = load_model(folder, trust=trust)
        assert loaded.kind == "card" and loaded.card.weights.format in ("onnx", "exported_program")
        with torch.no_grad():
            assert _relative_error(loaded.module(x).numpy(), _classifier()(x).numpy()) <= 1e-4
