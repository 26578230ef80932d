"""The Slicer logic explains one class per volume for a per-slice classifier and names it
(issue 25 section 1; the rule is models.explained_class, shared with the command line)."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import scene  # noqa: F401  (fixture)

slicer = pytest.importorskip("slicer")
import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.imaging.phantoms import chest_phantom  # noqa: E402
from XAIExplainLib.logic import XAIExplainLogic  # noqa: E402


def test_a_per_slice_classifier_names_its_one_explained_class(scene):  # noqa: F811
    phantom = chest_phantom(seed=2, shape=(12, 160, 160), spacing=(5.0, 1.8, 1.8))
    node = mrml.sitk_to_volume(scene, phantom.image(), "chest")
    logic = XAIExplainLogic()
    nodes = logic.explainVolume(node, "lung-nodule-2d", methods=["gradcam"])
    probabilities = np.asarray(nodes.probabilities)
    assert len(set(np.argmax(probabilities, axis=1).tolist())) == 2  # slices of both predicted classes
    name = nodes.heatmaps["gradcam"].GetName()
    assert "nodule" in name.split() and "predicted" not in name, name
