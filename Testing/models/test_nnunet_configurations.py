"""nnU-Net v2 configurations beyond 3d_fullres, against nnU-Net's own predictor: trainer variants as
TotalSegmentator names its result folders, fold_all, checkpoint_best.pth, a hundred labels, the ``2d``
configuration (slice-wise windows) and the memory budget on each."""
import importlib
import json
import shutil
import sys

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("nnunetv2")

from Testing.support.nnunet_folders import (ct_image, dataset_json, nnunet_prediction, write_cascade,  # noqa: E402
                                           write_nnunet_folder)
from XAIExplainLib.engine import SegmentationTarget  # noqa: E402
from XAIExplainLib.models import explain_image, load_model, predict_image  # noqa: E402
from XAIExplainLib.models.errors import ModelCardError  # noqa: E402

#: Where nnU-Net defines the variants TotalSegmentator's folders name; imported directly by the test, so the
#: reference predictor gets the trainer class without nnU-Net's search (which imports torchvision).
VARIANTS = {
    "nnUNetTrainerNoMirroring": "variants.data_augmentation.nnUNetTrainerNoMirroring",
    "nnUNetTrainer_4000epochs_NoMirroring": "variants.training_length.nnUNetTrainer_Xepochs_NoMirroring",
    "nnUNetTrainerNoDeepSupervision": "variants.network_architecture.nnUNetTrainerNoDeepSupervision",
}
PLANE = dict(configuration="2d", patch=(24, 24), spacing=(1.0, 1.0), strides=((1, 1), (2, 2), (2, 2)),
             kernels=((3, 3), (3, 3), (3, 3)))


@pytest.fixture(autouse=True, scope="module")
def _threads(two_torch_threads):
    yield


@pytest.fixture
def variant_lookup(monkeypatch):
    """nnUNetPredictor finds trainers by importing every trainer module; give it the class directly."""
    from nnunetv2.inference import predict_from_raw_data

    def find(name):
        module = importlib.import_module(f"nnunetv2.training.nnUNetTrainer.{VARIANTS[name]}")
        return getattr(module, name)

    monkeypatch.setattr(predict_from_raw_data, "recursive_find_trainer_class_by_name", find)


def _hundred_labels() -> dict:
    dataset = dataset_json()
    dataset["labels"] = {"background": 0, **{f"structure_{v:03d}": v for v in range(1, 101)}}
    return dataset


@pytest.fixture(scope="module")
def totalsegmentator(tmp_path_factory):
    """A result folder laid out and named as TotalSegmentator ships them: variant trainer, fold_all, 100 labels."""
    root = tmp_path_factory.mktemp("ts") / "Dataset291_TotalSegmentator_part1_organs_1559subj"
    return write_nnunet_folder(root / "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres",
                               folds=("all",), trainer="nnUNetTrainer_4000epochs_NoMirroring",
                               dataset=_hundred_labels(), features=(4, 8, 8))


@pytest.fixture(scope="module")
def image():
    return ct_image()


def test_totalsegmentator_folder_predicts_as_nnunet(totalsegmentator, image, variant_lookup):
    model = load_model(totalsegmentator)
    assert "torchvision" not in sys.modules
    assert model.card.extra["nnunet"]["folds"] == ["all"] and model.card.extra["nnunet"]["trainer"] == \
        "nnUNetTrainer_4000epochs_NoMirroring"
    assert len(model.card.class_names) == 101 and model.card.class_names[100] == "structure_100"
    expected, _ = nnunet_prediction(totalsegmentator, image, ("all",))
    got = sitk.GetArrayFromImage(predict_image(model, image, device="cpu"))
    assert len(np.unique(expected)) > 3 and (got == expected).mean() >= 0.99
    result = explain_image(model, image, "gradcam", target="structure_042", device="cpu")
    assert result.target.class_index == 42


@pytest.mark.parametrize("trainer", ["nnUNetTrainerNoMirroring", "nnUNetTrainerNoDeepSupervision"])
def test_trainer_variants_and_best_checkpoint(tmp_path, image, trainer, variant_lookup):
    folder = write_nnunet_folder(tmp_path / f"{trainer}__nnUNetPlans__3d_fullres", folds=(0,), trainer=trainer,
                                 checkpoint="checkpoint_best.pth")
    model = load_model(folder, checkpoint="checkpoint_best.pth")
    assert model.card.weights.file.name == "checkpoint_best.pth" and "torchvision" not in sys.modules
    expected, _ = nnunet_prediction(folder, image, (0,), checkpoint="checkpoint_best.pth")
    got = sitk.GetArrayFromImage(predict_image(model, image, device="cpu"))
    assert (got == expected).mean() >= 0.99


