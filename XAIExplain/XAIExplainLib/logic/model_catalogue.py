"""The model side of the Slicer logic: which models there are, what they take, which
methods and layers apply to them, and the adapter for a plain torch module given
without a model card.

Imports neither torch nor Slicer at module level (the panel lists models before
PyTorch is installed).
"""
from __future__ import annotations

import os

from ..mrml import naming


class RawModel:
    """A plain ``torch.nn.Module`` given without a model card (console users' own models).

    The module sees the voxels as they are (float32): no resampling or
    intensity window happens, so normalise inside the module if needed.
    """

    def __init__(self, module, class_names=None, name=None, engine_options=None):
        self.module = module
        self.class_names = [str(c) for c in class_names] if class_names is not None else []
        self.name = name or type(module).__name__
        self.engine_options = dict(engine_options or {})

    @property
    def spatial_dims(self) -> int:
        import torch

        convs3d = (torch.nn.Conv3d, torch.nn.ConvTranspose3d)
        return 3 if any(isinstance(m, convs3d) for m in self.module.modules()) else 2


def xai_package():
    import XAIExplainLib as xai

    return xai


def models_api(name: str):
    """A models-API function (load_model, list_models, explain_image) from the top-level package."""
    return getattr(xai_package(), name)


def _is_loaded_model(model) -> bool:
    return hasattr(model, "module") and hasattr(model, "card")


def _is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module)


class ModelQueries:
    """Model helpers of :class:`XAIExplainLogic` (expects ``self._models``, a cache dict)."""

    def availableModels(self) -> list:
        """Names of the bundled models (pass one as ``model`` to :meth:`explainVolume`)."""
        return [info.name for info in models_api("list_models")()]

    def loadModel(self, model, trust: bool = False):
        """A loaded model from a bundled name, a model folder or a card.json path (cached).

        ``trust=True`` allows pickled full modules, which can run arbitrary
        code when loaded: only for files from a source you trust. A loaded
        model or a torch module is returned unchanged.
        """
        if isinstance(model, RawModel) or _is_loaded_model(model) or _is_torch_module(model):
            return model
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("model must be a bundled model name, a model folder or card.json path, "
                            f"a loaded model or a torch.nn.Module; got {type(model).__name__}")
        key = str(model)
        if key not in self._models:
            self._models[key] = models_api("load_model")(model, trust=trust)
        return self._models[key]

    def describeModel(self, model) -> dict:
        """Task, spatial dimensions, class names, expected input and layers of a model."""
        model = self._resolveModel(model)
        if isinstance(model, RawModel):
            return {"name": model.name, "task": None, "spatialDims": model.spatial_dims,
                    "classes": list(model.class_names), "input": "voxels as they are (no model card)",
                    "defaultLayer": None, "suggestedLayers": []}
        card = model.card
        spec = card.input
        parts = [f"{spec.channels} channel(s)"]
        if spec.spacing is not None:
            parts.append("spacing " + " x ".join(f"{s:g}" for s in spec.spacing) + " mm")
        if spec.size is not None:
            parts.append("size " + " x ".join(str(s) for s in spec.size))
        if spec.intensity.window is not None:
            parts.append("window {:g}..{:g}".format(*spec.intensity.window))
        return {"name": card.name, "task": card.task, "spatialDims": card.spatial_dims,
                "classes": list(card.class_names), "input": ", ".join(parts),
                "defaultLayer": card.target_layers.default,
                "suggestedLayers": list(card.target_layers.suggested)}

    def methodsForModel(self, model) -> list:
        """``(name, label, enabled, reason)`` for every engine method, for this model.

        A method is disabled when it does not support the model's task or
        dimensionality, or needs a layer on a TorchScript model (no hooks).
        """
        model = self._resolveModel(model)
        task = None if isinstance(model, RawModel) else model.card.task
        dims = model.spatial_dims if isinstance(model, RawModel) else model.card.spatial_dims
        scripted = bool(getattr(model, "scripted", False))
        rows = []
        for name, info in xai_package().METHODS.items():
            reason = info.applicable(task, dims, scripted) or ""
            rows.append((name, info.label, not reason, reason))
        return rows

    def layersForModel(self, model) -> list:
        """Names of the model's layers with spatial output, suggested ones first."""
        model = self._resolveModel(model)
        module = model.module
        example = self._exampleInput(model)
        layers = xai_package().list_layers(module, example)
        suggested = [] if isinstance(model, RawModel) else [model.card.target_layers.default,
                                                            *model.card.target_layers.suggested]
        first = [name for name in dict.fromkeys(suggested) if name and name in layers]
        return first + [name for name in layers if name not in first]

    @staticmethod
    def _checkLayer(model, layer: str) -> None:
        names = [name for name, _ in model.module.named_modules() if name]
        if layer not in names:
            close = [name for name in names if layer.lower() in name.lower()][:8] or names[-8:]
            raise ValueError(f"the model has no layer '{layer}'; e.g. {', '.join(close)}")

    def _defaultLayer(self, model):
        """The card's default layer, else the engine's choice (last layer with spatial output)."""
        if not isinstance(model, RawModel) and model.card.target_layers.default:
            return model.card.target_layers.default
        if getattr(model, "scripted", False):
            return None
        from ..engine.layers import default_layer

        return default_layer(model.module, self._exampleInput(model))

    def _exampleInput(self, model):
        import torch

        dims = model.spatial_dims if isinstance(model, RawModel) else model.card.spatial_dims
        channels = 1 if isinstance(model, RawModel) else model.card.input.channels
        size = None if isinstance(model, RawModel) else (model.card.input.size or model.card.input.patch_size)
        shape = tuple(size) if size else (32,) * dims
        device = next((p.device for p in model.module.parameters()), torch.device("cpu"))
        return torch.zeros((1, channels) + shape, device=device)

    def _resolveModel(self, model, classNames=None, engineOptions=None):
        model = self.loadModel(model)
        if _is_torch_module(model) and not _is_loaded_model(model):
            return RawModel(model, classNames, engine_options=engineOptions)
        return model
