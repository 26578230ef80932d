"""Where model names are looked up: the bundled folder, ``$XAIEXPLAIN_MODEL_PATH`` and package models.

A bare name (``"demo-chest-ct"``) means a bundled or configured model, never a
folder of that name in the working directory; :func:`list_models` lists what the
names can be. Split from the loader so that the model forms can use these
without importing the dispatcher (:mod:`models.loading`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..resources import resources_dir
from . import hd_bet
from .card import CARD_FILENAME, load_card
from .errors import ModelCardError

#: Extra folders searched for model names, separated like PATH.
MODEL_PATH_ENV = "XAIEXPLAIN_MODEL_PATH"

#: Models named like bundled ones whose network and weights come from an installed
#: package (listed when it is installed): name -> adapter module.
PACKAGE_MODELS = {hd_bet.NAME: hd_bet}


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
    for name, adapter in PACKAGE_MODELS.items():
        if name not in found and adapter.available():
            card = adapter.CARD
            found[name] = ModelInfo(name, card["task"], card["spatial_dims"],
                                    tuple(c["name"] for c in card["classes"]),
                                    card["description"], adapter.weights_folder())
    return [found[name] for name in sorted(found)]


def is_model_name(source) -> bool:
    """A bare name (a ``str`` without a path separator, not ``.``/``..``) names a model.

    A name never means a file or folder of that name in the working directory:
    ``./name`` (or any ``os.PathLike``) is a path.
    """
    return (isinstance(source, str) and bool(source) and "/" not in source
            and os.sep not in source and (os.altsep is None or os.altsep not in source)
            and source not in (".", ".."))


def in_model_dirs(name: str) -> bool:
    return any((d / name / CARD_FILENAME).is_file() for d in model_search_dirs())


def resolve_model_name(name: str) -> Path:
    """The folder of the bundled or configured model called ``name``."""
    for directory in model_search_dirs():
        candidate = directory / name / CARD_FILENAME
        if candidate.is_file():
            return candidate.parent
    for info in list_models():
        if info.name == name:
            return info.path
    names = ", ".join(i.name for i in list_models()) or "none found"
    local = ""
    if Path(name).exists():
        local = (f" (a file or folder {name!r} exists in the working directory, but a bare name "
                 f"only means a bundled or configured model: write ./{name} to load that path)")
    raise FileNotFoundError(f"no model named {name!r}; bundled and configured models: {names}"
                            f"{local}. Pass a path (a model folder, card.json, TorchScript or "
                            f"state-dict file) for other models, or add its folder to "
                            f"${MODEL_PATH_ENV}")


def resolve_card_path(source: str | os.PathLike) -> Path:
    """A card.json path from a model name, a folder or a card path."""
    path = resolve_model_name(source) if is_model_name(source) else Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        card = path / CARD_FILENAME
        if not card.is_file():
            raise FileNotFoundError(f"model folder {path} has no {CARD_FILENAME}")
        return card
    raise FileNotFoundError(f"model not found: {path} is neither a file nor a folder")
