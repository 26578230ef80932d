"""Sensitivity-n (Ancona, Ceolini, Oeztireli & Gross, ICLR 2018), 2D and 3D, batched.

A map satisfies sensitivity-n when, for every set S of n voxels, removing S
changes the target score by the map's total over S.  Ancona et al. measure
how close a map comes by the Pearson correlation, over random sets S of
size n, between

    sum_{i in S} map_i   and   s(x) - s(x with S replaced by the baseline),

and plot it against n.  Here each n in ``sizes`` (voxel counts, or fractions
of the voxels; by default from 1 % up to Quantus's ``n_max_percentage`` of
80 %) draws ``runs`` random sets per sample, every channel of a voxel
removed together, and the correlations come back per sample and n; the one
number per sample is their mean over n.  The correlation at one n is
Bhatt et al.'s faithfulness correlation at subset size n, so that function
computes it.

Quantus's ``SensitivityN`` scores something else: it removes the voxels in
map order, cumulatively, and correlates across the *samples of the batch*
at each step, which gives one number per n for the whole batch rather than
the paper's per-sample curve; the test compares with a direct transcription
of the paper's definition instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from ._checks import as_maps
from ._scoring import positive_int
from .faithfulness_correlation import _subset_size, faithfulness_correlation
from .perturbation import BaselineSpec

__all__ = ["DEFAULT_SIZES", "SensitivityN", "sensitivity_n"]

#: Fractions of the voxels removed at once: 1 % to Quantus's default maximum of 80 %.
DEFAULT_SIZES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)


@dataclass(frozen=True)
class SensitivityN:
    """The set sizes n (K,), the correlation per sample and n (N, K) and its mean over n (N,)."""

    sizes: torch.Tensor
    correlation: torch.Tensor
    score: torch.Tensor


def sensitivity_n(model, x: torch.Tensor, maps, target=None,
                  sizes: Sequence[Union[int, float]] = DEFAULT_SIZES, runs: int = 50,
                  baseline: BaselineSpec = 0.0, activation: Optional[str] = "auto", batch_size: int = 32,
                  seed: int = 0) -> SensitivityN:
    """Pearson correlation of set totals with score drops over ``runs`` random sets per size n.

    ``sizes`` holds voxel counts (ints) or fractions of the voxels (floats
    in (0, 1)); each size draws its sets with seed ``seed + its position``.
    Sizes that give the same count are kept (their draws differ).
    """
    maps = as_maps(maps)
    positive_int(runs, "runs")
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes must name at least one set size n")
    voxels = maps[0].numel()
    counts = [_subset_size(size, voxels) for size in sizes]
    columns = [faithfulness_correlation(model, x, maps, target=target, runs=runs, subset_size=count,
                                        baseline=baseline, activation=activation, batch_size=batch_size,
                                        seed=seed + position).correlation
               for position, count in enumerate(counts)]
    correlation = torch.stack(columns, dim=1)
    return SensitivityN(sizes=torch.tensor(counts), correlation=correlation, score=correlation.mean(dim=1))
