"""One explained class per volume for a per-slice classifier (issue 25 section 1).

The reference is the engine itself: ``explain_volume`` with an explicit class on the
model-grid array, and the model's own per-slice probabilities computed here.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import XAIExplainLib as xai
from XAIExplainLib.imaging.phantoms import abdominal_phantom, chest_phantom
from XAIExplainLib.models.explained_class import PER_SLICE, class_of_interest, volume_class


@pytest.fixture(scope="module")
def chest():
    return chest_phantom(seed=2, shape=(12, 160, 160), spacing=(5.0, 1.8, 1.8)).image()  # slices of both classes


@pytest.fixture(scope="module")
def nodule_model():
    return xai.load_model("lung-nodule-2d", device="cpu")


def _probabilities(model, prepared) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(prepared.array, 1, 0)))  # (Z, C, H, W)
    with torch.no_grad():
        return torch.softmax(model.module(x), dim=1).numpy()


def test_the_card_names_its_class_of_interest_and_the_rule_falls_back_to_the_highest_probability():
    nodule = xai.load_model("lung-nodule-2d").card
    phase = xai.load_model("ct-phase-2d").card
    assert class_of_interest(nodule) == nodule.class_names.index("nodule")
    assert class_of_interest(phase) is None
    scores = np.array([[0.5, 0.2, 0.2, 0.1], [0.05, 0.05, 0.02, 0.88], [0.7, 0.1, 0.1, 0.1]])
    # naive: the class of the single highest entry
    best = max(((p, c) for row in scores for c, p in enumerate(row)))[1]
    assert volume_class(phase, scores) == best == 3
    assert volume_class(nodule, scores[:, :2]) == 1  # the card's class wins over the scores


def test_a_per_slice_classifier_explains_one_class_for_the_whole_volume(chest, nodule_model):
    result = xai.explain_image(nodule_model, chest, methods="gradcam", device="cpu")
    assert result.target == 1  # "nodule", the card's class of interest, on every slice
    reference = xai.explain_image(nodule_model, chest, methods="gradcam", target="nodule", device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.maps["gradcam"]),
                                  sitk.GetArrayFromImage(reference.maps["gradcam"]))


def test_per_slice_keeps_each_slice_explaining_its_own_predicted_class(chest, nodule_model):
    result = xai.explain_image(nodule_model, chest, methods="gradcam", target=PER_SLICE, device="cpu",
                               normalize=False)
    assert result.target is None
    prepared = result.prepared
    predicted = np.argmax(_probabilities(nodule_model, prepared), axis=1)
    assert len(set(predicted.tolist())) == 2, "the phantom should have slices of both classes"
    expected = xai.explain_volume(nodule_model.module, prepared.array, "gradcam", target=predicted.tolist(),
                                  layer=nodule_model.card.target_layers.default, normalize=False)
    engine = xai.explain_volume(nodule_model.module, prepared.array, "gradcam", target=None,
                                layer=nodule_model.card.target_layers.default, normalize=False)
    np.testing.assert_allclose(engine, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="applies to classifiers"):
        xai.explain_image("lung-nodule-seg-3d", chest, methods="gradcam", target=PER_SLICE, device="cpu")


def test_without_a_class_of_interest_the_class_most_probable_on_any_slice_is_explained():
    phase = xai.load_model("ct-phase-2d", device="cpu")
    image = abdominal_phantom(seed=3, shape=(4, 64, 64), spacing=(5.0, 5.0, 5.0)).image()
    result = xai.explain_image(phase, image, methods="gradcam", device="cpu")
    scores = _probabilities(phase, result.prepared)
    assert result.target == int(np.unravel_index(np.argmax(scores), scores.shape)[1])
    np.testing.assert_allclose(result.prediction, scores, rtol=1e-4, atol=1e-6)


def test_the_evidence_slice_is_the_most_probable_with_its_neighbours_not_a_single_slice_spike():
    """A single-slice false positive (p = 0.9997 between 0.72 and 0.36, as lung1's slice 30) loses to a
    run of probable slices (lung1's nodule, 0.99 / 1.00 / 0.97); the reference mean is written out."""
    from XAIExplainLib.models.explained_class import evidence_slice, slice_evidence

    p_class = np.array([0.1, 0.72, 0.9997, 0.36, 0.99, 0.9994, 0.97, 0.28])
    probabilities = np.stack([1 - p_class, p_class], axis=1)
    naive = [np.mean(p_class[max(0, i - 1):i + 2]) for i in range(len(p_class))]
    np.testing.assert_allclose(slice_evidence(probabilities, 1), naive)
    assert evidence_slice(probabilities, 1) == 5
    assert int(np.argmax(p_class)) == 2  # the old rule's choice
    assert evidence_slice(probabilities[:1], 1) == 0  # one slice: itself
    with pytest.raises(ValueError, match="outside the 2 classes"):
        slice_evidence(probabilities, 2)
