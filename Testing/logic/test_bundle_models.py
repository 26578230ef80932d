"""XAIExplainLogic with MONAI bundles beyond the 3D segmenter: a 2D classifier bundle run per slice.

The reference is the bundle's own pipeline (MONAI's ConfigParser, one 2D file per slice), as in
Testing/models/test_monai_bundle_forms.py; the logic must give the same per-slice class and a heatmap
on the node's own grid.
"""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import GRIDS, add_volume, scene, trusting_logic  # noqa: F401

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("yaml")
import SimpleITK as sitk  # noqa: E402
import slicer.util  # noqa: E402

from Testing.models.test_monai_bundle_forms import (CLASSIFIER_2D, CLASSIFIER_2D_TRANSFORMS, _bundle,  # noqa: E402
                                                    _config, _metadata, _run, _slice_file, _volume, _write_bundle)
from XAIExplainLib import mrml  # noqa: E402


def test_logic_runs_a_2d_classifier_bundle_per_slice_like_the_bundle(scene, tmp_path):
    classes = ["normal", "nodule", "mass"]
    bundle = _write_bundle(tmp_path / "bundle", _config(CLASSIFIER_2D, CLASSIFIER_2D_TRANSFORMS),
                           _metadata("tiny-xray", (32, 32), classes), fmt="yaml")
    node = add_volume(sitk.GetArrayFromImage(_volume()), GRIDS["anisotropic"])
    logic = trusting_logic()
    assert logic.describeModel(str(bundle))["task"] == "classification"
    nodes = logic.explainVolume(node, str(bundle), methods=["gradcam"], target="nodule")
    heatmap = nodes.heatmaps["gradcam"]
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(heatmap), mrml.node_ijk_to_ras(node))
    values = slicer.util.arrayFromVolume(heatmap)
    assert values.shape == slicer.util.arrayFromVolume(node).shape and values.std() > 0.01

    image = mrml.volumes.volume_to_sitk(node)
    parts = _bundle(bundle, "yaml")
    reference = np.stack([np.asarray(_run(parts, {"image": _slice_file(image, 0, k, tmp_path / f"s{k}.nii")})[1]
                                     ["pred"]) for k in range(image.GetSize()[2])])
    np.testing.assert_allclose(nodes.probabilities, reference, atol=1e-5)
    assert nodes.classNames == classes and nodes.probabilityTable is not None
