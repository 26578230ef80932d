"""nnU-Net models end to end: predictions equal nnU-Net's own predictor, fold-ensemble maps equal the mean of
per-fold maps, and everything lands on the input's grid (also an oblique one)."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("nnunetv2")

from Testing.support.nnunet_folders import PLAIN, RESIDUAL, ct_image, nnunet_prediction, write_nnunet_folder  # noqa: E402
from XAIExplainLib.engine import SegmentationTarget  # noqa: E402
from XAIExplainLib.models import explain_image, load_model  # noqa: E402

CASES = {
    "PlainConvUNet, CT normalisation, 1 fold": dict(folds=(0,), network=PLAIN),
    "ResidualEncoderUNet, z-score, 2 folds, transposed": dict(folds=(0, 1), network=RESIDUAL,
                                                             normalization="ZScoreNormalization",
                                                             transpose=(2, 0, 1), spacing=(1.0, 2.0, 1.0),
                                                             patch=(24, 16, 24)),
    "regions (sigmoid), CT, 1 fold": dict(folds=(0,), network=PLAIN, regions=True),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    return {name: write_nnunet_folder(root / f"case{i}", **options) for i, (name, options) in enumerate(CASES.items())}


@pytest.fixture(scope="module")
def image():
    return ct_image()  # anisotropic (0.8, 0.9, 2.5) mm, a zero border to crop, x shorter than the patch


@pytest.mark.parametrize("case", CASES)
def test_prediction_equals_nnunets_predictor(folders, image, case):
    folds = CASES[case]["folds"]
    expected, expected_probabilities = nnunet_prediction(folders[case], image, folds)
    model = load_model(folders[case])
    result = explain_image(model, image, ["gradcam"], device="cpu")
    labels = sitk.GetArrayFromImage(result.prediction)
    assert labels.shape == expected.shape and len(np.unique(expected)) > 1
    assert (labels == expected).mean() >= 0.99
    # probabilities through the pipeline's export: nnU-Net accumulates its windows in float16
    prepared = model.pipeline.prepare(image)
    logits = np.mean([_predict(module, model, prepared) for module in (model.module,) + model.ensemble], axis=0)
    probabilities = model.activate(logits[None], axis=1)[0]
    restored = prepared.restore_probabilities(probabilities)
    assert np.abs(restored - expected_probabilities).mean() < 2e-3


def _predict(module, model, prepared):
    from XAIExplainLib.engine import predict_volume

    return predict_volume(module, prepared.array, mode="volume", device="cpu", **model.pipeline.volume_options())


def test_fold_ensemble_map_is_the_mean_of_per_fold_maps(folders, image):
    folder = folders["ResidualEncoderUNet, z-score, 2 folds, transposed"]
    options = dict(methods=["gradcam", "saliency"], target=SegmentationTarget(2, region="all"), normalize=False,
                   device="cpu")
    both = explain_image(load_model(folder), image, **options)
    per_fold = [explain_image(load_model(folder, folds=(fold,)), image, **options) for fold in (0, 1)]
    for method in options["methods"]:
        got = sitk.GetArrayFromImage(both.maps[method])
        expected = np.mean([sitk.GetArrayFromImage(r.maps[method]) for r in per_fold], axis=0)
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_target_by_label_name_and_region_channel(folders, image):
    folder = folders["PlainConvUNet, CT normalisation, 1 fold"]
    model = load_model(folder)
    by_name = explain_image(model, image, "gradcam", target="lesion", device="cpu")
    by_index = explain_image(model, image, "gradcam", target=2, device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(by_name.maps["gradcam"]),
                                  sitk.GetArrayFromImage(by_index.maps["gradcam"]))
    regions = load_model(folders["regions (sigmoid), CT, 1 fold"])
    lesion = explain_image(regions, image, "gradcam", target="lesion", device="cpu")
    assert lesion.target.class_index == 1  # the second sigmoid channel
    with pytest.raises(ValueError, match="unknown class 'liver'"):
        explain_image(model, image, "gradcam", target="liver", device="cpu")


def test_oblique_input_round_trip(folders):
    folder = folders["PlainConvUNet, CT normalisation, 1 fold"]
    image = ct_image(oblique=True)
    result = explain_image(load_model(folder), image, ["gradcam", "saliency"], layer="encoder.stages.1",
                           device="cpu")
    expected, _ = nnunet_prediction(folder, image, (0,))
    for out in list(result.maps.values()) + [result.prediction]:
        assert out.GetSize() == image.GetSize() and out.GetOrigin() == image.GetOrigin()
        assert out.GetSpacing() == image.GetSpacing() and out.GetDirection() == image.GetDirection()
    assert (sitk.GetArrayFromImage(result.prediction) == expected).mean() >= 0.99
    gradcam = sitk.GetArrayFromImage(result.maps["gradcam"])
    assert 0.9 < gradcam.max() <= 1 and gradcam.min() >= 0  # normalised on nnU-Net's grid, then resampled
    assert np.all(gradcam[:, :2] == 0)  # the zero border nnU-Net cropped away gets no attribution


def test_mirroring_option_matches_nnunets_mirrored_prediction(folders, image):
    folder = folders["PlainConvUNet, CT normalisation, 1 fold"]
    expected, _ = nnunet_prediction(folder, image, (0,), mirroring=True)
    model = load_model(folder, mirroring=True)
    assert model.pipeline.volume_options()["mirror_axes"] == (0, 1, 2)
    result = explain_image(model, image, "gradcam", device="cpu")
    assert (sitk.GetArrayFromImage(result.prediction) == expected).mean() >= 0.99
    plain = explain_image(load_model(folder), image, "gradcam", device="cpu")
    assert not np.allclose(sitk.GetArrayFromImage(plain.maps["gradcam"]),
                           sitk.GetArrayFromImage(result.maps["gradcam"]))


def test_explaining_leaves_the_networks_as_found(folders, image):
    model = load_model(folders["ResidualEncoderUNet, z-score, 2 folds, transposed"])
    modules = (model.module,) + model.ensemble
    modules[1].train()
    before = [[(p.requires_grad, m.training) for m in mod.modules() for p in m.parameters(recurse=False)]
              for mod in modules]
    weights = [{k: v.clone() for k, v in mod.state_dict().items()} for mod in modules]
    explain_image(model, image, ["gradcam", "saliency"], device="cpu")
    after = [[(p.requires_grad, m.training) for m in mod.modules() for p in m.parameters(recurse=False)]
             for mod in modules]
    assert after == before
    for mod, saved in zip(modules, weights):
        assert all(torch.equal(v, saved[k]) for k, v in mod.state_dict().items())


def test_roi_targets_move_to_nnunets_grid_like_its_segmentations(folders, image):
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    folder = folders["ResidualEncoderUNet, z-score, 2 folds, transposed"]
    model = load_model(folder)
    array = sitk.GetArrayFromImage(image)
    z, y, x = np.meshgrid(*[np.arange(n) for n in array.shape], indexing="ij")
    roi = ((z - 10) ** 2 / 9 + (y - 20) ** 2 / 25 + (x - 14) ** 2 / 16) <= 1
    prepared = model.pipeline.prepare(image)
    pipeline = model.pipeline
    _, expected, _ = DefaultPreprocessor(verbose=False).run_case_npy(
        array[None].astype(np.float32), roi[None].astype(np.int16), {"spacing": list(image.GetSpacing())[::-1]},
        pipeline.plans_manager, pipeline.configuration_manager, pipeline.dataset_json)
    np.testing.assert_array_equal(prepared.region_to_model_grid(roi), expected[0] > 0)
    assert prepared.region_to_model_grid(roi)[prepared.voxel_to_model_grid((10, 20, 14))]
    result = explain_image(model, image, "gradcam", target=SegmentationTarget(2, region=roi),
                           device="cpu")
    assert result.target.class_index == 2 and result.target._mask.sum() == (expected[0] > 0).sum()
