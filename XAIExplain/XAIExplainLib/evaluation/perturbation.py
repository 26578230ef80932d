"""Deletion and insertion curves: perturb voxels in map order and follow the target score.

Deletion replaces the most attributed voxels first by a baseline; a faithful
map makes the score fall fast (low area under the curve).  Insertion starts
from the baseline and restores the most attributed voxels first; a faithful
map makes the score rise fast (high area).  Every channel of a voxel is
perturbed together.  The target is frozen on the unperturbed output, and all
perturbed copies of all samples are run in batches of ``batch_size``.

Voxels with equal map values are ordered by a seeded random permutation:
ordering them by index would favour whatever lies first in memory, and a
constant map would then look good or bad depending on where the object is.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Optional, Union

import torch

from ..engine import resolve_target
from ._checks import as_maps, check_input
from ._model import activate, check_model, frozen_inference, resolve_activation

__all__ = [
    "BASELINES",
    "baseline_like",
    "PerturbationCurve",
    "perturbation_curve",
    "deletion_auc",
    "insertion_auc",
]

#: Named baselines accepted by ``baseline_like`` (besides a number or a tensor).
BASELINES = ("mean", "min")

BaselineSpec = Union[float, str, torch.Tensor]


def baseline_like(x: torch.Tensor, baseline: BaselineSpec) -> torch.Tensor:
    """The value a removed voxel takes, shaped like ``x`` (N, C, *S).

    A number (0 removes signal from zero-centred inputs), ``"mean"`` or
    ``"min"`` (per sample and channel over space: the image's average, or its
    darkest value such as air in CT), or a tensor broadcastable to x (for
    example a blurred copy of x).
    """
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
        except RuntimeError as error:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to x {tuple(x.shape)}"
            ) from error
    if isinstance(baseline, str):
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if baseline == "mean":
            value = flat.mean(dim=2)
        elif baseline == "min":
            value = flat.min(dim=2).values
        else:
            raise ValueError(f"baseline must be a number, a tensor or one of {BASELINES}, got {baseline!r}")
        return value.view(*value.shape, *([1] * (x.dim() - 2))).expand_as(x)
    if isinstance(baseline, Real) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise TypeError(f"baseline must be a number, a tensor or one of {BASELINES}, got {type(baseline).__name__}")


@dataclass(frozen=True)
class PerturbationCurve:
    """Target score against the fraction of voxels perturbed.

    ``fractions`` (T,) starts at 0 and ends at 1; ``scores`` (N, T) are the
    (activated) target scores; ``auc`` (N,) is the trapezoidal area.
    """

    mode: str
    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def _ranks(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, V) rank of each voxel in descending map order (0 = most attributed)."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(flat.shape[1], generator=generator).to(maps.device)
    order = torch.sort(flat[:, perm], dim=1, descending=True, stable=True).indices
    voxels = perm[order]
    ranks = torch.empty_like(voxels)
    ranks.scatter_(1, voxels, torch.arange(flat.shape[1], device=maps.device).expand(n, -1))
    return ranks


def perturbation_curve(model, x: torch.Tensor, maps, target=None, mode: str = "deletion", steps: int = 20,
                       baseline: BaselineSpec = 0.0, activation: Optional[str] = "auto",
                       batch_size: int = 32, seed: int = 0) -> PerturbationCurve:
    """Deletion or insertion curve of each sample, with ``steps`` + 1 points.

    ``target`` is resolved once on the unperturbed output (None: predicted
    class); ``activation`` is applied to the outputs before scoring (the
    usual choice is the class probability; None scores raw logits).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    check_model(model)
    maps = as_maps(maps)
    x = check_input(x, maps).to(maps.device)
    n, voxels = maps.shape[0], maps[0].numel()
    base = baseline_like(x, baseline)
    ranks = _ranks(maps, seed)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * voxels / steps).long().to(maps.device)
    rows = torch.arange(n, device=maps.device).repeat_interleave(steps + 1)
    levels = counts.repeat(n)
    scores = torch.empty(rows.numel(), dtype=torch.float64, device=maps.device)
    with frozen_inference(model, maps) as forward:
        reference = forward(x)
        bound = resolve_target(target, reference)
        activation = resolve_activation(activation, reference, target)
        for start in range(0, rows.numel(), batch_size):
            chunk = rows[start:start + batch_size]
            chosen = ranks[chunk] < levels[start:start + batch_size].unsqueeze(1)
            chosen = chosen.view(chunk.numel(), 1, *x.shape[2:])
            if mode == "deletion":
                batch = torch.where(chosen, base[chunk], x[chunk])
            else:
                batch = torch.where(chosen, x[chunk], base[chunk])
            output = activate(forward(batch).double(), activation)
            scores[start:start + chunk.numel()] = bound.score(output, chunk).double()
    scores = scores.view(n, steps + 1)
    fractions = counts.double() / voxels
    auc = torch.trapezoid(scores, fractions, dim=1)
    return PerturbationCurve(mode=mode, fractions=fractions.to(maps.dtype), scores=scores.to(maps.dtype),
                             auc=auc.to(maps.dtype))


def deletion_auc(model, x, maps, target=None, steps: int = 20, baseline: BaselineSpec = 0.0,
                 activation: Optional[str] = "auto", batch_size: int = 32, seed: int = 0) -> torch.Tensor:
    """Area under the deletion curve per sample (lower = more faithful)."""
    return perturbation_curve(model, x, maps, target, "deletion", steps, baseline, activation, batch_size, seed).auc


def insertion_auc(model, x, maps, target=None, steps: int = 20, baseline: BaselineSpec = 0.0,
                  activation: Optional[str] = "auto", batch_size: int = 32, seed: int = 0) -> torch.Tensor:
    """Area under the insertion curve per sample (higher = more faithful)."""
    return perturbation_curve(model, x, maps, target, "insertion", steps, baseline, activation, batch_size, seed).auc
