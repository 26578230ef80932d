"""Test helpers for the MRML bridge and the logic: a headless Slicer scene and known inputs.

Test files import what they need, fixtures included
(``from Testing.support.slicer_scene import scene``). Provides

* ``scene``: a fresh headless scene (scene, application logic with the three
  slice views, default colours, volumes and segmentations logic), set as
  ``slicer.mrmlScene`` for the test and cleared afterwards;
* synthetic CT-like volumes with a bright box on any IJK-to-RAS grid;
* tiny torch models whose attribution is known by construction;
* ``scene_state`` to compare a whole scene before and after a run.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (real MRML scene in Python) is not installed")
import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

BACKGROUND_HU = -1000.0
OBJECT_HU = 300.0


@pytest.fixture
def scene():
    """A headless MRML scene with Slicer's logics, current for the test's duration."""
    new_scene = mrml.create_headless_scene(set_current=True)
    try:
        yield new_scene
    finally:
        mrml.release_headless_scene(new_scene)


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3 x 3 rotation matrix about the x, y or z axis."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def ijk_to_ras(spacing=(1.0, 1.0, 1.0), directions=np.eye(3), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4 x 4 IJK-to-RAS from (i, j, k) spacing, RAS direction columns and RAS origin."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(directions, dtype=float) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


#: Grids every geometry test runs on: identity, anisotropic, flipped, oblique.
GRIDS = {
    "identity": ijk_to_ras(),
    "anisotropic": ijk_to_ras((0.7, 0.9, 2.5), origin=(-12.0, 30.0, 5.0)),
    "flipped": ijk_to_ras((0.8, 0.8, 3.0), np.diag([1.0, -1.0, 1.0]),
                          origin=(40.0, -20.0, -10.0)),
    "oblique": ijk_to_ras((1.1, 0.9, 2.0), rotation("z", 30.0) @ rotation("x", -20.0), origin=(5.0, -8.0, 12.0)),
}


BOX = ((4, 8), (6, 12), (14, 20))


def box_volume(shape=(12, 20, 24), box=BOX, dtype=np.int16) -> np.ndarray:
    """CT-like (z, y, x) array: air everywhere, a bright box at ``box`` = ((z0, z1), (y0, y1), (x0, x1))."""
    array = np.full(shape, BACKGROUND_HU, dtype=dtype)
    (z0, z1), (y0, y1), (x0, x1) = box
    array[z0:z1, y0:y1, x0:x1] = OBJECT_HU
    return array


def box_mask(shape=(12, 20, 24), box=BOX) -> np.ndarray:
    """The voxels of ``box_volume``'s bright box."""
    mask = np.zeros(shape, bool)
    (z0, z1), (y0, y1), (x0, x1) = box
    mask[z0:z1, y0:y1, x0:x1] = True
    return mask


def ras_centroid(node, mask) -> np.ndarray:
    """RAS position of the centre of ``mask``'s voxels in ``node``."""
    zyx = np.argwhere(mask).astype(float)
    return mrml.geometry.voxel_to_ras(mrml.node_ijk_to_ras(node), zyx[:, ::-1]).mean(axis=0)


def add_volume(array: np.ndarray, matrix=None, name: str = "CT"):
    """A scalar volume node with a CT window, as a user's loaded volume would have."""
    node = slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name=name)
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(1600.0, -300.0)
    return node


def voxel_ras(node, zyx) -> np.ndarray:
    """RAS position of the voxel at numpy index (z, y, x) of a node."""
    return mrml.geometry.voxel_to_ras(mrml.node_ijk_to_ras(node), np.asarray(zyx, dtype=float)[::-1])


def scene_state(scene) -> tuple:
    """Everything a user could notice: every node's saved XML and every volume's voxel digest."""
    scene.SetSaveToXMLString(1)
    scene.Commit()
    xml = scene.GetSceneXMLString()
    voxels = {}
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if node.IsA("vtkMRMLVolumeNode") and node.GetImageData() is not None:
            array = slicer.util.arrayFromVolume(node)
            voxels[node.GetID()] = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    ids = tuple(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))
    return ids, xml, voxels


def bright_spot_model(dims: int = 2, threshold: float = 0.0):
    """A classifier whose class-1 score is the mean of ReLU(x - threshold), in eval mode.

    Layer ``features`` outputs ReLU(x - threshold) with one channel, so
    Grad-CAM for class 1 equals that activation (normalised): hot exactly
    where the input is brighter than ``threshold``. Saliency is also
    non-zero only there. (The card architecture ``BrightSpotClassifier``.)
    """
    return __getattr__("BrightSpotClassifier")(dims=dims, threshold=threshold).eval()


