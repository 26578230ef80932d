"""ROAD: RemOve And Debias (Rong et al., ICML 2022), 2D and 3D, batched.

At each percentile p the p % most relevant voxels of the map (MoRF) or the
p % least relevant ones (LeRF) are removed by noisy linear imputation (see
``imputation``), the model is re-run, and the target is scored with the
binding of the unperturbed input.  A faithful map makes the score drop fast
under MoRF and stay under LeRF.  Every channel of a voxel is removed
together; ties in the map are ordered by a seeded permutation, as in the
deletion curve, and ``int(V * p / 100)`` of the V voxels are removed (the
count Quantus removes).

Per copy the score is the activated target score (the class probability, or
a segmentation target's probability summed over its frozen region); for a
classifier, whether the target class is still the predicted one is recorded
too, which is the accuracy curve the paper plots.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..engine import resolve_target
from ._checks import as_maps, check_input
from ._model import check_model, frozen_inference, resolve_activation
from ._scoring import positive_int, score_copies, target_classes
from .imputation import noisy_linear_imputation
from .perturbation import _ranks

__all__ = ["ORDERS", "DEFAULT_PERCENTILES", "RoadCurve", "road", "road_curve"]

#: "morf": most relevant first removed; "lerf": least relevant first removed.
ORDERS = ("morf", "lerf")

#: The paper's grid: 10 %, 20 %, ..., 90 % of the voxels removed.
DEFAULT_PERCENTILES = tuple(range(10, 100, 10))


@dataclass(frozen=True)
class RoadCurve:
    """Target score with p % of the voxels imputed, per sample and percentile.

    ``scores`` (N, P) are activated target scores; ``kept`` (N, P) is 1.0
    where a classifier still predicts the target class (None for
    segmentation outputs); ``mean_score`` and ``accuracy`` average them over
    the percentiles.
    """

    order: str
    percentiles: torch.Tensor  # (P,)
    scores: torch.Tensor  # (N, P)
    kept: Optional[torch.Tensor]  # (N, P) or None
    mean_score: torch.Tensor  # (N,)
    accuracy: Optional[torch.Tensor]  # (N,) or None


def _percentiles(percentiles: Sequence[float], voxels: int) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.as_tensor(percentiles, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("percentiles must hold at least one value")
    if not bool(((values > 0) & (values < 100)).all()):
        raise ValueError(f"percentiles are shares of the voxels removed and must lie in (0, 100), got "
                         f"{values.tolist()}")
    counts = torch.tensor([int(voxels * float(p) / 100) for p in values.tolist()], dtype=torch.long)
    return values, counts


def road_curve(model, x: torch.Tensor, maps, target=None, order: str = "morf",
               percentiles: Sequence[float] = DEFAULT_PERCENTILES, noise: float = 0.01,
               activation: Optional[str] = "auto", batch_size: int = 32, seed: int = 0) -> RoadCurve:
    """The ROAD curve of each sample: remove ``percentiles`` % of voxels in ``order``, impute, score.

    ``noise`` is the standard deviation of the imputation noise (the paper's
    0.01 for inputs of unit scale; 0 for the plain linear imputation).
    ``seed`` seeds the tie order and the noise: the same call gives the same
    curve, whatever ``batch_size``.  ``batch_size`` copies are imputed and run
    at once (the imputation holds about eight float buffers per copy); lower
    it for large volumes.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    positive_int(batch_size, "batch_size")
    check_model(model)
    maps = as_maps(maps)
    x = check_input(x, maps).to(maps.device)
    n, voxels = maps.shape[0], maps[0].numel()
    values, counts = _percentiles(percentiles, voxels)
    counts = counts.to(maps.device)
    ranks = _ranks(maps, seed)
    steps = counts.numel()
    rows = torch.arange(n, device=maps.device).repeat_interleave(steps)
    levels = counts.repeat(n)
    # One noise seed per (sample, percentile) copy, derived from the user's seed.
    seeds = int(seed) * 1_000_003 + torch.arange(rows.numel())

    def build(start: int, stop: int) -> torch.Tensor:
        chunk, level = rows[start:stop], levels[start:stop].unsqueeze(1)
        chosen = ranks[chunk] < level if order == "morf" else ranks[chunk] >= voxels - level
        return noisy_linear_imputation(x[chunk], chosen.view(chunk.numel(), *x.shape[2:]), noise,
                                       seeds[start:stop])

    with frozen_inference(model, maps) as forward:
        output = forward(x)
        bound = resolve_target(target, output)
        activation = resolve_activation(activation, output, target)
        classifier = output.dim() == 2
        if classifier:
            classes = target_classes(bound, "ROAD's accuracy").to(maps.device)

            def still_predicted(out: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
                return out.argmax(dim=1).to(maps.device) == classes[chunk]

            scores, kept = score_copies(forward, bound, rows, build, activation, batch_size, still_predicted)
        else:
            scores, kept = score_copies(forward, bound, rows, build, activation, batch_size), None
    scores = scores.view(n, steps)
    kept = kept.view(n, steps) if kept is not None else None
    return RoadCurve(
        order=order,
        percentiles=values.to(maps.dtype),
        scores=scores.to(maps.dtype),
        kept=None if kept is None else kept.to(maps.dtype),
        mean_score=scores.mean(dim=1).to(maps.dtype),
        accuracy=None if kept is None else kept.mean(dim=1).to(maps.dtype),
    )


def road(model, x, maps, target=None, order: str = "morf", percentiles: Sequence[float] = DEFAULT_PERCENTILES,
         noise: float = 0.01, activation: Optional[str] = "auto", batch_size: int = 32,
         seed: int = 0) -> torch.Tensor:
    """Mean activated target score over the ROAD percentiles, per sample; see ``road_curve``."""
    return road_curve(model, x, maps, target, order, percentiles, noise, activation, batch_size, seed).mean_score
