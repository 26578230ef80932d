"""A loaded model: the eval-mode module, its card, and the card's pre/postprocessing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .card import ModelCard
from .preprocessing import PreparedInput, prepare


@dataclass
class LoadedModel:
    """What :func:`load_model` returns.

    ``module`` is in eval mode on ``device``; ``scripted`` is True for
    TorchScript modules, which take no hooks, so layer-based explanations
    (Grad-CAM and relatives) are unavailable for them.
    """

    module: nn.Module
    card: ModelCard
    scripted: bool = False
    device: torch.device = torch.device("cpu")

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def default_layer(self) -> str | None:
        return self.card.target_layers.default

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def preprocess(self, image, spacing: Sequence[float] | None = None) -> PreparedInput:
        """Resample and normalise as the card says; see :func:`models.preprocessing.prepare`.

        ``image`` is a ``SimpleITK.Image`` or a numpy ``(Z, Y, X)`` array with
        ``spacing`` in numpy axis order (mm).
        """
        return prepare(self.card, image, spacing)

    def postprocess(self, array: np.ndarray, prepared: PreparedInput, kind: str = "map"):
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
        t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
        act = self.card.output_activation
        if act == "softmax":
            t = torch.softmax(t, dim=axis)
        elif act == "sigmoid":
            t = torch.sigmoid(t)
        return t.numpy()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def __repr__(self) -> str:
        kind = "TorchScript" if self.scripted else type(self.module).__name__
        return f"LoadedModel({self.card.summary()}; {kind} on {self.device})"
