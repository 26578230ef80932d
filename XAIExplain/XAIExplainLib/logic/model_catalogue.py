"""The models the Slicer logic works with: which there are, loading them once, what they take,
and which methods and layers apply to them.

Every model is a ``LoadedModel`` (a bundled name, any form ``load_model`` accepts, or a plain
torch module, which becomes one without a card). Imports neither torch nor Slicer at module
level: the panel lists the bundled models before PyTorch is installed.
"""
from __future__ import annotations

import os
import weakref


def _is_loaded_model(model) -> bool:
    return hasattr(model, "module") and hasattr(model, "card")


def _is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module)


#: Files of one model folder looked at for changes, at most (a result folder may hold predictions too).
MAX_WATCHED_FILES = 5000


def _model_files(loaded) -> list:
    """The files a loaded model came from: its source (a file, or every file under its folder, without
    following links), its card and its weights file (which a trusted card may keep elsewhere)."""
    from pathlib import Path

    paths = []
    source = getattr(loaded, "source", None)
    if source is not None:
        source = Path(source)
        if source.is_dir():
            for root, _, files in os.walk(source, followlinks=False):
                paths.extend(Path(root) / name for name in sorted(files))
                if len(paths) >= MAX_WATCHED_FILES:
                    break
        else:
            paths.append(source)
    card = loaded.card
    for extra in (card.path, getattr(card.weights, "file", None)):
        if extra is not None:
            paths.append(Path(extra))
    return sorted(set(paths))[:MAX_WATCHED_FILES + 2]


def _stamp(paths) -> tuple:
    """Size, modification and change times and inode of each file: a rewrite changes the change time
    even where the modification time was set back, without reading (hashing) gigabytes of weights on
    every lookup."""
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append((str(path), None))
            continue
        stamps.append((str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino))
    return tuple(stamps)


