"""Faithfulness of a map as a soft input mask.

From Mullan & Sonka, "Kernel-weighted contribution: a method of visual attribution for 3D deep
learning segmentation in medical imaging", SPIE Medical Imaging 2022.

The map, min-max normalised to M in [0, 1], is used as a continuous mask on
the input: the model is re-run on ``x * M`` (or ``M * x + (1 - M) * b`` for a
baseline b) and its output probabilities P~ are compared with those on x, P,
for the same frozen target.  A good map keeps the prediction (high Prediction
Preserved, little Excess Prediction) while keeping little of the image (low
Image Preserved).

* PP  = sum min(P, P~) / sum P
* EP  = sum ReLU(P~ - P) / sum P
* IP  = mean(M)
* RFA = mean(M | foreground) - mean(M | background)

For a classifier P is the probability of the target class.  For a
segmentation model P is the probability map of the target class, summed over
every output voxel (as Mullan & Sonka do) or over a region frozen on the
unperturbed output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

from ..engine import resolve_target
from ..engine.activations import SIGMOID, activation_for_channels
from ._checks import as_maps, as_masks, check_input, minmax_normalize, require_nonempty
from ._model import activate, check_model, frozen_inference, resolve_activation
from .perturbation import baseline_like

__all__ = [
    "Preservation",
    "preservation",
    "prediction_preserved",
    "excess_prediction",
    "image_preserved",
    "relative_foreground",
]

RegionSpec = Union[None, str, torch.Tensor]


@dataclass(frozen=True)
class Preservation:
    """Target probabilities on the original and on the map-masked input, and the scores.

    ``original`` and ``masked`` are (N, 1) for a classifier and (N, *S_out)
    for a segmentation model (zero outside the scored region).
    """

    original: torch.Tensor
    masked: torch.Tensor
    prediction_preserved: torch.Tensor  # (N,)
    excess_prediction: torch.Tensor  # (N,)


def _class_channel(prob: torch.Tensor, bound) -> torch.Tensor:
    """(N, *S_out) probability map of each sample's target class."""
    classes = getattr(bound, "classes", None)
    if classes is None:
        raise TypeError(
            f"the segmentation target {type(bound).__name__} does not say which output class it scores "
            "(no 'classes'); preservation needs the class channel"
        )
    classes = torch.as_tensor(classes, device=prob.device).long().flatten()
    if classes.numel() != prob.shape[0]:
        raise ValueError(f"the target gives {classes.numel()} classes for {prob.shape[0]} samples")
    index = classes.view(-1, *([1] * (prob.dim() - 1))).expand(-1, 1, *prob.shape[2:])
    return prob.gather(1, index)[:, 0]


def _region(region: RegionSpec, prob: torch.Tensor, bound, activation: Optional[str]) -> Optional[torch.Tensor]:
    """Bool (N, *S_out) voxels to score, frozen on the unperturbed probabilities; None = all."""
    if region is None:
        return None
    shape = (prob.shape[0], *prob.shape[2:])
    if isinstance(region, str):
        if region != "predicted":
            raise ValueError(f"region must be None, 'predicted' or a bool mask, got {region!r}")
        channel = _class_channel(prob, bound)
        if SIGMOID in (activation, activation_for_channels(prob.shape[1])):
            return channel > 0.5
        classes = torch.as_tensor(bound.classes, device=prob.device).view(-1, *([1] * (prob.dim() - 2)))
        return prob.argmax(dim=1) == classes
    if not isinstance(region, torch.Tensor):
        raise TypeError(f"region must be None, 'predicted' or a torch.Tensor mask, got {type(region).__name__}")
    region = region.to(prob.device)
    if tuple(region.shape) == shape[1:]:
        region = region.unsqueeze(0).expand(shape)
    if tuple(region.shape) != shape:
        raise ValueError(
            f"region shape {tuple(region.shape)} does not match the model output: expected {shape} or {shape[1:]}"
        )
    return region != 0


