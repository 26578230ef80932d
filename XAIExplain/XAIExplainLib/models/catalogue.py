"""Which models a name can mean: the bundled folder, ``$XAIEXPLAIN_MODEL_PATH`` and installed packages.

Listing reads only the cards (JSON), never a network or its weights, and imports no torch, so
``xaiexplain models`` answers in a moment and the Slicer panel can list the models before PyTorch
is installed. Loading a listed model is :func:`models.loading.load_model`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..resources import resources_dir
from . import hd_bet_card
from .card import CARD_FILENAME, load_card
from .errors import ModelCardError

#: Extra folders searched for model names, separated like PATH.
MODEL_PATH_ENV = "XAIEXPLAIN_MODEL_PATH"

#: Models named like bundled ones whose network and weights come from an installed
#: package (listed when it is installed): name -> its card module (``load_model`` has the loaders).
PACKAGE_CARDS = {hd_bet_card.NAME: hd_bet_card}


def bundled_models_dir() -> Path:
    """The bundled models: ``Resources/Models`` wherever the install put the resources."""
    return resources_dir() / "Models"


def model_search_dirs() -> list[Path]:
    """Folders searched for a model name: the bundled folder, then ``$XAIEXPLAIN_MODEL_PATH``."""
    dirs = [bundled_models_dir()]
    extra = os.environ.get(MODEL_PATH_ENV, "")
    dirs.extend(Path(p) for p in extra.split(os.pathsep) if p)
    return dirs


@dataclass(frozen=True)
class ModelInfo:
    """One line of :func:`list_models`."""

    name: str
    task: str
    spatial_dims: int
    classes: tuple[str, ...]
    description: str
    path: Path

    def __str__(self) -> str:
        return (f"{self.name} ({self.task}, {self.spatial_dims}D, classes: "
                f"{', '.join(self.classes)}) - {self.description}")


def list_models() -> list[ModelInfo]:
    """The models found in :func:`model_search_dirs`, sorted by name.

    A folder whose card is invalid is skipped here (``load_model`` on it
    reports why), so one broken download does not hide the others.
    """
    found: dict[str, ModelInfo] = {}
    for directory in model_search_dirs():
        if not directory.is_dir():
            continue
        for card_path in sorted(directory.glob(f"*/{CARD_FILENAME}")):
            try:
                card = load_card(card_path)
            except (ModelCardError, OSError):
                continue
            found.setdefault(card.name, ModelInfo(card.name, card.task, card.spatial_dims,
                                                  tuple(card.class_names), card.description,
                                                  card_path.parent))
    for name, adapter in PACKAGE_CARDS.items():
        if name not in found and adapter.available():
            card = adapter.CARD
            found[name] = ModelInfo(name, card["task"], card["spatial_dims"],
                                    tuple(c["name"] for c in card["classes"]),
                                    card["description"], adapter.weights_folder())
    return [found[name] for name in sorted(found)]