class ModelCatalogue:
    """Loads models once per source and answers questions about them.

    ``load`` is the loader (``models.load_model`` by default; injected in tests), ``listing``
    the listing of bundled models (``models.list_models``).
    """

    def __init__(self, load=None, listing=None):
        self._load, self._listing = load, listing
        self._cache: dict = {}
        # plain modules: described once per module and class names (the description runs a probe
        # forward and hashes the weights; the panel and a run ask several times)
        self._modules: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def available(self) -> list:
        """Names of the bundled and configured models."""
        listing = self._listing
        if listing is None:
            from ..models import list_models as listing
        return [info.name for info in listing()]

    def get(self, model, trust: bool = False, class_names=None):
        """A ``LoadedModel`` for ``model`` (loaded once per source and trust, again when one of its files
        changed on disk: size, modification or change time, inode; a file added to or removed from its folder).

        A loaded model is returned unchanged; a plain torch module is described by a card read
        from the module itself (``class_names`` names its outputs).
        """
        if _is_loaded_model(model):
            return model
        if _is_torch_module(model):
            from ..models.plain_module import module_model

            key = None if class_names is None else tuple(str(c) for c in class_names)
            described = self._modules.setdefault(model, {})
            if key not in described:
                described[key] = module_model(model, class_names=class_names)
            return described[key]
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("model must be a bundled model name, a model folder or file, a loaded model "
                            f"or a torch.nn.Module; got {type(model).__name__}")
        key = (str(model), bool(trust))
        if not trust and self._fresh((str(model), True)) is not None:
            return self._fresh((str(model), True))  # the user trusted this source in this session
        loaded = self._fresh(key)
        if loaded is None:
            load = self._load
            if load is None:
                from ..models import load_model as load
            loaded = load(model, trust=trust)
            files = _model_files(loaded)
            self._cache[key] = (loaded, files, _stamp(files))
        return loaded

    def _fresh(self, key):
        """The cached model for ``key`` while none of its files changed on disk (else it is dropped)."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        loaded, files, stamp = entry
        if files and (_stamp(files) != stamp or _model_files(loaded) != files):
            del self._cache[key]
            return None
        return loaded

    def trust_needed(self, model) -> str:
        """Why ``model`` needs trust to load (the refusal's message), or "" when it does not.

        The panel asks the user with this reason before loading with ``trust=True``. Asking
        builds and runs nothing the model names (:func:`models.trust_check.trust_needed`);
        other load errors are left for :meth:`describe` to report. A model trusted in this
        session needs nothing more while its files are unchanged.
        """
        if _is_loaded_model(model) or _is_torch_module(model) or not isinstance(model, (str, os.PathLike)):
            return ""
        if self._fresh((str(model), True)) is not None:
            return ""  # trusted in this session, and its files are as they were then
        from ..models.trust_check import trust_needed

        return trust_needed(model)

    def describe(self, model) -> dict:
        """Task, spatial dimensions, class names, expected input and layers of a model."""
        card = self.get(model).card
        spec = card.input
        parts = [f"{spec.channels} channel(s)"]
        if spec.spacing is not None:
            parts.append("spacing " + " x ".join(f"{s:g}" for s in spec.spacing) + " mm")
        if spec.size is not None:
            parts.append("size " + " x ".join(str(s) for s in spec.size))
        if spec.intensity.window is not None:
            parts.append("window {:g}..{:g}".format(*spec.intensity.window))
        if spec.spacing is None and spec.size is None and spec.intensity.mode == "none":
            parts.append("voxels as they are")
        return {"name": card.name, "task": card.task, "spatialDims": card.spatial_dims,
                "classes": list(card.class_names), "input": ", ".join(parts),
                "channels": list(spec.channel_labels),
                "modalities": list(spec.modalities),
                "defaultLayer": card.target_layers.default,
                "suggestedLayers": list(card.target_layers.suggested)}

    def methods_for(self, model) -> list:
        """``(name, label, enabled, reason)`` for every engine method (``MethodInfo.applicable``)."""
        from ..engine import METHODS

        loaded = self.get(model)
        card = loaded.card
        rows = []
        for name, info in METHODS.items():
            reason = info.applicable(card.task, card.spatial_dims, loaded.scripted, loaded.module) or ""
            rows.append((name, info.label, not reason, reason))
        return rows

    def layers_for(self, model) -> list:
        """Names of the model's layers with spatial output, suggested ones first."""
        from ..engine import list_layers

        loaded = self.get(model)
        if loaded.scripted:  # TorchScript cannot be hooked: no layer can be chosen (layer methods are refused)
            return []
        layers = list_layers(loaded.module, self.example_input(loaded))
        targets = loaded.card.target_layers
        first = [name for name in dict.fromkeys([targets.default, *targets.suggested]) if name and name in layers]
        return first + [name for name in layers if name not in first]

    def default_layer(self, loaded):
        """The card's default layer, else the engine's choice (last layer with spatial output)."""
        if loaded.card.target_layers.default:
            return loaded.card.target_layers.default
        if loaded.scripted:
            return None
        from ..engine.layers import default_layer

        return default_layer(loaded.module, self.example_input(loaded))

    @staticmethod
    def check_layer(loaded, layer: str) -> None:
        names = [name for name, _ in loaded.module.named_modules() if name]
        if layer not in names:
            close = [name for name in names if layer.lower() in name.lower()][:8] or names[-8:]
            raise ValueError(f"the model has no layer '{layer}'; e.g. {', '.join(close)}")

    @staticmethod
    def example_input(loaded):
        """Zeros the network takes (a cascade stage's channels included), to probe its layers."""
        import torch

        from ..models.card import trial_input_shape
        from ..models.pipeline_protocol import network_channels

        shape = trial_input_shape(loaded.card, loaded.module)
        device = next((p.device for p in loaded.module.parameters()), torch.device("cpu"))
        return torch.zeros((1, network_channels(loaded)) + shape, device=device)
