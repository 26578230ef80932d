"""Issue 12 items 1-3: what a model file may make this process do without trust=True.

Each test fails on the code before the trust rules: there TorchScript ran at load
time, a bare name picked a folder of that name in the working directory, and a
card's architecture module was imported before it was checked.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from XAIExplainLib.models import UntrustedModelError, bundled_models_dir, load_model
from XAIExplainLib.models.architectures import SliceClassifier

ARCH = "XAIExplainLib.models.architectures:SliceClassifier"
KWARGS = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8, 8]}


def _network() -> SliceClassifier:
    torch.manual_seed(0)
    return SliceClassifier(**KWARGS).eval()


def _card(weights, architecture=ARCH, **changes) -> dict:
    card = {"name": "tiny", "task": "classification", "spatial_dims": 2, "slice_axis": 0,
            "input": {"channels": 1, "size": [32, 32]}, "classes": ["a", "b"],
            "weights": weights}
    if architecture is not None:
        card["architecture"] = {"class": architecture, "kwargs": dict(KWARGS)}
    card.update(changes)
    return card


def _model_folder(folder: Path, card: dict, weights_name: str | None = "weights.safetensors") -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if weights_name is not None:
        save_file(_network().state_dict(), str(folder / weights_name))
    (folder / "card.json").write_text(json.dumps(card))
    return folder


# ---- item 1: TorchScript is code ---------------------------------------------------------------

class _WritesAFile(torch.nn.Module):
    """A classifier whose forward creates ``target`` through torch.from_file(shared=True)."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.head = torch.nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        touched = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8)
        return self.head(x).mean(dim=(2, 3)) + touched.sum().float() * 0.0


def _scripted_file_writer(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "written_by_the_model.bin"
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(_WritesAFile(str(target))), str(path))
    return path, target


def test_torchscript_file_needs_trust_and_does_not_run_without_it(tmp_path):
    path, target = _scripted_file_writer(tmp_path)
    options = dict(task="classification", spatial_dims=2, classes=["a", "b"], size=[8, 8])
    with pytest.raises(UntrustedModelError) as info:
        load_model(path, **options)
    assert str(info.value).startswith(f"{path}: is a TorchScript archive, i.e. a program")
    assert "torch.from_file" in str(info.value) and "trust=True (--trust-model)" in str(info.value)
    assert not target.exists()  # nothing ran
    loaded = load_model(path, trust=True, **options)
    assert loaded.kind == "torchscript" and loaded.scripted
    assert target.exists()  # with trust the program ran its test pass: the refusal was the guard


def test_torchscript_in_a_card_needs_trust(tmp_path):
    folder = tmp_path / "scripted"
    folder.mkdir()
    target = folder / "written.bin"
    torch.jit.save(torch.jit.script(_WritesAFile(str(target))), str(folder / "model.ts"))
    card = _card("model.ts", architecture=None, input={"channels": 1, "size": [8, 8]})
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(UntrustedModelError, match=r"model\.ts: is a TorchScript archive"):
        load_model(folder)
    assert not target.exists()
    assert load_model(folder, trust=True).scripted


# ---- item 2: a bare name is a model name, a path is a path ---------------------------------------

def test_bare_name_never_means_a_folder_in_the_working_directory(tmp_path, monkeypatch):
    bundled = sorted(p.name for p in bundled_models_dir().iterdir() if (p / "card.json").is_file())
    name = bundled[0]
    monkeypatch.chdir(tmp_path)
    impostor = _model_folder(tmp_path / name, _card("weights.safetensors", name="impostor"))
    loaded = load_model(name)
    assert loaded.card.name == name
    assert loaded.source == (bundled_models_dir() / name).resolve()
    local = load_model(f"./{name}")
    assert local.card.name == "impostor" and local.source == impostor.resolve()


def test_bare_name_of_a_local_folder_says_how_to_load_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _model_folder(tmp_path / "my-model", _card("weights.safetensors"))
    with pytest.raises(FileNotFoundError) as info:
        load_model("my-model")
    message = str(info.value)
    assert message.startswith("no model named 'my-model'; bundled and configured models: ")
    assert "write ./my-model to load that path" in message
    assert load_model("./my-model").card.name == "tiny"


def test_loaded_model_records_resolved_path_and_weights_hash(tmp_path):
    import hashlib

    folder = _model_folder(tmp_path / "m", _card("weights.safetensors"))
    loaded = load_model(folder)
    digest = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    assert loaded.kind == "card" and loaded.source == folder.resolve()
    assert loaded.weights_sha256 == digest


# ---- item 3: architectures from allowed libraries only; files inside the folder ------------------

def test_architecture_module_outside_the_allow_list_is_not_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    (tmp_path / "arch_with_side_effect.py").write_text(
        "import pathlib, torch\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x).mean(dim=(2, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "arch_with_side_effect", raising=False)
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    card = _card("weights.safetensors", architecture="arch_with_side_effect:Net")
    _model_folder(folder, card, weights_name=None)
    torch.manual_seed(0)
    net = torch.nn.Module()
    net.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    save_file(net.state_dict(), str(folder / "weights.safetensors"))
    with pytest.raises(UntrustedModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'card.json'}: field 'architecture.class' names module "
                              "'arch_with_side_effect', which is outside the modules a model may "
                              "use without trust (XAIExplainLib, torch.nn, monai.networks, "
                              "dynamic_network_architectures, nnunetv2)")
    assert not marker.exists() and "arch_with_side_effect" not in sys.modules
    assert type(load_model(folder, trust=True).module).__name__ == "Net"
    assert marker.exists()


def test_standard_library_module_named_as_architecture_is_refused_before_import(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.delitem(sys.modules, "this", raising=False)  # "import this" prints a poem
    folder = _model_folder(tmp_path / "m", _card("weights.safetensors", architecture="this:Foo"))
    with pytest.raises(UntrustedModelError, match="names module 'this', which is outside"):
        load_model(folder)
    assert "this" not in sys.modules


def test_allowed_libraries_need_no_trust(tmp_path):
    folder = _model_folder(tmp_path / "m", _card("weights.safetensors"))
    assert isinstance(load_model(folder).module, SliceClassifier)
    from XAIExplainLib.models.trust import architecture_allowed

    assert architecture_allowed("monai.networks.nets") and architecture_allowed("torch.nn")
    assert architecture_allowed("dynamic_network_architectures.architectures.unet")
    assert not architecture_allowed("torch") and not architecture_allowed("torch.nnx")
    assert not architecture_allowed("monai.apps") and not architecture_allowed("os")


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_weights_outside_the_model_folder_need_trust(tmp_path, where):
    from safetensors.torch import save_file

    outside = tmp_path / "elsewhere" / "weights.safetensors"
    outside.parent.mkdir()
    save_file(_network().state_dict(), str(outside))
    folder = tmp_path / "model"
    folder.mkdir()
    if where == "parent":
        weights = "../elsewhere/weights.safetensors"
    elif where == "absolute":
        weights = str(outside)
    else:
        (folder / "link.safetensors").symlink_to(outside)
        weights = "link.safetensors"
    _model_folder(folder, _card(weights), weights_name=None)
    with pytest.raises(UntrustedModelError) as info:
        load_model(folder)
    assert str(info.value).startswith(f"{folder / 'card.json'}: weights file ")
    assert f"lies outside the model folder {folder}; a model's files must be inside its folder" \
        in str(info.value)
    assert isinstance(load_model(folder, trust=True).module, SliceClassifier)
