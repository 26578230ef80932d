"""The picture a user sees: a bundled model's heatmap over a CT in the three slice views.

An abdominal CT phantom in the arterial phase goes through the whole module
path (scene node -> logic -> bundled ct-phase-2d model -> heatmap node ->
slice views). The montage is kept as a test artefact; the README screenshot
is this picture.
"""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import ARTIFACTS, rgba_is_heat, scene  # noqa: F401

pytest.importorskip("torch")
import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.logic import XAIExplainLogic  # noqa: E402
from XAIExplainLib.models import list_models  # noqa: E402

MODEL = "ct-phase-2d"
pytestmark = pytest.mark.skipif(MODEL not in [m.name for m in list_models()],
                                reason=f"bundled model '{MODEL}' is not installed")


def test_bundled_model_heatmap_over_an_abdominal_ct(scene):
    from XAIExplainLib.imaging.phantoms import abdominal_phantom

    phantom = abdominal_phantom(seed=7, phase="arterial")
    node = mrml.sitk_to_volume(scene, phantom.image(), "Abdomen CT")
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(400.0, 40.0)

    nodes = XAIExplainLogic().explainVolume(node, MODEL, methods=["gradcam"])
    heatmap = nodes.heatmaps["gradcam"]
    assert heatmap.GetName().startswith("Abdomen CT Grad-CAM arterial ")
    assert np.argmax(nodes.probabilities.mean(axis=0)) == nodes.classNames.index("arterial")
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(heatmap), mrml.node_ijk_to_ras(node))

    values = slicer.util.arrayFromVolume(heatmap)
    body = np.zeros(values.shape, bool)
    for mask in phantom.masks.values():
        body |= mask
    assert values[body].mean() > 2.0 * values[~body].mean()  # the model looks at the patient, not the air

    aorta = np.argwhere(phantom.masks["aorta"])
    centre = aorta[np.abs(aorta[:, 0] - values.shape[0] // 2).argmin()]
    through = mrml.geometry.voxel_to_ras(mrml.node_ijk_to_ras(node), centre[::-1].astype(float))
    montage = mrml.render_montage(scene, through=through, size=(360, 360))
    axial = montage[:, :360]
    assert rgba_is_heat(axial).mean() > 0.05
    mrml.save_png(montage, ARTIFACTS / "logic_ct_phase_arterial.png")