def preservation(model, x: torch.Tensor, maps, target=None, activation: Optional[str] = "auto",
                 region: RegionSpec = None, baseline=0.0) -> Preservation:
    """Run the model on x and on the map-masked input and compare target probabilities.

    ``target`` is resolved once on the output for x (None: predicted class)
    and reused for the masked input.  ``activation`` turns logits into
    probabilities: ``"auto"`` (the target's activation, else sigmoid for one output
    channel and softmax for several), ``"softmax"``, ``"sigmoid"`` or None if the model
    already outputs probabilities.  ``region`` applies to segmentation outputs only:
    None scores every output voxel of the target class (as Mullan & Sonka do),
    ``"predicted"`` the voxels predicted as that class on x, or a bool mask
    (N, *S_out).  ``baseline`` is what a masked-out voxel becomes (0: the
    paper's ``x * M``; see ``baseline_like`` for the choices).
    """
    check_model(model)
    maps = as_maps(maps)
    x = check_input(x, maps).to(maps.device)
    weight = minmax_normalize(maps).unsqueeze(1).to(x.dtype)
    masked_input = weight * x + (1 - weight) * baseline_like(x, baseline)
    with frozen_inference(model, maps) as forward:
        output = forward(x)
        bound = resolve_target(target, output)
        masked_output = forward(masked_input)
    activation = resolve_activation(activation, output, target)
    prob = activate(output.double(), activation)
    masked_prob = activate(masked_output.double(), activation)
    if prob.dim() == 2:
        if region is not None:
            raise ValueError("region applies to segmentation outputs (N, K, *S); this model is a classifier")
        original = bound.score(prob).unsqueeze(1)
        masked = bound.score(masked_prob).unsqueeze(1)
    else:
        keep = _region(region, prob, bound, activation)
        original = _class_channel(prob, bound)
        masked = _class_channel(masked_prob, bound)
        if keep is not None:
            original = original * keep
            masked = masked * keep
    n = original.shape[0]
    original, masked = original.reshape(n, -1), masked.reshape(n, -1)
    total = original.sum(dim=1)
    if not bool((total > 0).all()):
        bad = torch.nonzero(total <= 0).flatten().tolist()
        raise ValueError(
            f"the target probability is zero or negative for sample(s) {bad} (empty region, or raw "
            "outputs with activation=None); preservation is a ratio to it, so it is undefined"
        )
    pp = torch.minimum(original, masked).sum(dim=1) / total
    excess = (masked - original).clamp_min(0).sum(dim=1) / total
    shape = (n, 1) if prob.dim() == 2 else (n, *prob.shape[2:])
    return Preservation(
        original=original.reshape(shape).to(maps.dtype),
        masked=masked.reshape(shape).to(maps.dtype),
        prediction_preserved=pp.to(maps.dtype),
        excess_prediction=excess.to(maps.dtype),
    )


def prediction_preserved(model, x, maps, target=None, activation: Optional[str] = "auto",
                         region: RegionSpec = None, baseline=0.0) -> torch.Tensor:
    """PP = sum min(P, P~) / sum P per sample, in [0, 1]; see ``preservation``."""
    return preservation(model, x, maps, target, activation, region, baseline).prediction_preserved


def excess_prediction(model, x, maps, target=None, activation: Optional[str] = "auto",
                      region: RegionSpec = None, baseline=0.0) -> torch.Tensor:
    """EP = sum ReLU(P~ - P) / sum P per sample: how much masking *raises* the output."""
    return preservation(model, x, maps, target, activation, region, baseline).excess_prediction


def image_preserved(maps) -> torch.Tensor:
    """IP = mean of the min-max normalised map: the share of the image the mask keeps."""
    maps = as_maps(maps)
    return minmax_normalize(maps).reshape(maps.shape[0], -1).mean(dim=1)


def relative_foreground(maps, masks) -> torch.Tensor:
    """RFA = mean(M | foreground) - mean(M | background), in [-1, 1].

    1 for a map equal to the mask, -1 for the inverted map, 0 for a constant
    one.  The mask must have voxels both inside and outside.
    """
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    require_nonempty(masks, full_ok=False)
    n = maps.shape[0]
    norm = minmax_normalize(maps).reshape(n, -1).double()
    fg = masks.reshape(n, -1)
    mean_fg = (norm * fg).sum(dim=1) / fg.sum(dim=1)
    mean_bg = (norm * ~fg).sum(dim=1) / (~fg).sum(dim=1)
    return (mean_fg - mean_bg).to(maps.dtype)
