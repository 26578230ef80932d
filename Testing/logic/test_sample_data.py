"""The Sample Data entries: what Slicer's Sample Data module is given, and what a click loads.

Registration itself needs Slicer's SampleData module (not in slicer-core); the
sources' description and their downloader are tested here on a real scene: the
node holds exactly the phantom's voxels and geometry, named as the source says.
"""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import scene  # noqa: F401

sitk = pytest.importorskip("SimpleITK")
import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.logic import sample_data  # noqa: E402
from XAIExplainLib.models import list_models  # noqa: E402

SMALL = {"shape": (4, 32, 32), "spacing": (5.0, 6.0, 6.0)}


def test_every_sample_is_described_for_the_sample_data_module():
    sources = sample_data.sample_sources(lambda: None, thumbnail="icon.png")
    assert [s["sampleName"] for s in sources] == [spec.name for spec in sample_data.SAMPLES]
    assert len({s["sampleName"] for s in sources}) == len(sources) >= 3
    bundled = {info.name for info in list_models()}
    for source, spec in zip(sources, sample_data.SAMPLES):
        assert source["category"] == "XAIExplain" and source["nodeNames"] == spec.node_name
        assert isinstance(source["uris"], str) and source["fileNames"] == f"{spec.node_name}.nrrd"
        assert callable(source["customDownloader"]) and source["thumbnailFileName"] == "icon.png"
        assert spec.model in bundled, f"{spec.name} suggests '{spec.model}', which is not bundled"


def test_the_downloader_generates_the_phantom_into_the_scene(scene, monkeypatch):
    spec = sample_data.SAMPLES[0]
    reference = spec.phantom(**SMALL).image()
    monkeypatch.setattr(sample_data.SampleSpec, "phantom", lambda self, **grid: _small(self))  # a small grid
    count = scene.GetNumberOfNodes()
    source = sample_data.sample_sources(lambda: scene)[0]
    node = source["customDownloader"](object())  # Sample Data calls it with the source
    assert scene.GetNumberOfNodes() > count and node.GetName() == spec.node_name
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(mrml.node_ijk_to_ras(node), mrml.ijk_to_ras_from_sitk(reference), atol=1e-6)
    assert node.GetAttribute("XAIExplain.SuggestedModel") == spec.model


def _small(spec):
    from XAIExplainLib.imaging import phantoms

    return getattr(phantoms, spec.generator)(**dict(spec.arguments, **SMALL))
