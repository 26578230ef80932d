"""Issue 20 class 2: a model reaches outside its folder or the machine only with trust.

Before: an nnU-Net checkpoint that was a link to a file outside the result folder loaded
without trust (a card was refused for the same thing), and a card naming a MONAI network
with ``pretrained=True`` / ``pretrained_url`` made MONAI fetch weights into the torch hub
cache. Now one rule (:func:`models.trust.check_inside`) holds for every form, and network
arguments that download need trust. The download tests block sockets and point every cache
at a temporary folder: no connection is tried and nothing appears there.
"""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from Testing.reliability.hostile import model_folder, volume
from XAIExplainLib import cli
from XAIExplainLib.logic.model_catalogue import ModelCatalogue
from XAIExplainLib.models import load_model
from XAIExplainLib.models.errors import UntrustedModelError


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Caches in a temporary folder and sockets that record and refuse every connection."""
    cache = tmp_path / "caches"
    cache.mkdir()
    for name in ("TORCH_HOME", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "MONAI_DATA_DIRECTORY"):
        monkeypatch.setenv(name, str(cache / name.lower()))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(cache / "hub"), raising=False)
    tried = []

    def refuse(self, address, *args, **kwargs):
        tried.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    yield cache, tried
    assert sorted(p.name for p in cache.rglob("*")) == [], "loading wrote into a cache outside the model folder"


def _monai_card(folder: Path, cls: str, kwargs: dict, spatial_dims: int = 2, classes=("a", "b")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    card = {"name": "reach", "task": "classification", "spatial_dims": spatial_dims,
            "input": {"channels": 1, "size": [32] * spatial_dims}, "classes": list(classes),
            "architecture": {"class": cls, "kwargs": kwargs}, "weights": "weights.pt"}
    (folder / "card.json").write_text(json.dumps(card))
    torch.save({"x": torch.zeros(1)}, folder / "weights.pt")  # never read: refused before
    return folder


@pytest.mark.parametrize("cls, kwargs, named", [
    ("monai.networks.nets:DenseNet121", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "pretrained": True},
     "pretrained=True"),
    ("monai.networks.nets:HoVerNet", {"pretrained_url": "https://example.invalid/resnet50.pth"},
     "pretrained_url='https://example.invalid/resnet50.pth'"),
    ("monai.networks.nets:EfficientNetBN", {"model_name": "efficientnet-b0", "spatial_dims": 2, "in_channels": 1,
                                            "num_classes": 2}, "pretrained=True (its default)"),
])
def test_a_card_whose_network_would_download_needs_trust(tmp_path, offline, cls, kwargs, named):
    pytest.importorskip("monai")
    _, tried = offline
    folder = _monai_card(tmp_path / "m", cls, kwargs)
    with pytest.raises(UntrustedModelError, match=rf"card.json: field 'architecture' builds \w+ with .*"
                                                  rf"{named.replace('(', '.').replace(')', '.')}.*would fetch "
                                                  r"weights from the internet"):
        load_model(folder)
    assert "would fetch weights" in ModelCatalogue().trust_needed(str(folder))
    assert tried == []


def test_the_same_network_without_download_loads_offline(tmp_path, offline):
    pytest.importorskip("monai")
    from monai.networks.nets import DenseNet121

    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "pretrained": False,
              "init_features": 4, "growth_rate": 4, "block_config": [1, 1, 1, 1]}
    folder = _monai_card(tmp_path / "m", "monai.networks.nets:DenseNet121", kwargs)
    torch.save(DenseNet121(**kwargs).state_dict(), folder / "weights.pt")
    assert ModelCatalogue().trust_needed(str(folder)) == ""
    assert type(load_model(folder).module).__name__ == "DenseNet121"
    assert offline[1] == []


def test_a_state_dict_file_with_a_downloading_architecture_needs_trust(tmp_path, offline):
    pytest.importorskip("monai")
    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(UntrustedModelError, match="pretrained=True"):
        load_model(tmp_path / "w.pt", task="classification", spatial_dims=2, classes=["a", "b"],
                   architecture="monai.networks.nets:DenseNet121",
                   architecture_kwargs={"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "pretrained": True})


# ---- files outside the folder: one rule for every form ------------------------------------------

@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    pytest.importorskip("nnunetv2")
    from Testing.support.nnunet_folders import write_nnunet_folder

    return write_nnunet_folder(tmp_path_factory.mktemp("nn") / "nnUNetTrainer__nnUNetPlans__3d_fullres")


def _linked_copy(nnunet: Path, tmp_path: Path, name: str) -> Path:
    """A copy of the nnU-Net folder whose ``name`` is a link to the same file outside it."""
    folder = tmp_path / "linked"
    shutil.copytree(nnunet, folder)
    outside = tmp_path / "elsewhere" / Path(name).name
    outside.parent.mkdir()
    shutil.move(folder / name, outside)
    (folder / name).symlink_to(outside)
    return folder


@pytest.mark.parametrize("name", ["fold_0/checkpoint_final.pth", "plans.json", "dataset.json"])
def test_an_nnunet_file_linked_from_outside_the_folder_needs_trust(nnunet, tmp_path, offline, name):
    folder = _linked_copy(nnunet, tmp_path, name)
    field = "checkpoint" if name.endswith(".pth") else name
    pattern = rf"linked: {field} .*{Path(name).name} \(it leads to .*elsewhere.{Path(name).name}\) lies outside the model folder"
    with pytest.raises(UntrustedModelError, match=pattern):
        load_model(folder)
    assert "lies outside the model folder" in ModelCatalogue().trust_needed(str(folder))
    assert load_model(folder, trust=True).kind == "nnunet"


def test_the_command_line_refuses_a_linked_checkpoint_without_trust(nnunet, tmp_path, capsys):
    folder = _linked_copy(nnunet, tmp_path, "fold_0/checkpoint_final.pth")
    sitk.WriteImage(volume((12, 20, 20)), str(tmp_path / "ct.nrrd"))
    status = cli.main(["explain", str(tmp_path / "ct.nrrd"), "--model", str(folder), "-o", str(tmp_path / "out"),
                       "--method", "gradcam", "--quiet"])
    err = capsys.readouterr().err
    assert status != 0 and "lies outside the model folder" in err and "--trust-model" in err


def test_a_bare_weights_file_that_links_out_of_its_folder_needs_trust(tmp_path):
    real = model_folder(tmp_path / "real") / "weights.pt"
    folder = tmp_path / "download"
    folder.mkdir()
    (folder / "model.pt").symlink_to(real)
    (folder / "model.json").write_text(json.dumps({"task": "classification", "spatial_dims": 2, "classes": ["a", "b"],
                                                   "architecture": json.loads((real.parent / "card.json").read_text())
                                                   ["architecture"]}))
    with pytest.raises(UntrustedModelError, match=r"model.json: weights file .*model.pt \(it leads to .*real.weights"
                                                  r".pt\) lies outside the model folder"):
        load_model(folder / "model.pt")
    assert load_model(folder / "model.pt", trust=True).kind == "module"


def test_an_hd_bet_fold_linked_out_of_its_folder_needs_trust(tmp_path, monkeypatch):
    from XAIExplainLib.models import hd_bet

    outside = tmp_path / "elsewhere" / "0.model"
    outside.parent.mkdir()
    outside.write_bytes(b"not read")
    folder = tmp_path / "package" / "models"
    folder.mkdir(parents=True)
    (folder / "0.model").symlink_to(outside)
    monkeypatch.setattr(hd_bet, "weights_folder", lambda: folder)
    with pytest.raises(UntrustedModelError, match=r"HD-BET .*fold 0 weights .*0.model \(it leads to .*elsewhere.0.model"
                                                  r"\) lies outside the model folder"):
        hd_bet.check_files(1)
    assert hd_bet.check_files(1, trust=True) == (0,)


def test_loading_each_form_writes_no_cache_and_opens_no_socket(nnunet, tmp_path, offline):
    assert load_model(model_folder(tmp_path / "card")).kind == "card"
    assert load_model(nnunet).kind == "nnunet"


def test_a_cohort_worker_refuses_a_linked_checkpoint_without_trust(nnunet, tmp_path):
    """What each Dask worker runs to load the model (``run_plan.load_run``), with the spec's trust."""
    from XAIExplainLib.cli.errors import UserError
    from XAIExplainLib.cli.run_plan import ExplainSettings
    from XAIExplainLib.cli.run_plan import load_run

    folder = _linked_copy(nnunet, tmp_path, "fold_0/checkpoint_final.pth")
    with pytest.raises(UserError, match="lies outside the model folder"):
        load_run(ExplainSettings(model=str(folder), methods=("gradcam",), device="cpu"), tmp_path / "out")
    job = load_run(ExplainSettings(model=str(folder), methods=("gradcam",), device="cpu", trust=True), tmp_path / "out")
    assert job.model.kind == "nnunet"