def test_fold_all_is_used_only_without_numbered_folds(tmp_path):
    folder = write_nnunet_folder(tmp_path / "both", folds=(0, "all"))
    assert load_model(folder).card.extra["nnunet"]["folds"] == [0]  # nnU-Net's auto-detection
    assert load_model(folder, folds=("all",)).card.extra["nnunet"]["folds"] == ["all"]
    assert load_model(folder, folds="all").card.extra["nnunet"]["folds"] == ["all"]


def test_unknown_trainer_is_named_without_a_search_that_imports(tmp_path):
    folder = write_nnunet_folder(tmp_path / "nnUNetTrainerFromElsewhere__nnUNetPlans__3d_fullres",
                                 trainer="nnUNetTrainerFromElsewhere")
    before = set(sys.modules)
    with pytest.raises(ModelCardError, match=r"trained with trainer 'nnUNetTrainerFromElsewhere', which this "
                                             r"nnunetv2 installation does not define"):
        load_model(folder)
    assert not {m for m in set(sys.modules) - before if m.startswith("nnunetv2.training.nnUNetTrainer.variants")}


# ---- 2d ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plane_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("nn2d") / "Dataset999_Tiny"
    return {"identity": write_nnunet_folder(root / "nnUNetTrainer__nnUNetPlans__2d", **PLANE),
            "transposed": write_nnunet_folder(root / "transposed" / "nnUNetTrainer__nnUNetPlans__2d",
                                              transpose=(2, 0, 1), folds=(0, 1), **PLANE)}


@pytest.mark.parametrize("case", ["identity", "transposed"])
def test_2d_prediction_equals_nnunets_predictor(plane_folders, image, case):
    folder = plane_folders[case]
    folds = (0,) if case == "identity" else (0, 1)
    expected, probabilities = nnunet_prediction(folder, image, folds)
    model = load_model(folder)
    assert model.card.spatial_dims == 2 and type(model.module.encoder.stages[0][0].convs[0].conv).__name__ == \
        "Conv2d"
    result = explain_image(model, image, ["gradcam"], device="cpu")
    labels = sitk.GetArrayFromImage(result.prediction)
    assert len(np.unique(expected)) > 1
    assert (labels == expected).mean() >= 0.999
    prepared = model.pipeline.prepare(image)
    from XAIExplainLib.models.pipeline import run_networks

    _, logits = run_networks(model, prepared.array, "slices", 0, "cpu", None, None)
    restored = prepared.restore_probabilities(model.activate(logits[None], axis=1)[0])
    assert np.abs(restored - probabilities).mean() < 2e-3


def test_2d_maps_are_per_slice_along_nnunets_axis_and_normalised_over_the_volume(plane_folders):
    """nnU-Net's transpose (2, 0, 1) slices along numpy axis 2 (x): changing one x-slice of the input changes
    the raw maps of that slice only (the image is on the plans' spacing, so no resampling mixes slices);
    normalised maps reach 1 on one slice only."""
    image = ct_image(shape=(10, 20, 18), spacing=(0.8, 1.0, 1.0))
    model = load_model(plane_folders["transposed"], folds=(0,))
    options = dict(methods=["gradcam", "saliency"], target=SegmentationTarget(2, region="all"), device="cpu")
    raw = explain_image(model, image, normalize=False, **options)
    array = sitk.GetArrayFromImage(image)
    array[:, :, 9] *= 1.5
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    other = explain_image(model, changed, normalize=False, **options)
    for name in options["methods"]:
        before, after = (sitk.GetArrayFromImage(r.maps[name]) for r in (raw, other))
        differs = np.abs(after - before).max(axis=(0, 1)) > 1e-6 * np.abs(before).max()
        assert differs[9] and not np.delete(differs, 9).any()
    normalised = sitk.GetArrayFromImage(explain_image(model, image, **options).maps["gradcam"])
    per_slice_max = normalised.max(axis=(0, 1))
    assert np.isclose(per_slice_max.max(), 1.0, atol=1e-3) and (per_slice_max < 0.95).sum() > 3


def test_2d_region_target_moves_onto_each_slices_windows(plane_folders):
    """A region given on the input grid reaches the 2D windows of the slices it covers only."""
    image = ct_image(shape=(8, 30, 28))
    model = load_model(plane_folders["identity"])
    roi = np.zeros((8, 30, 28), bool)
    roi[3:5, 10:20, 8:18] = True
    result = explain_image(model, image, "saliency", target=SegmentationTarget(1, region=roi), device="cpu",
                           normalize=False)
    saliency = np.abs(sitk.GetArrayFromImage(result.maps["saliency"]))
    per_slice = saliency.max(axis=(1, 2))
    assert per_slice[3] > 0 and per_slice[4] > 0 and not per_slice[[0, 1, 2, 5, 6, 7]].any()


def test_2d_mirroring_matches_nnunets_mirrored_prediction(plane_folders, image):
    folder = plane_folders["identity"]
    expected, _ = nnunet_prediction(folder, image, (0,), mirroring=True)
    model = load_model(folder, mirroring=True)
    assert model.pipeline.slice_options()["mirror_axes"] == (0, 1)
    got = sitk.GetArrayFromImage(predict_image(model, image, device="cpu"))
    assert (got == expected).mean() >= 0.999


