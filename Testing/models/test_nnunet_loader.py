"""Loading nnU-Net v2 folders: detection, folds and checkpoints, untrusted files, and clear errors on bad folders."""
import json
import shutil
import sys

import pytest
import torch

pytest.importorskip("nnunetv2")

from Testing.support.nnunet_folders import RESIDUAL, write_nnunet_folder  # noqa: E402
from XAIExplainLib.models import load_model  # noqa: E402
from XAIExplainLib.models.errors import ModelCardError, UntrustedModelError, WeightsError  # noqa: E402
from XAIExplainLib.models.nnunet import is_nnunet_folder, load_nnunet  # noqa: E402


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    return write_nnunet_folder(tmp_path_factory.mktemp("nn") / "nnUNetTrainer__nnUNetPlans__3d_fullres", folds=(0, 1))


def _listing(path):
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*"))


def test_load_model_recognises_the_folder_and_builds_nnunets_network(two_folds):
    model = load_model(two_folds)
    assert model.kind == "nnunet" and is_nnunet_folder(two_folds) and not is_nnunet_folder(two_folds / "fold_0")
    assert model.card.class_names == ["background", "organ", "lesion"] and model.card.output_activation == "softmax"
    assert model.card.input.patch_size == (16, 24, 24) and model.card.spatial_dims == 3
    assert len(model.ensemble) == 1  # fold 1 next to fold 0
    assert type(model.module).__name__ == "PlainConvUNet" and not model.module.training
    assert model.module.decoder.deep_supervision is False
    # the same weights nnU-Net's checkpoint holds, fold by fold
    for fold, module in zip((0, 1), (model.module,) + model.ensemble):
        saved = torch.load(two_folds / f"fold_{fold}" / "checkpoint_final.pth", weights_only=False)["network_weights"]
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, saved[name]), (fold, name)
    layers = dict(model.module.named_modules())
    assert model.card.target_layers.default == "decoder.stages.0" and "decoder.stages.0" in layers
    assert {"decoder.stages.1", "encoder.stages.2"} <= set(model.card.target_layers.suggested)


def test_folds_and_checkpoint_options(two_folds, tmp_path):
    one = load_model(two_folds, folds=(1,), checkpoint="checkpoint_final.pth")
    saved = torch.load(two_folds / "fold_1" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    assert one.ensemble == () and all(torch.equal(v, saved[k]) for k, v in one.module.state_dict().items())
    best = write_nnunet_folder(tmp_path / "best", folds=(0,), checkpoint="checkpoint_best.pth")
    assert load_nnunet(best, checkpoint="checkpoint_best.pth").card.weights.file.name == "checkpoint_best.pth"
    with pytest.raises(FileNotFoundError, match=r"no fold_N/checkpoint_final.pth found .*checkpoint_best.pth"):
        load_nnunet(best)
    with pytest.raises(FileNotFoundError, match=r"fold_3.checkpoint_final.pth does not exist: fold 3 has no "
                                                r"checkpoint_final.pth \(folds with it: 0, 1\)"):
        load_nnunet(two_folds, folds=(0, 3))
    with pytest.raises(ValueError, match="folds must be fold numbers"):
        load_nnunet(two_folds, folds=(-1,))
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['fold'\] for an nnU-Net folder; it takes folds="):
        load_model(two_folds, fold=0)


def test_region_based_labels_are_sigmoid_channels(tmp_path):
    model = load_nnunet(write_nnunet_folder(tmp_path / "regions", regions=True, network=RESIDUAL))
    assert model.card.output_activation == "sigmoid" and model.card.class_names == ["organ", "lesion"]
    assert type(model.module).__name__ == "ResidualEncoderUNet"
    assert model.module.decoder.seg_layers[-1].out_channels == 2


def test_missing_plans_is_named_and_nothing_is_written(two_folds, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(two_folds, broken)
    (broken / "plans.json").unlink()
    before = _listing(broken)
    with pytest.raises(FileNotFoundError, match=r"broken.plans.json is missing: an nnU-Net v2 trained-model folder"):
        load_nnunet(broken)
    assert _listing(broken) == before


def test_weights_that_do_not_fit_the_plans(two_folds, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(two_folds, other)
    plans = json.loads((other / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [4, 8, 12]
    (other / "plans.json").write_text(json.dumps(plans))
    before = _listing(other)
    with pytest.raises(WeightsError, match=r"fold_0.checkpoint_final.pth: weights do not fit the architecture "
                                           r"PlainConvUNet \(the network plans.json's configuration '3d_fullres' "
                                           r"builds.*shape mismatch"):
        load_nnunet(other)
    assert _listing(other) == before


def test_checkpoint_needing_full_unpickling_is_refused_unless_trusted(two_folds, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(two_folds, folder)
    data = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    data["logging"]["callback"] = _Picklable()
    torch.save(data, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(UntrustedModelError, match=r"fold_0.checkpoint_final.pth: this checkpoint holds pickled "
                                                  r"Python objects \(.*_Picklable\).*trust=True"):
        load_nnunet(folder, folds=(0,))
    assert load_nnunet(folder, folds=(0,), trust=True).kind == "nnunet"


def test_architecture_outside_the_network_libraries_needs_trust(two_folds, tmp_path):
    folder = tmp_path / "foreign"
    shutil.copytree(two_folds, folder)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "builtins.print"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(UntrustedModelError, match=r"plans.json: architecture 'arch_kwargs.nonlin' names module "
                                                  r"'builtins', which is outside the modules a model may use "
                                                  r"without trust \(torch.nn, dynamic_network_architectures\)"):
        load_nnunet(folder)


def test_folds_of_different_configurations_contradict(two_folds, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(two_folds, folder)
    data = torch.load(folder / "fold_1" / "checkpoint_final.pth", weights_only=False)
    data["init_args"]["configuration"] = "3d_lowres"
    torch.save(data, folder / "fold_1" / "checkpoint_final.pth")
    with pytest.raises(ModelCardError, match=r"fold_1.checkpoint_final.pth: trained as nnUNetTrainer / 3d_lowres, "
                                             r"but fold 0 as nnUNetTrainer / 3d_fullres"):
        load_nnunet(folder)


def test_trainer_variant_is_found_without_importing_every_variant(tmp_path):
    folder = write_nnunet_folder(tmp_path / "variant", trainer="nnUNetTrainerNoMirroring")
    model = load_nnunet(folder)
    assert model.kind == "nnunet" and "torchvision" not in sys.modules


def test_missing_nnunetv2_names_the_extra(two_folds, monkeypatch):
    for name in [m for m in sys.modules if m == "nnunetv2" or m.startswith("nnunetv2.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nnunetv2", None)
    with pytest.raises(ImportError, match=r'needs the nnunetv2 package \(pip install "\.\[nnunet\]" in the XAIExplain checkout'):
        load_nnunet(two_folds)


class _Picklable:
    """An arbitrary class: unpickling it means importing and calling this module's code."""
