"""Builders of the hostile files the fault-injection suite feeds the library: tiny model folders
(a card and its weights) and images cut short or lying about their size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from XAIExplainLib.models.architectures import SliceClassifier

ARCH = "XAIExplainLib.models.architectures:SliceClassifier"


def network(spatial_dims: int = 2) -> SliceClassifier:
    torch.manual_seed(0)
    return SliceClassifier(in_channels=1, num_classes=2, widths=[4, 4, 8, 8], spatial_dims=spatial_dims).eval()


def model_folder(folder: Path, spatial_dims: int = 2, state=None, weights: str = "weights.pt") -> Path:
    """A card model folder; ``state`` (default: the network's own) is saved with ``torch.save``."""
    folder.mkdir(parents=True, exist_ok=True)
    net = network(spatial_dims)
    kwargs = {"in_channels": 1, "num_classes": 2, "widths": [4, 4, 8, 8], "spatial_dims": spatial_dims}
    if spatial_dims == 2:
        data_input = {"channels": 1, "spacing": [1.0, 1.0], "size": [16, 16],
                      "intensity": {"mode": "scale", "mean": 0.0, "std": 1.0}, "pad_value": 0}
    else:
        data_input = {"channels": 1, "spacing": [1.25, 1.25, 1.25],
                      "intensity": {"mode": "scale", "mean": 0.0, "std": 1.0}, "pad_value": 0}
    card = {"name": "hostile", "task": "classification", "spatial_dims": spatial_dims,
            "input": data_input, "classes": ["a", "b"],
            "architecture": {"class": ARCH, "kwargs": kwargs},
            "weights": weights, "target_layers": {"default": "features.block4"}}
    if spatial_dims == 2:
        card["slice_axis"] = 0
    (folder / "card.json").write_text(json.dumps(card))
    if state is not False:
        torch.save(net.state_dict() if state is None else state, folder / weights)
    return folder


def volume(shape=(6, 16, 16), spacing=(1.0, 1.0, 1.0), dtype=np.float32, seed: int = 0) -> sitk.Image:
    array = (np.random.default_rng(seed).random(shape) * 100).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def truncated_copy(image: sitk.Image, path: Path, keep: float = 0.6) -> Path:
    """``image`` written to ``path`` and then cut to ``keep`` of its data (gzip streams re-compressed cut)."""
    import gzip

    full = path.with_name("full_" + path.name)
    sitk.WriteImage(image, str(full), path.name.endswith(".gz"))
    data = full.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(data)
        path.write_bytes(gzip.compress(raw[:int(len(raw) * keep)]))
    else:
        path.write_bytes(data[:int(len(data) * keep)])
    full.unlink()
    return path
