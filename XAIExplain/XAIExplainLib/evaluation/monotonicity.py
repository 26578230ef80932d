"""Monotonicity, monotonicity correlation and the faithfulness estimate, 2D and 3D, batched.

Three metrics that step through the voxels in map order, ``features_in_step``
voxels (every channel) per step, T = ceil(V / features_in_step) steps, with
s(.) the activated target score bound on the unperturbed input x and a_k the
map's sum over step k's voxels:

``monotonicity`` (Arya et al., "One explanation does not fit all", 2019)
    start from the baseline image and restore the voxels *least* attributed
    first; with s_k the score once steps 1..k are restored the map passes
    (1.0) when s_1 <= s_2 <= ... <= s_T, else 0.0: adding ever more
    important features should never lower the score.
``monotonicity_correlation`` (Nguyen & Martinez, 2020)
    remove step k alone (least attributed first) and measure the squared
    change v_k = (s(x) - s(x without step k))^2 / s(x)^2 (not divided when
    |s(x)| < eps, as Quantus); the score is Spearman(a_k, v_k) over the
    steps: high = the map's ranking matches how much each feature matters.
``faithfulness_estimate`` (Alvarez-Melis & Jaakkola, NeurIPS 2018)
    remove step k alone (most attributed first); the score is
    Pearson(a_k, s(x) - s(x without step k)) over the steps.

The baseline is deterministic (a number, "mean", "min" or a tensor; see
``perturbation.baseline_like``), so the paper's repeated noisy draws per
step (Quantus's ``nr_samples``) would all be equal and are not run.
Correlations of a constant map or of a model the removals do not move are
0, not NaN.  Quantus's ``Monotonicity`` (0.6) inserts baseline values into
the baseline image, so its curve never moves; the test compares with it
given a perturbation that restores the image's values, which is the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ._checks import as_maps, check_input
from ._model import check_model
from ._scoring import positive_int
from .faithfulness_correlation import pearson_rows
from .perturbation import BaselineSpec
from .removal import removal_scores, step_count, voxel_steps
from .sanity import rank_correlation

__all__ = ["StepScores", "monotonicity", "monotonicity_correlation", "faithfulness_estimate"]


@dataclass(frozen=True)
class StepScores:
    """Per sample and step: the map's sum a_k and the model's response (N, T); the score (N,)."""

    attribution_sums: torch.Tensor
    responses: torch.Tensor
    score: torch.Tensor


def _steps(model, x, maps, features_in_step: int, descending: bool, seed: int):
    check_model(model)
    maps = as_maps(maps)
    x = check_input(x, maps).to(maps.device)
    positive_int(features_in_step, "features_in_step")
    steps = voxel_steps(maps, features_in_step, descending=descending, seed=seed)
    count = step_count(maps[0].numel(), features_in_step)
    sums = torch.zeros(maps.shape[0], count, dtype=torch.float64, device=maps.device)
    sums.scatter_add_(1, steps, maps.reshape(maps.shape[0], -1).double())
    return maps, x, steps, count, sums


def monotonicity(model, x: torch.Tensor, maps, target=None, features_in_step: int = 1,
                 baseline: BaselineSpec = 0.0, activation: Optional[str] = "auto", batch_size: int = 32,
                 seed: int = 0) -> StepScores:
    """1.0 where restoring the voxels least attributed first never lowers the score, else 0.0.

    ``responses`` are the scores s_1..s_T of the partly restored images.
    """
    maps, x, steps, count, sums = _steps(model, x, maps, features_in_step, False, seed)
    _, scores = removal_scores(model, x, maps, steps, count, "insert", target, baseline, activation, batch_size)
    passed = (scores[:, 1:] >= scores[:, :-1]).all(dim=1)
    return StepScores(attribution_sums=sums.to(maps.dtype), responses=scores.to(maps.dtype),
                      score=passed.to(maps.dtype))


def monotonicity_correlation(model, x: torch.Tensor, maps, target=None, features_in_step: int = 1,
                             baseline: BaselineSpec = 0.0, eps: float = 1e-5, activation: Optional[str] = "auto",
                             batch_size: int = 32, seed: int = 0) -> StepScores:
    """Spearman correlation of each step's attribution with the squared relative change its removal causes."""
    maps, x, steps, count, sums = _steps(model, x, maps, features_in_step, False, seed)
    original, scores = removal_scores(model, x, maps, steps, count, "single", target, baseline, activation,
                                      batch_size)
    scale = torch.where(original.abs() >= eps, 1.0 / original.abs().clamp_min(1e-300), torch.ones_like(original))
    variance = (scores - original.unsqueeze(1)) ** 2 * (scale ** 2).unsqueeze(1)
    correlation = rank_correlation(sums.unsqueeze(-1), variance.unsqueeze(-1))
    return StepScores(attribution_sums=sums.to(maps.dtype), responses=variance.to(maps.dtype),
                      score=correlation.to(maps.dtype))


def faithfulness_estimate(model, x: torch.Tensor, maps, target=None, features_in_step: int = 1,
                          baseline: BaselineSpec = 0.0, activation: Optional[str] = "auto", batch_size: int = 32,
                          seed: int = 0) -> StepScores:
    """Pearson correlation of each step's attribution with the score drop its removal alone causes."""
    maps, x, steps, count, sums = _steps(model, x, maps, features_in_step, True, seed)
    original, scores = removal_scores(model, x, maps, steps, count, "single", target, baseline, activation,
                                      batch_size)
    drops = original.unsqueeze(1) - scores
    return StepScores(attribution_sums=sums.to(maps.dtype), responses=drops.to(maps.dtype),
                      score=pearson_rows(sums, drops).to(maps.dtype))
