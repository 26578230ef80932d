"""The bundled phantom CTs as entries of Slicer's Sample Data module (category "XAIExplain").

A first-time user opens Sample Data, clicks "XAIExplain abdomen (arterial)" and
presses Apply in the panel with the bundled model that fits it. The phantoms
are generated on click (a few seconds, no download): :data:`SAMPLES` describes
them, :func:`load_sample` puts one in a scene, and :func:`register_sample_data`
(inside Slicer only, it imports the SampleData module) registers them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CATEGORY = "XAIExplain"


@dataclass(frozen=True)
class SampleSpec:
    """One sample: its Sample Data name, the node name, which bundled model fits it, the phantom's arguments."""

    name: str
    description: str
    node_name: str
    model: str
    generator: str  # "abdominal_phantom" or "chest_phantom" of imaging.phantoms
    arguments: dict = field(default_factory=dict)

    def phantom(self, **grid):
        """The phantom (``shape`` / ``spacing`` may override the default grid, e.g. for tests)."""
        from ..imaging import phantoms

        return getattr(phantoms, self.generator)(**dict(self.arguments, **grid))


SAMPLES = (
    SampleSpec("XAIExplain abdomen (arterial)", "Abdominal CT phantom, arterial phase (for ct-phase-2d)",
               "XAIExplain abdomen arterial", "ct-phase-2d", "abdominal_phantom", {"seed": 7, "phase": "arterial"}),
    SampleSpec("XAIExplain abdomen (portal venous)", "Abdominal CT phantom, portal venous phase (for ct-phase-2d)",
               "XAIExplain abdomen portal venous", "ct-phase-2d", "abdominal_phantom",
               {"seed": 7, "phase": "portal_venous"}),
    SampleSpec("XAIExplain abdomen (liver)", "Abdominal CT phantom, portal venous phase (for liver-seg-3d, "
               "pyliverlesionseg's published whole-liver network)", "XAIExplain abdomen liver", "liver-seg-3d",
               "abdominal_phantom", {"seed": 7, "phase": "portal_venous"}),
    SampleSpec("XAIExplain chest with nodule", "Chest CT phantom with one lung nodule (for lung-nodule-2d and "
               "lung-nodule-seg-3d)", "XAIExplain chest nodule", "lung-nodule-2d", "chest_phantom",
               {"seed": 1, "nodules": 1}),
)


def load_sample(spec: SampleSpec, scene, **grid):
    """Generate the sample's phantom and add it to ``scene`` as a volume node (CT window); returns the node."""
    from .. import mrml

    node = mrml.volumes.sitk_to_volume(scene, spec.phantom(**grid).image(), spec.node_name)
    node.SetAttribute("XAIExplain.SuggestedModel", spec.model)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(400.0, 40.0)
    return node


def sample_sources(scene_getter, thumbnail=None) -> list:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for every sample.

    Each source has a custom downloader that generates the phantom into the scene
    ``scene_getter()`` returns (Slicer's current scene) and returns the node.
    """
    def downloader(spec):
        def load(*_args, **_kwargs):
            return load_sample(spec, scene_getter())
        return load

    # Sample Data wants one URI / file name per node even with a custom downloader (its button then
    # calls the downloader alone): a "generated:" URI says where the voxels come from
    return [{"category": CATEGORY, "sampleName": spec.name, "uris": f"generated:{spec.generator}",
             "fileNames": f"{spec.node_name}.nrrd", "nodeNames": spec.node_name, "thumbnailFileName": thumbnail,
             "loadFileType": "VolumeFile", "customDownloader": downloader(spec)} for spec in SAMPLES]


def register_sample_data(thumbnail=None) -> int:
    """Inside Slicer: register the samples with the Sample Data module; returns how many."""
    import SampleData
    import slicer

    sources = sample_sources(lambda: slicer.mrmlScene, thumbnail)
    for source in sources:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)
    return len(sources)
