"""One loader for every form (issue 11 section 1): card, TorchScript file, state-dict file.

Each form is loaded through ``load_model`` and compared with the network it was
written from (same outputs on the same input); the input description comes from
options or a sidecar JSON; bad input gets an error naming the file and what to do.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from XAIExplainLib.models import ModelCardError, UntrustedModelError, load_model
from XAIExplainLib.models.architectures import SliceClassifier
from XAIExplainLib.models.forms import FORMS, find_form

ARCH = "XAIExplainLib.models.architectures:SliceClassifier"
KWARGS = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8, 8]}
DESCRIPTION = {"task": "classification", "spatial_dims": 2, "classes": ["normal", "lesion"],
               "size": [32, 32], "window": [-100, 200]}


def _network() -> SliceClassifier:
    torch.manual_seed(0)
    return SliceClassifier(**KWARGS).eval()


def _same_outputs(module: torch.nn.Module, reference: torch.nn.Module) -> None:
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), reference(x).numpy(), atol=1e-6)


@pytest.fixture()
def scripted_file(tmp_path) -> Path:
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(_network()), str(path))
    return path


@pytest.fixture()
def state_dict_file(tmp_path) -> Path:
    path = tmp_path / "net.pth"
    torch.save(_network().state_dict(), path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_card_folder_and_card_json_are_the_card_form(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "card-model"
    folder.mkdir()
    save_file(_network().state_dict(), str(folder / "w.safetensors"))
    card = {"name": "tiny", "task": "classification", "spatial_dims": 2,
            "input": {"channels": 1, "size": [32, 32]}, "classes": ["normal", "lesion"],
            "architecture": {"class": ARCH, "kwargs": KWARGS}, "weights": "w.safetensors"}
    (folder / "card.json").write_text(json.dumps(card))
    for source in (folder, folder / "card.json"):
        loaded = load_model(source)
        assert loaded.kind == "card" and not loaded.scripted
        assert loaded.weights_sha256 == _sha256(folder / "w.safetensors")
        _same_outputs(loaded.module, _network())


def test_torchscript_file_with_options(scripted_file):
    loaded = load_model(scripted_file, trust=True, **DESCRIPTION)
    assert loaded.kind == "torchscript" and loaded.scripted
    assert loaded.source == scripted_file.resolve()
    assert loaded.weights_sha256 == _sha256(scripted_file)
    card = loaded.card
    assert (card.name, card.task, card.spatial_dims, card.class_names) == \
        ("net", "classification", 2, ["normal", "lesion"])
    assert card.input.size == (32, 32) and card.input.intensity.window == (-100.0, 200.0)
    _same_outputs(loaded.module, _network())


def test_torchscript_file_with_sidecar(scripted_file):
    sidecar = {"name": "scripted", "task": "classification", "spatial_dims": 2,
               "input": {"channels": 1, "spacing": [1.5, 1.5], "size": [32, 32],
                         "intensity": {"mode": "zscore"}},
               "classes": ["normal", "lesion"]}
    scripted_file.with_suffix(".json").write_text(json.dumps(sidecar))
    loaded = load_model(scripted_file, trust=True)
    assert loaded.card.name == "scripted" and loaded.card.input.spacing == (1.5, 1.5)
    assert loaded.card.input.intensity.mode == "zscore" and loaded.card.path == \
        scripted_file.with_suffix(".json")
    # an option that repeats the sidecar is fine; one that contradicts it is an error
    assert load_model(scripted_file, trust=True, task="classification").card.name == "scripted"
    with pytest.raises(ValueError) as info:
        load_model(scripted_file, trust=True, spatial_dims=3)
    assert str(info.value) == (f"{scripted_file}: option spatial_dims=3 contradicts its sidecar "
                               f"{scripted_file.with_suffix('.json')} (spatial_dims = 2); give the "
                               "value in one place")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_state_dict_file_with_architecture(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(_network().state_dict(), str(path))
    else:
        torch.save(_network().state_dict(), path)
    loaded = load_model(path, architecture=ARCH, architecture_kwargs=KWARGS, layer="features.block4",
                        **DESCRIPTION)
    assert loaded.kind == "module" and isinstance(loaded.module, SliceClassifier)
    assert loaded.card.target_layers.default == "features.block4"
    assert loaded.weights_sha256 == _sha256(path)
    _same_outputs(loaded.module, _network())
    # the same architecture as one {"class", "kwargs"} block, as in a card
    block = load_model(path, architecture={"class": ARCH, "kwargs": KWARGS}, **DESCRIPTION)
    _same_outputs(block.module, _network())


def test_state_dict_without_architecture_says_what_to_give(state_dict_file):
    with pytest.raises(ModelCardError) as info:
        load_model(state_dict_file, **DESCRIPTION)
    assert str(info.value) == (
        f"{state_dict_file}: is a state dict (tensors only), which does not say which network "
        "the tensors belong to; give architecture='package.module:ClassName' and "
        "architecture_kwargs={...} as options or in its sidecar JSON")


def test_bare_file_without_description_names_the_missing_options(state_dict_file):
    with pytest.raises(ModelCardError) as info:
        load_model(state_dict_file, architecture=ARCH, architecture_kwargs=KWARGS, task="classification")
    assert str(info.value).startswith(f"{state_dict_file}: a bare model file does not say what it "
                                      "expects; give spatial_dims, classes as options")


def test_state_dict_architecture_follows_the_allow_list(state_dict_file):
    with pytest.raises(UntrustedModelError, match="names module 'os', which is outside"):
        load_model(state_dict_file, architecture="os:system", **DESCRIPTION)


def test_torchscript_file_refuses_architecture_and_layer(scripted_file):
    with pytest.raises(ValueError) as info:
        load_model(scripted_file, trust=True, architecture=ARCH, **DESCRIPTION)
    assert str(info.value) == (f"{scripted_file}: is a TorchScript file, which carries its own "
                               "network; architecture= applies to state-dict files only. Remove it")
    with pytest.raises(ValueError) as info:
        load_model(scripted_file, trust=True, layer="features.block4", **DESCRIPTION)
    assert str(info.value).startswith(f"{scripted_file}: is a TorchScript file, which takes no "
                                      "hooks, so it has no usable layer (got layer='features.block4')")


def test_options_that_contradict_the_network_name_the_file(scripted_file, state_dict_file):
    wrong = dict(DESCRIPTION, classes=["a", "b", "c"])
    with pytest.raises(ModelCardError) as info:
        load_model(scripted_file, trust=True, **wrong)
    assert str(info.value) == (f"{scripted_file}: field 'classes' lists 3 classes but the network "
                               "outputs 2 channel(s)")
    with pytest.raises(ModelCardError) as info:
        load_model(state_dict_file, architecture=ARCH, architecture_kwargs=KWARGS,
                   **dict(DESCRIPTION, spatial_dims=3, size=[8, 32, 32]))
    assert str(info.value) == (f"{state_dict_file}: field 'spatial_dims' is 3 but the network's "
                               "first convolution 'features.stem.conv' is 2D")


def test_unknown_option_and_options_for_a_card_are_refused(state_dict_file, tmp_path):
    with pytest.raises(TypeError, match=r"net\.pth: unknown option\(s\) colour; a model file takes"):
        load_model(state_dict_file, colour="red", **DESCRIPTION)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['task'\] for a model card; cards take "
                                        "none"):
        load_model("ct-phase-2d", task="classification")


def test_folder_of_no_known_form_lists_what_was_looked_for(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a model")
    with pytest.raises(ModelCardError) as info:
        load_model(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: this folder is not a model XAIExplain can load; "
                              "looked for card: ")
    assert {"card", "torchscript", "module"} <= {f.kind for f in FORMS}
    for form in FORMS:
        assert f"{form.kind}: {form.looks_for}" in message
    with pytest.raises(ModelCardError, match="this file is not a model XAIExplain can load"):
        find_form(folder / "readme.txt")
    with pytest.raises(FileNotFoundError, match="is neither a file nor a folder"):
        load_model(tmp_path / "missing.pt")


def test_cli_bad_model_files_are_one_line_errors_and_write_nothing(state_dict_file, tmp_path,
                                                                    capsys):
    import SimpleITK as sitk

    from XAIExplainLib import cli

    image = tmp_path / "in.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(2 * 32 * 32, dtype=np.float32)
                                           .reshape(2, 32, 32)), str(image))
    out = tmp_path / "out"
    sidecar = state_dict_file.with_suffix(".json")
    sidecar.write_text(json.dumps({"task": "classification", "spatial_dims": 2,
                                   "classes": ["normal", "lesion"]}))
    status = cli.main(["explain", str(image), "--model", str(state_dict_file), "--method",
                       "saliency", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and err == (
        f"xaiexplain: error: --model {state_dict_file}: {state_dict_file}: is a state dict "
        "(tensors only), which does not say which network the tensors belong to; give "
        "architecture='package.module:ClassName' and architecture_kwargs={...} as options or "
        "in its sidecar JSON\n")
    assert not out.exists()
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    status = cli.main(["explain", str(image), "--model", str(folder), "--method", "saliency",
                       "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(f"xaiexplain: error: --model {folder}: {folder}: this "
                                          "folder is not a model XAIExplain can load; looked for")
    assert not out.exists()
