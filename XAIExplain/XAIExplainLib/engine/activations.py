"""Logits -> probabilities: the one place that applies an output activation.

``"softmax"`` for mutually exclusive classes, ``"sigmoid"`` for independent (multi-label
or single-channel) outputs, ``None`` / ``"none"`` when the model already returns
probabilities. ``"auto"`` asks :func:`resolve_activation` for the right one; a softmax
over a single channel (always 1) is refused wherever it would happen.
"""
from __future__ import annotations

from typing import Optional

import torch

SOFTMAX, SIGMOID, NONE = "softmax", "sigmoid", "none"
#: A segmentation target's word for "the class logits themselves" (Seg-Grad-CAM's score).
LOGITS = "logits"
#: How a model's output becomes probabilities: a model card's ``output.activation``.
OUTPUT_ACTIVATIONS = (SOFTMAX, SIGMOID, NONE)
#: What a caller may ask for: the above, ``"auto"``, and None for "none".
ACTIVATIONS = ("auto", SOFTMAX, SIGMOID, None)


def activation_for_channels(channels: int) -> str:
    """The output activation a model with ``channels`` output channels implies when nothing says:
    one channel is an independent probability (sigmoid), several are exclusive classes (softmax).
    The one place of this rule (plain modules, ``"auto"``, segmentation targets, metrics)."""
    return SIGMOID if int(channels) == 1 else SOFTMAX


def check_softmax_channels(activation, channels: int) -> None:
    """A softmax over one channel is always 1: refuse it with the one message."""
    if activation == SOFTMAX and int(channels) == 1:
        raise ValueError("activation='softmax' over a single output channel is always 1, so every probability "
                         "score would be constant; use 'sigmoid' for a one-channel model (or 'auto')")


def resolve_activation(activation: Optional[str], output: torch.Tensor, target=None) -> Optional[str]:
    """The activation to apply to ``output`` (N, K, ...).

    ``"auto"``: the target's own activation when it has one (a SegmentationTarget with
    ``activation="sigmoid"`` / ``"softmax"`` or ``prediction="sigmoid"``), else sigmoid for a
    single output channel and softmax for several.
    """
    if activation == NONE:
        activation = None
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    channels = output.shape[1] if output.dim() >= 2 else 1
    if activation == "auto":
        own = getattr(target, "activation", None)
        if own in (SIGMOID, SOFTMAX):
            activation = own
        elif getattr(target, "prediction", None) == SIGMOID:
            activation = SIGMOID
        else:
            activation = activation_for_channels(channels)
    check_softmax_channels(activation, channels)
    return activation


def activate(output: torch.Tensor, activation: Optional[str], dim: int = 1) -> torch.Tensor:
    """Probabilities from ``output`` along ``dim`` (``activation`` already resolved, not "auto")."""
    if activation == "softmax":
        return torch.softmax(output, dim=dim)
    if activation == "sigmoid":
        return torch.sigmoid(output)
    if activation in (None, "none"):
        return output
    raise ValueError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