def rgba_is_heat(rgba: np.ndarray) -> np.ndarray:
    """Pixels whose colour is warm (red clearly above blue), as Inferno over grey gives."""
    rgb = rgba[..., :3].astype(int)
    return (rgb[..., 0] - rgb[..., 2] > 25) & (rgb[..., 0] > 40)


def rgba_is_grey(rgba: np.ndarray) -> np.ndarray:
    """Pixels with no colour cast (plain CT background layer)."""
    rgb = rgba[..., :3].astype(int)
    return (np.ptp(rgb, axis=-1) <= 3)


def _make_architectures():
    """Model-card architectures with known attribution (``Testing.support.slicer_scene:BrightSpotClassifier`` ...).

    Classifier: class-1 logit = mean of ReLU(x - threshold) at layer ``features``.
    Segmenter: logits (background, object) = (threshold - x, x - threshold) * gain.
    Built lazily so that importing this module does not import torch.
    """
    import torch
    from torch import nn

    class BrightSpotClassifier(nn.Module):
        def __init__(self, dims: int = 2, threshold: float = 0.5):
            super().__init__()
            conv = nn.Conv2d if dims == 2 else nn.Conv3d
            pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
            self.features = nn.Sequential(conv(1, 1, 1), nn.ReLU())
            self.pool = pool(1)
            self.fc = nn.Linear(1, 2)
            with torch.no_grad():
                self.features[0].weight.fill_(1.0)
                self.features[0].bias.fill_(-threshold)
                self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
                self.fc.bias.zero_()

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    class BrightSpotSegmenter(nn.Module):
        def __init__(self, dims: int = 2, threshold: float = 0.5, gain: float = 10.0):
            super().__init__()
            conv = nn.Conv2d if dims == 2 else nn.Conv3d
            self.features = nn.Sequential(conv(1, 4, 1), nn.ReLU())
            self.head = conv(4, 2, 1)
            with torch.no_grad():
                self.features[0].weight.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, *([1] * dims)))
                self.features[0].bias.copy_(torch.tensor([-threshold, threshold, -threshold, threshold]))
                weight = torch.tensor([[-1.0, 1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]]) * gain
                self.head.weight.copy_(weight.view(2, 4, *([1] * dims)))
                self.head.bias.zero_()

        def forward(self, x):
            return self.head(self.features(x))

    return BrightSpotClassifier, BrightSpotSegmenter


_ARCHITECTURES: dict = {}


def __getattr__(name):
    """Lazy module attributes: the architecture classes need torch, imported on first use."""
    if name in ("BrightSpotClassifier", "BrightSpotSegmenter"):
        if not _ARCHITECTURES:
            _ARCHITECTURES.update(zip(("BrightSpotClassifier", "BrightSpotSegmenter"), _make_architectures()))
        return _ARCHITECTURES[name]
    raise AttributeError(name)


def write_card(folder: Path, task: str = "classification", dims: int = 2, spacing=None, window=(-1000.0, 400.0),
               classes=None, layer: str = "features") -> Path:
    """A model folder (card.json + state_dict) for a bright-spot architecture; returns the card path."""
    import json

    import torch

    architecture = __getattr__("BrightSpotClassifier" if task == "classification" else "BrightSpotSegmenter")
    module = architecture(dims=dims)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), folder / "weights.pt")
    if classes is None:
        classes = (["dark", "bright"] if task == "classification"
                   else [{"name": "background"}, {"name": "object", "color": [255, 64, 0]}])
    card = {
        "name": f"bright-spot-{task}-{dims}d",
        "task": task,
        "spatial_dims": dims,
        "input": {"channels": 1, "spacing": spacing,
                  "intensity": {"mode": "window", "window": list(window)}},
        "classes": classes,
        "architecture": {"class": f"Testing.support.slicer_scene:BrightSpot{'Classifier' if task == 'classification' else 'Segmenter'}",
                         "kwargs": {"dims": dims}},
        "weights": {"file": "weights.pt", "format": "state_dict"},
        "target_layers": {"default": layer, "suggested": [layer]},
    }
    path = folder / "card.json"
    path.write_text(json.dumps(card, indent=2))
    return path


def trusting_logic(scene=None):
    """A logic that loads models with trust=True: the cards of :func:`write_card` name this
    test module's classes, which lie outside the architectures a card may name untrusted."""
    from XAIExplainLib.logic import XAIExplainLogic
    from XAIExplainLib.logic.model_catalogue import ModelCatalogue
    from XAIExplainLib.models import load_model

    return XAIExplainLogic(scene, models=ModelCatalogue(load=lambda source, trust=False:
                                                        load_model(source, trust=True)))
