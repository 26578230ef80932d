"""Curves of the target score as features are removed most relevant first, 2D and 3D, batched.

Four metrics of one family (Quantus's names); each removes features
cumulatively in the map's order and follows the activated target score
s_k after step k (k = 1..T), with s_0 the unperturbed score:

``pixel_flipping`` (Bach et al., PLoS ONE 2015; Samek et al., IEEE TNNLS 2017)
    features are voxels, ``features_in_step`` per step, most attributed
    first; the curve is s_1..s_T and the score its trapezoidal area with unit
    spacing divided by T (Quantus's ``return_auc_per_sample`` value / T), the
    curve's mean height: low = faithful.
``region_perturbation`` (Samek et al., IEEE TNNLS 2017)
    features are non-overlapping cubic patches of ``patch_size`` ranked by
    the map's sum over the patch ("morf": most relevant first, "lerf",
    or a seeded "random" order); ``regions`` patches are removed and the
    curve is the drop s_0 - s_k (Quantus's curve).  The score is the paper's
    AOPC = 1 / (R + 1) * sum_{k=0..R} (s_0 - s_k): high = faithful (MoRF).
``selectivity`` (Montavon, Samek & Mueller, DSP 2018)
    every patch removed, most relevant first; the curve is s_1..s_G and the
    score its trapezoidal area with unit spacing divided by G (Quantus's
    area / G): low = faithful.
``irof`` Iterative Removal Of Features (Rieger & Hansen, 2020)
    features are segments (superpixels given as ``segments``; by default the
    patches of ``patch_size``, which tile 3D volumes as well), ranked by the
    map's *mean* over the segment; the curve is the relative score
    s_k / s_0 and the score Quantus's area over it, G - trapz(s_k / s_0),
    divided by the number of segments G: high = faithful.

Removed voxels take the ``baseline`` (see ``perturbation.baseline_like``),
computed once on the unperturbed input; Quantus recomputes its baseline on
the partly perturbed image at every step, which gives the same values for a
fixed number or for "black" (the minimum, which removal never lowers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from ._checks import as_maps, check_input
from ._model import check_model
from ._scoring import positive_int
from .perturbation import BaselineSpec
from .removal import (group_steps, group_sums, patch_count, patch_labels, removal_scores, segment_labels,
                      step_count, voxel_steps)

__all__ = ["RemovalCurve", "REGION_ORDERS", "pixel_flipping", "region_perturbation", "selectivity", "irof"]

#: Orders of ``region_perturbation``: most relevant first, least relevant first, seeded random.
REGION_ORDERS = ("morf", "lerf", "random")


@dataclass(frozen=True)
class RemovalCurve:
    """Per sample: the curve (N, T) over the removal steps and its one-number summary (N,).

    ``steps`` (N,) is the number of steps of each sample's curve (IROF's
    segment counts differ between samples; entries past a sample's steps are 0).
    """

    curve: torch.Tensor
    score: torch.Tensor
    steps: torch.Tensor


def _prepare(model, x, maps):
    check_model(model)
    maps = as_maps(maps)
    return maps, check_input(x, maps).to(maps.device)


def _curve(maps: torch.Tensor, curve: torch.Tensor, score: torch.Tensor, steps) -> RemovalCurve:
    steps = torch.as_tensor(steps, device=maps.device).expand(maps.shape[0]).clone()
    return RemovalCurve(curve=curve.to(maps.dtype), score=score.to(maps.dtype), steps=steps)


def pixel_flipping(model, x: torch.Tensor, maps, target=None, features_in_step: int = 1,
                   baseline: BaselineSpec = 0.0, activation: Optional[str] = "auto", batch_size: int = 32,
                   seed: int = 0) -> RemovalCurve:
    """Score after each step of ``features_in_step`` voxels removed, most attributed first.

    One model pass per step and sample: on volumes choose ``features_in_step``
    so that ceil(V / features_in_step) stays in the hundreds.
    """
    maps, x = _prepare(model, x, maps)
    count = step_count(maps[0].numel(), positive_int(features_in_step, "features_in_step"))
    steps = voxel_steps(maps, features_in_step, descending=True, seed=seed)
    _, scores = removal_scores(model, x, maps, steps, count, "cumulative", target, baseline, activation, batch_size)
    return _curve(maps, scores, torch.trapezoid(scores, dim=1) / count, count)


def _patch_steps(maps, patch_size, order: str, seed: int):
    spatial = tuple(maps.shape[1:])
    labels = patch_labels(spatial, patch_size, maps.device).expand(maps.shape[0], -1)
    groups = patch_count(spatial, patch_size)
    if order == "random":
        generator = torch.Generator().manual_seed(int(seed))
        values = torch.rand(maps.shape[0], groups, generator=generator, dtype=torch.float64).to(maps.device)
    else:
        values = group_sums(maps, labels, groups)
    return group_steps(values, labels, descending=order != "lerf", seed=seed), groups


def region_perturbation(model, x: torch.Tensor, maps, target=None, patch_size: Union[int, Sequence[int]] = 8,
                        regions: int = 100, order: str = "morf", baseline: BaselineSpec = 0.0,
                        activation: Optional[str] = "auto", batch_size: int = 32, seed: int = 0) -> RemovalCurve:
    """Drop of the score as ``regions`` patches are removed in ``order``; the score is the AOPC.

    ``patch_size`` is one edge length or one per spatial axis; ``regions``
    is capped at the number of patches.
    """
    if order not in REGION_ORDERS:
        raise ValueError(f"order must be one of {REGION_ORDERS}, got {order!r}")
    positive_int(regions, "regions")
    maps, x = _prepare(model, x, maps)
    steps, groups = _patch_steps(maps, patch_size, order, seed)
    count = min(regions, groups)
    original, scores = removal_scores(model, x, maps, steps, count, "cumulative", target, baseline, activation,
                                      batch_size)
    drops = original.unsqueeze(1) - scores
    return _curve(maps, drops, drops.sum(dim=1) / (count + 1), count)


def selectivity(model, x: torch.Tensor, maps, target=None, patch_size: Union[int, Sequence[int]] = 8,
                baseline: BaselineSpec = 0.0, activation: Optional[str] = "auto", batch_size: int = 32,
                seed: int = 0) -> RemovalCurve:
    """Score as every patch is removed, most relevant first; the score is the area / number of patches."""
    maps, x = _prepare(model, x, maps)
    steps, groups = _patch_steps(maps, patch_size, "morf", seed)
    _, scores = removal_scores(model, x, maps, steps, groups, "cumulative", target, baseline, activation,
                               batch_size)
    return _curve(maps, scores, torch.trapezoid(scores, dim=1) / groups, groups)


def irof(model, x: torch.Tensor, maps, target=None, segments=None, patch_size: Union[int, Sequence[int]] = 8,
         baseline: BaselineSpec = "mean", activation: Optional[str] = "auto", batch_size: int = 32,
         seed: int = 0) -> RemovalCurve:
    """IROF: relative score as segments are removed by decreasing mean relevance; area over it / G.

    ``segments`` (N, *S) or (*S) integer labels (superpixels); None uses
    the patches of ``patch_size``.  The baseline defaults to each image's
    mean, as in the paper and Quantus.  A sample whose unperturbed score is
    0 has no relative curve to give: it is refused.
    """
    maps, x = _prepare(model, x, maps)
    if segments is None:
        spatial = tuple(maps.shape[1:])
        labels = patch_labels(spatial, patch_size, maps.device).expand(maps.shape[0], -1)
        counts = torch.full((maps.shape[0],), patch_count(spatial, patch_size), device=maps.device)
    else:
        labels, counts = segment_labels(segments, maps)
    most = int(counts.max())
    sums = group_sums(maps, labels, most)
    sizes = group_sums(torch.ones_like(maps), labels, most)
    present = torch.arange(most, device=maps.device).unsqueeze(0) < counts.unsqueeze(1)
    means = torch.where(present, sums / sizes.clamp_min(1.0), torch.full_like(sums, -torch.inf))
    steps = group_steps(means, labels, descending=True, seed=seed)
    original, scores = removal_scores(model, x, maps, steps, most, "cumulative", target, baseline, activation,
                                      batch_size)
    zero = torch.nonzero(original == 0).flatten().tolist()
    if zero:
        raise ValueError(f"the target score of sample(s) {zero} is 0 on the unperturbed input, so IROF's relative "
                         "score is undefined; explain a target the model scores above 0")
    relative = torch.where(present, scores / original.unsqueeze(1), torch.zeros_like(scores))
    areas = torch.stack([torch.trapezoid(row[:int(g)]) for row, g in zip(relative, counts)])
    return _curve(maps, relative, (counts.double() - areas) / counts.double(), counts)
