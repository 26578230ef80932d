"""Issue 20 class 1: a name from a model file never runs code without trust.

nnU-Net's ``pydoc.locate`` walked ``torch.nn.modules.module.torch.os.system`` (which starts
with ``torch.nn.``) to ``os.system`` and building the network ran the plans' command; the
logic's ``trustNeeded`` answered "no trust needed" and ran it while answering. Every test
here writes a payload that would create a marker file, and checks the marker never appears
through the API, the command line and the logic.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("nnunetv2")

from Testing.reliability.hostile import ARCH, model_folder  # noqa: E402
from Testing.support.nnunet_folders import write_nnunet_folder  # noqa: E402
from XAIExplainLib import cli  # noqa: E402
from XAIExplainLib.logic.model_catalogue import ModelCatalogue  # noqa: E402
from XAIExplainLib.models import load_model  # noqa: E402
from XAIExplainLib.models.errors import ModelCardError, UntrustedModelError  # noqa: E402

WALK = "torch.nn.modules.module.torch.os.system"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return write_nnunet_folder(tmp_path_factory.mktemp("nn") / "nnUNetTrainer__nnUNetPlans__3d_fullres")


def _hostile(clean: Path, tmp_path: Path, key: str, name, marker: Path, **extra) -> Path:
    """A copy of ``clean`` whose plans name ``name`` as ``key`` with a command that touches ``marker``."""
    folder = tmp_path / "hostile"
    shutil.copytree(clean, folder)
    plans = json.loads((folder / "plans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    if key == "network_class_name":
        architecture[key] = name
    else:
        architecture["arch_kwargs"][key] = name
        architecture["arch_kwargs"][f"{key}_kwargs"] = {"command": f"touch {marker}"}
    for field, value in extra.items():
        plans["configurations"]["3d_fullres"][field] = value
    (folder / "plans.json").write_text(json.dumps(plans))
    return folder


@pytest.mark.parametrize("key", ["nonlin", "dropout_op", "norm_op"])
def test_an_attribute_walk_in_plans_runs_nothing_through_load_model(clean, tmp_path, key):
    marker = tmp_path / "MARKER"
    folder = _hostile(clean, tmp_path, key, WALK, marker)
    with pytest.raises(ModelCardError, match=rf"plans.json: architecture 'arch_kwargs.{key}' "
                                             rf"'{WALK}': cannot import module 'torch.nn.modules.module.torch.os'"):
        load_model(folder)
    with pytest.raises(ModelCardError, match=rf"arch_kwargs.{key}"):
        load_model(folder, trust=True)  # trust allows other modules, never a walk past one attribute
    assert not marker.exists()


@pytest.mark.parametrize("name, message", [
    ("torch.nn.modules.module.torch", r"'torch.nn.modules.module.torch' is not a torch.nn.Module subclass "
                                      r"\(it is a module\)"),
    ("torch.nn.functional.relu", r"is not a torch.nn.Module subclass \(it is a function\)"),
    ("torch.nn.modules.module.__builtins__", r"must name a class as 'package.module:Class'"),
    ("os.system", r"names module 'os', which is outside the modules a model may use without trust"),
])
def test_other_names_of_things_that_are_not_layers_are_refused(clean, tmp_path, name, message):
    marker = tmp_path / "MARKER"
    with pytest.raises((ModelCardError, UntrustedModelError), match=message):
        load_model(_hostile(clean, tmp_path, "nonlin", name, marker))
    assert not marker.exists()


def test_the_network_class_name_is_resolved_and_kind_checked(clean, tmp_path):
    marker = tmp_path / "MARKER"
    folder = _hostile(clean, tmp_path, "network_class_name", "dynamic_network_architectures.architectures.unet.torch",
                      marker)
    with pytest.raises(ModelCardError, match=r"'network_class_name' 'dynamic_network_architectures.architectures.unet"
                                             r".torch' is not a torch.nn.Module subclass \(it is a module\)"):
        load_model(folder)
    folder = tmp_path / "outside"
    _hostile(clean, tmp_path / "o", "network_class_name", "torch.nn.Conv3d", marker).rename(folder)
    with pytest.raises(UntrustedModelError, match=r"'network_class_name' names module 'torch.nn', which is outside "
                                                  r"the modules a model may use without trust "
                                                  r"\(dynamic_network_architectures\)"):
        load_model(folder)


def test_the_command_line_refuses_the_walk_without_running_it(clean, tmp_path, capsys):
    from Testing.reliability.hostile import volume
    import SimpleITK as sitk

    marker = tmp_path / "MARKER"
    folder = _hostile(clean, tmp_path, "nonlin", WALK, marker)
    sitk.WriteImage(volume((12, 20, 20)), str(tmp_path / "ct.nrrd"))
    status = cli.main(["explain", str(tmp_path / "ct.nrrd"), "--model", str(folder), "-o", str(tmp_path / "out"),
                       "--method", "gradcam", "--quiet"])
    assert status != 0 and not marker.exists()
    assert "cannot import module 'torch.nn.modules.module.torch.os'" in capsys.readouterr().err


def test_the_logic_refuses_the_walk_without_running_it(clean, tmp_path):
    marker = tmp_path / "MARKER"
    folder = _hostile(clean, tmp_path, "dropout_op", WALK, marker)
    with pytest.raises(ModelCardError, match="cannot import module 'torch.nn.modules.module.torch.os'"):
        ModelCatalogue().get(str(folder))
    with pytest.raises(ModelCardError, match="cannot import module 'torch.nn.modules.module.torch.os'"):
        ModelCatalogue().get(str(folder), trust=True)
    assert not marker.exists()


def test_asking_whether_trust_is_needed_runs_nothing(clean, tmp_path, monkeypatch):
    """The walk, a payload module outside the allow-list, and a clean folder: no network is built for any."""
    import XAIExplainLib.models.nnunet.loader as loader

    built = []
    monkeypatch.setattr(loader, "build_network", lambda *a, **k: built.append(a) or pytest.fail("built a network"))
    marker = tmp_path / "MARKER"
    catalogue = ModelCatalogue()
    assert catalogue.trust_needed(str(_hostile(clean, tmp_path, "nonlin", WALK, marker))) == ""
    payload = tmp_path / "payload_layers.py"
    payload.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
                       "import torch\nclass Act(torch.nn.ReLU):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "payload_layers", raising=False)
    foreign = tmp_path / "foreign"
    _hostile(clean, tmp_path / "f", "nonlin", "payload_layers.Act", marker).rename(foreign)
    reason = catalogue.trust_needed(str(foreign))
    assert reason.startswith(f"{foreign / 'plans.json'}: architecture 'arch_kwargs.nonlin' names module "
                             "'payload_layers', which is outside the modules")
    assert "payload_layers" not in sys.modules and not marker.exists()
    assert catalogue.trust_needed(str(clean)) == "" and built == []


def test_trust_needed_for_a_card_builds_no_network(tmp_path, monkeypatch):
    from XAIExplainLib.models.architectures import SliceClassifier

    folder = model_folder(tmp_path / "m")
    calls = []
    original = SliceClassifier.__init__
    monkeypatch.setattr(SliceClassifier, "__init__", lambda self, *a, **k: calls.append(k) or original(self, *a, **k))
    assert ModelCatalogue().trust_needed(str(folder)) == "" and calls == []
    card = json.loads((folder / "card.json").read_text())
    card["weights"] = {"file": "weights.pt", "format": "pickle"}
    (folder / "card.json").write_text(json.dumps(card))
    assert "is a pickled full module" in ModelCatalogue().trust_needed(str(folder)) and calls == []


@pytest.mark.parametrize("target, message", [
    ("torch.nn:modules.module.torch.os.system", r"field 'architecture.class' must look like 'package.module:"
                                                r"ClassName'"),
    ("torch.nn.modules.module:torch", r"'torch.nn.modules.module:torch' is not a torch.nn.Module subclass \(it is a module\)"),
    ("torch.nn.functional:relu", r"is not a torch.nn.Module subclass \(it is a function\)"),
    ("torch.nn.modules.module.torch.os:system", r"cannot import module 'torch.nn.modules.module.torch.os'"),
])
def test_card_architecture_names_go_through_the_same_resolver(tmp_path, target, message):
    folder = model_folder(tmp_path / "m")
    card = json.loads((folder / "card.json").read_text())
    card["architecture"]["class"] = target
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=message):
        load_model(folder)


def test_a_state_dict_file_architecture_option_goes_through_the_same_resolver(tmp_path):
    folder = model_folder(tmp_path / "m")
    options = dict(task="classification", spatial_dims=2, classes=["a", "b"])
    with pytest.raises(ModelCardError, match=r"is not a torch.nn.Module subclass \(it is a function\)"):
        load_model(folder / "weights.pt", architecture="torch.nn.functional:relu", **options)
    kwargs = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8, 8], "spatial_dims": 2}
    loaded = load_model(folder / "weights.pt", architecture=ARCH, architecture_kwargs=kwargs, **options)
    assert type(loaded.module).__name__ == "SliceClassifier"


@pytest.mark.parametrize("field, name", [
    ("preprocessor_name", "save_json"),  # helpers nnunetv2's modules import, found by nnU-Net's name search
    ("normalization_schemes", ["save_json"]),
    ("resampling_fn_data", "deepcopy"),
    ("resampling_fn_probabilities", "map_coordinates"),
])
def test_names_nnunet_looks_up_itself_are_kind_checked_before_use(clean, tmp_path, field, name):
    folder = _hostile(clean, tmp_path, "nonlin", "torch.nn.LeakyReLU", tmp_path / "MARKER", **{field: name})
    shown = name[0] if isinstance(name, list) else name
    with pytest.raises(ModelCardError, match=rf"plans.json: .*{shown}.* is not (an nnU-Net|one of nnU-Net's)"):
        load_model(folder)


def test_a_trainer_name_that_is_not_a_trainer_is_refused(clean, tmp_path):
    folder = tmp_path / "trainer"
    shutil.copytree(clean, folder)
    data = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    for name, message in [("os.system", "is not a class name"), ("DefaultPreprocessor", "does not define")]:
        data["trainer_name"] = name
        torch.save(data, folder / "fold_0" / "checkpoint_final.pth")
        with pytest.raises(ModelCardError, match=message):
            load_model(folder)


def test_the_resolver_takes_exactly_one_attribute_after_an_allowed_module():
    from torch import nn

    from XAIExplainLib.models.trust import resolve_class

    assert resolve_class("torch.nn.LeakyReLU", nn.Module, trust=False, where="w", field="f") is nn.LeakyReLU
    assert resolve_class("torch.nn:LeakyReLU", nn.Module, trust=False, where="w", field="f") is nn.LeakyReLU
    with pytest.raises(UntrustedModelError, match="names module 'torch'"):
        resolve_class("torch.nn", nn.Module, trust=False, where="w", field="f")  # module torch, attribute nn
    with pytest.raises(ModelCardError, match="must be a class name"):
        resolve_class(["torch.nn.ReLU"], nn.Module, trust=False, where="w", field="f")


def test_a_cohort_worker_loading_the_model_runs_nothing(clean, tmp_path):
    """What each Dask worker runs (``run_plan.load_run`` loads the model there); the parent refuses first too."""
    from XAIExplainLib.cli.run_plan import ExplainSettings
    from XAIExplainLib.cli.run_plan import load_run
    from XAIExplainLib.cli.errors import UserError

    marker = tmp_path / "MARKER"
    folder = _hostile(clean, tmp_path, "nonlin", WALK, marker)
    with pytest.raises(UserError, match="cannot import module 'torch.nn.modules.module.torch.os'"):
        load_run(ExplainSettings(model=str(folder), methods=("gradcam",), device="cpu"), tmp_path / "out")
    assert not marker.exists()