def test_2d_slicing_axis_is_nnunets_own(plane_folders, image):
    model = load_model(plane_folders["identity"])
    with pytest.raises(ValueError, match=r"the 2d configuration slices along the first axis of its transposed "
                                         r"grid \(plans.json transpose_forward \[0, 1, 2\]\); leave axis unset"):
        explain_image(model, image, "gradcam", axis=2, device="cpu")


# ---- memory budget ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["2d", "3d_fullres"])
def test_memory_budget_applies_to_every_configuration(plane_folders, tmp_path, image, case):
    folder = plane_folders["identity"] if case == "2d" else write_nnunet_folder(tmp_path / "fullres")
    model = load_model(folder)
    with pytest.raises(ValueError, match=r"window with 1 channel\(s\) needs .* more than the memory "
                                         r"budget of 0.01 MB"):
        explain_image(model, ct_image(shape=(4, 12, 12)), "gradcam", device="cpu", memory_budget_mb=0.01)
    plain = explain_image(model, image, ["gradcam"], device="cpu")
    budgeted = explain_image(model, image, ["gradcam"], device="cpu", memory_budget_mb=256)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(budgeted.prediction),
                                  sitk.GetArrayFromImage(plain.prediction))
    np.testing.assert_allclose(sitk.GetArrayFromImage(budgeted.maps["gradcam"]),
                               sitk.GetArrayFromImage(plain.maps["gradcam"]), atol=1e-5)


# ---- 3d_cascade_fullres -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    return write_cascade(tmp_path_factory.mktemp("cascade") / "Dataset999_Tiny")


def test_cascade_feeds_the_lowres_segmentation_as_nnunet_does(cascade, image):
    lowres, fullres = cascade
    first, _ = nnunet_prediction(lowres, image, (0,))
    expected, _ = nnunet_prediction(fullres, image, (0,), previous_stage=first[None].astype(np.int16))
    alone, _ = nnunet_prediction(fullres, image, (0,), previous_stage=np.zeros_like(first, np.int16)[None])
    assert (alone != expected).mean() > 0.01  # the first stage's segmentation matters to this network
    model = load_model(fullres)  # the first stage is found beside it
    stage = model.card.extra["nnunet"]
    assert stage["explained_stage"] == "3d_cascade_fullres" and stage["previous_stage"]["configuration"] == \
        "3d_lowres" and stage["previous_stage"]["folder"] == str(lowres)
    assert model.card.input.channels == 1 and model.pipeline.network_channels == 3
    result = explain_image(model, image, ["gradcam", "saliency"], device="cpu")
    assert "maps explain this 3d_cascade_fullres stage" in result.card.description
    assert result.card.extra["nnunet"]["explained_stage"] == "3d_cascade_fullres"
    assert (sitk.GetArrayFromImage(result.prediction) == expected).mean() >= 0.99
    assert np.abs(sitk.GetArrayFromImage(result.maps["gradcam"])).max() > 0


def test_cascade_first_stage_by_option_or_a_clear_error(cascade, tmp_path, image):
    lowres, fullres = cascade
    moved = tmp_path / "elsewhere" / fullres.name
    shutil.copytree(fullres, moved)
    with pytest.raises(FileNotFoundError, match=r"is a cascade stage that needs the segmentation of the "
                                                r"'3d_lowres' stage, but .*nnUNetTrainer__nnUNetPlans__3d_lowres "
                                                r"does not exist; .*previous_stage="):
        load_model(moved)
    by_option = load_model(moved, previous_stage=lowres)
    beside = load_model(fullres)
    assert by_option.card.extra["nnunet"]["previous_stage"]["folder"] == str(lowres)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(predict_image(by_option, image, device="cpu")),
                                  sitk.GetArrayFromImage(predict_image(beside, image, device="cpu")))
    with pytest.raises(ModelCardError, match=r"is configuration '3d_cascade_fullres', but the cascade stage .* "
                                             r"takes the segmentation of '3d_lowres'"):
        load_model(moved, previous_stage=fullres)
    with pytest.raises(ValueError, match="previous_stage= applies to a cascade stage"):
        load_model(lowres, previous_stage=lowres)


def test_cascade_memory_budget_counts_the_one_hot_channels(cascade, image):
    _, fullres = cascade
    model = load_model(fullres)
    with pytest.raises(ValueError, match=r"window with 3 channel\(s\) needs .* more than the memory budget of "
                                         r"0.01 MB"):
        explain_image(model, ct_image(shape=(4, 12, 12)), "gradcam", device="cpu", memory_budget_mb=0.01)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(predict_image(model, image, device="cpu")),
                                  sitk.GetArrayFromImage(predict_image(model, image, device="cpu",
                                                                       memory_budget_mb=256)))
