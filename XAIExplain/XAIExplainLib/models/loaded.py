"""A loaded model: the eval-mode module(s), the card that describes them, and their image pipeline.

Every model form (a card folder, an nnU-Net folder, a MONAI bundle, a TorchScript or
state-dict file) becomes this one object, so the pipeline, the command line and the
Slicer logic serve all of them the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .card import ModelCard
from .pipeline_protocol import ModelPipeline, PreparedImage, check_pipeline
from .preprocessing import CardPipeline


@dataclass
class LoadedModel:
    """What :func:`load_model` returns.

    ``module`` is in eval mode on ``device``; ``scripted`` is True for
    TorchScript modules, which take no hooks, so layer-based explanations
    (Grad-CAM and relatives) are unavailable for them.

    ``kind`` names the form it came from ("card", "nnunet", "monai-bundle",
    "torchscript", "module"); ``source`` the file or folder and ``weights_sha256``
    the hash of its weights (recorded in run summaries). ``ensemble`` holds further
    networks (e.g. nnU-Net folds) that :func:`explain_image` runs like ``module``:
    the prediction averages their outputs and each map is the mean of their maps.
    ``pipeline`` prepares an image for the network and maps results back: a
    :class:`~models.pipeline_protocol.ModelPipeline` (checked here), by default
    the card's resampling and intensity transform.
    """

    module: nn.Module
    card: ModelCard
    scripted: bool = False
    device: torch.device = torch.device("cpu")
    kind: str = "card"
    source: Path | None = None
    weights_sha256: str | None = None
    ensemble: tuple = ()
    pipeline: ModelPipeline | None = None

    def __post_init__(self):
        if self.pipeline is None:
            self.pipeline = CardPipeline(self.card)
        check_pipeline(self.pipeline, f"model '{self.card.name}'")
        self.ensemble = tuple(self.ensemble)

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """Every network the model runs: ``module`` and the ``ensemble``."""
        return (self.module,) + self.ensemble

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def default_layer(self) -> str | None:
        return self.card.target_layers.default

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.device = torch.device(device)
        for module in self.modules:
            module.to(self.device)
        return self

    def preprocess(self, image, spacing: Sequence[float] | None = None,
                   memory_budget_mb: float | None = None) -> PreparedImage:
        """Resample and normalise as the card says; see :func:`models.preprocessing.prepare`.

        ``image`` is a ``SimpleITK.Image`` or a numpy ``(Z, Y, X)`` array with
        ``spacing`` in numpy axis order (mm).
        """
        return self.pipeline.prepare(image, spacing=spacing, memory_budget_mb=memory_budget_mb)

    def postprocess(self, array: np.ndarray, prepared: PreparedImage, kind: str = "map"):
        """Map model-grid results back to the input grid.

        ``kind="map"``: a ``(Z, Y, X)`` attribution map -> float32 in [0, 1].
        ``kind="labels"``: ``(K, Z, Y, X)`` class probabilities -> label map.
        ``kind="probabilities"``: ``(K, Z, Y, X)`` -> the same on the input grid (numpy).
        """
        if kind == "map":
            return prepared.restore_map(array)
        if kind == "labels":
            return prepared.restore_labels(array, self.card.output_activation)
        if kind == "probabilities":
            return prepared.restore_probabilities(array)
        raise ValueError(f"kind must be 'map', 'labels' or 'probabilities', got {kind!r}")

    def activate(self, logits: np.ndarray | torch.Tensor, axis: int = 1) -> np.ndarray:
        """Logits -> probabilities with the card's output activation (along ``axis``)."""
        from ..engine.activations import activate

        t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
        return activate(t, self.card.output_activation, dim=axis).numpy()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def __repr__(self) -> str:
        network = "TorchScript" if self.scripted else type(self.module).__name__
        folds = f" x {len(self.modules)}" if self.ensemble else ""
        return f"LoadedModel({self.kind}: {self.card.summary()}; {network}{folds} on {self.device})"
