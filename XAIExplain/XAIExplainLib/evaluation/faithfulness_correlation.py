"""Faithfulness correlation (Bhatt, Weller & Moura, IJCAI 2020), 2D and 3D, batched.

Over ``runs`` random subsets S of ``subset_size`` voxels, the voxels of S are
replaced by a baseline, and the Pearson correlation across runs between the
map's total over S and the drop of the target score,

    corr_S( sum_{i in S} map_i ,  f(x) - f(x with S removed) ),

is the score (1: the map's mass predicts exactly how much removing a set
costs).  Every channel of a voxel is removed together, and the target is
bound once on the unperturbed output.  Shifting or scaling the map changes
every subset's total alike, so the score does not depend on how the map was
normalised.  A run whose removals do not change the score at all (or a
constant map) has no correlation to give: the score is then 0, not NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Optional, Union

import torch

from ._checks import as_maps, check_input
from ._model import check_model
from ._scoring import positive_int, score_original_and_copies
from .perturbation import BaselineSpec, baseline_like

__all__ = ["FaithfulnessCorrelation", "faithfulness_correlation", "pearson_rows", "random_subsets"]


@dataclass(frozen=True)
class FaithfulnessCorrelation:
    """Per run: the map's sum over the subset and the score drop; per sample: their correlation."""

    subsets: torch.Tensor  # (N, R, k) flat voxel indices
    attribution_sums: torch.Tensor  # (N, R)
    score_drops: torch.Tensor  # (N, R)
    correlation: torch.Tensor  # (N,)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of a with the same row of b (float64); 0 where either is constant."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    norm = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))
    return torch.where(norm > 0, (a * b).sum(dim=1) / norm.clamp_min(1e-300), torch.zeros_like(norm))


def _subset_size(subset_size: Union[int, float], voxels: int) -> int:
    if isinstance(subset_size, bool) or not isinstance(subset_size, Real):
        raise TypeError(f"subset_size must be a voxel count or a fraction, got {type(subset_size).__name__}")
    if isinstance(subset_size, int):
        size = subset_size
    elif 0 < subset_size < 1:
        size = max(1, int(round(subset_size * voxels)))
    else:
        raise ValueError(f"subset_size as a float is a fraction of the voxels and must lie in (0, 1), got "
                         f"{subset_size}")
    if not 1 <= size < voxels:
        raise ValueError(f"subset_size must be between 1 and {voxels - 1} voxels (the image has {voxels}), "
                         f"got {size}")
    return size


def random_subsets(n: int, runs: int, size: int, voxels: int, seed: int = 0) -> torch.Tensor:
    """(n, runs, size) voxel indices, each row drawn without replacement by a seeded generator."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.stack([torch.randperm(voxels, generator=generator)[:size] for _ in range(runs)])
                        for _ in range(n)])


def faithfulness_correlation(model, x: torch.Tensor, maps, target=None, runs: int = 100,
                             subset_size: Union[int, float] = 0.05, baseline: BaselineSpec = 0.0,
                             activation: Optional[str] = "auto", batch_size: int = 32, seed: int = 0,
                             subsets: Optional[torch.Tensor] = None) -> FaithfulnessCorrelation:
    """Faithfulness correlation of each sample over ``runs`` random subsets.

    ``subset_size`` is a voxel count (an int) or a fraction of the voxels (a
    float in (0, 1); the default removes 5 %).  ``baseline`` is what removed
    voxels become (see ``baseline_like``).  ``subsets`` (N, R, k) of flat voxel
    indices replaces the seeded draw, for comparing with another library on
    the very same subsets.
    """
    positive_int(batch_size, "batch_size")
    check_model(model)
    maps = as_maps(maps)
    x = check_input(x, maps).to(maps.device)
    n, voxels = maps.shape[0], maps[0].numel()
    if subsets is None:
        positive_int(runs, "runs")
        subsets = random_subsets(n, runs, _subset_size(subset_size, voxels), voxels, seed)
    else:
        subsets = torch.as_tensor(subsets).long()
        if subsets.dim() != 3 or subsets.shape[0] != n or subsets.shape[2] < 1:
            raise ValueError(f"subsets must have shape (N={n}, runs, k) of voxel indices, got "
                             f"{tuple(subsets.shape)}")
        if bool(((subsets < 0) | (subsets >= voxels)).any()):
            raise ValueError(f"subsets hold voxel indices outside 0..{voxels - 1}")
    subsets = subsets.to(maps.device)
    runs = subsets.shape[1]
    flat_x = x.reshape(n, x.shape[1], -1)
    flat_base = baseline_like(x, baseline).reshape(n, x.shape[1], -1)
    rows = torch.arange(n, device=maps.device).repeat_interleave(runs)
    chosen = subsets.reshape(n * runs, -1)

    def build(start: int, stop: int) -> torch.Tensor:
        chunk = rows[start:stop]
        removed = torch.zeros(chunk.numel(), voxels, dtype=torch.bool, device=maps.device)
        removed.scatter_(1, chosen[start:stop], True)
        batch = torch.where(removed.unsqueeze(1), flat_base[chunk], flat_x[chunk])
        return batch.view(chunk.numel(), *x.shape[1:])

    original, perturbed = score_original_and_copies(model, x, maps, target, activation, rows, build,
                                                         batch_size)
    drops = (original[rows] - perturbed).view(n, runs)
    sums = maps.reshape(n, -1).double().gather(1, chosen.view(n, -1)).view(n, runs, -1).sum(dim=2)
    correlation = pearson_rows(sums, drops)
    return FaithfulnessCorrelation(subsets=subsets, attribution_sums=sums.to(maps.dtype),
                                   score_drops=drops.to(maps.dtype), correlation=correlation.to(maps.dtype))