def test_the_download_rule_reads_given_values_defaults_and_nested_options():
    pytest.importorskip("monai")
    from monai.networks.nets import DenseNet121, EfficientNetBN, Transchex

    from XAIExplainLib.models.trust import fetch_arguments

    assert fetch_arguments(DenseNet121, {"pretrained": False}) == []
    assert fetch_arguments(DenseNet121, {"pretrained": True}) == ["pretrained=True"]
    assert fetch_arguments(EfficientNetBN, {"model_name": "efficientnet-b0", "pretrained": False}) == []
    assert fetch_arguments(EfficientNetBN, {"model_name": "efficientnet-b0"}) == ["pretrained=True (its default)"]
    assert fetch_arguments(DenseNet121, {"extra": {"hub_dir": "/tmp/x"}}) == ["hub_dir='/tmp/x'"]
    assert any("the class itself" in reason for reason in fetch_arguments(Transchex, {}))


def test_a_bundle_whose_network_would_download_says_so_in_its_refusal(tmp_path, offline):
    folder = tmp_path / "bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps({"name": "b", "network_data_format": {}}))
    network = {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
               "pretrained": True}
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": network, "preprocessing": {}}))
    torch.save({"x": torch.zeros(1)}, folder / "models" / "model.pt")
    with pytest.raises(UntrustedModelError, match=r"inference.json: a MONAI bundle config instantiates .*; its "
                                                  r"network_def also sets pretrained=True, which would download"):
        load_model(folder)
    assert "network_def also sets pretrained=True" in ModelCatalogue().trust_needed(str(folder))
    assert offline[1] == []
