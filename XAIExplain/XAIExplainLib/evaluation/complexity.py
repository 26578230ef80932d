"""Complexity of a map: sparseness, complexity (entropy) and effective complexity, 2D and 3D, batched.

All three read the map alone (no model, no mask) and, as in the papers and
Quantus's defaults, the magnitude |Phi| of each of the d voxels:

* **sparseness** (Chalasani et al., "Concise explanations of neural networks
  using adversarial training", ICML 2020): the Gini index of |Phi| sorted
  ascending, a_(1) <= ... <= a_(d),

      G = sum_i (2 i - d - 1) a_(i) / (d sum_i a_(i))        in [0, 1 - 1/d]

  (0: every voxel equally relevant; 1 - 1/d: one voxel holds everything).
  Higher is sparser, i.e. simpler to read.
* **complexity** (Bhatt, Weller & Moura, "Evaluating and aggregating
  feature-based model explanations", IJCAI 2020): the Shannon entropy of the
  fractional contributions p_i = |Phi_i| / sum_j |Phi_j|,

      H = - sum_i p_i ln p_i                                  in [0, ln d]

  (0: one voxel; ln d: uniform).  Lower is simpler.
* **effective complexity** (Nguyen & Martinez, "On quantitative aspects of
  model interpretability", 2020): the number of voxels whose magnitude,
  relative to the map's largest (|Phi| / max |Phi|, per map), exceeds
  ``eps``, i.e. the features the explanation actually uses.  Lower is simpler.

An all-zero map singles nothing out and is scored as a uniform one: sparseness
0, complexity ln d, effective complexity 0.  Quantus computes the same
formulas; it adds 1e-7 to every value before the Gini index and 1e-12 inside
the logarithm, which moves its numbers by about that much, and its
``normalise_by_max`` divides by the largest magnitude of the whole batch
where this module divides each map by its own (identical for one map, or for
maps already scaled to a maximum of 1, as the engine's are).
"""
from __future__ import annotations

import math

import torch

from ._checks import as_maps

__all__ = ["sparseness", "complexity", "effective_complexity"]


def _magnitudes(maps) -> torch.Tensor:
    """(N, d) float64 |Phi| of each map."""
    maps = as_maps(maps)
    return maps.reshape(maps.shape[0], -1).double().abs()


def sparseness(maps) -> torch.Tensor:
    """Gini index of |Phi| per map (N,), in [0, 1): higher is sparser."""
    dtype = as_maps(maps).dtype
    values = torch.sort(_magnitudes(maps), dim=1).values
    d = values.shape[1]
    weights = 2 * torch.arange(1, d + 1, dtype=torch.float64, device=values.device) - d - 1
    total = values.sum(dim=1)
    gini = (values * weights).sum(dim=1) / (d * torch.where(total > 0, total, torch.ones_like(total)))
    return gini.to(dtype)


def complexity(maps) -> torch.Tensor:
    """Entropy of the fractional contributions |Phi_i| / sum |Phi| per map (N,), in [0, ln d]."""
    dtype = as_maps(maps).dtype
    values = _magnitudes(maps)
    total = values.sum(dim=1, keepdim=True)
    shares = values / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(shares, shares).sum(dim=1)
    entropy = torch.where(total[:, 0] > 0, entropy, torch.full_like(entropy, math.log(values.shape[1])))
    return entropy.to(dtype)


def effective_complexity(maps, eps: float = 1e-5) -> torch.Tensor:
    """Number of voxels with |Phi| / max |Phi| > ``eps`` per map (N,), as floats."""
    eps = float(eps)
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1) (a share of the map's largest magnitude), got {eps}")
    dtype = as_maps(maps).dtype
    values = _magnitudes(maps)
    peak = values.max(dim=1, keepdim=True).values
    relative = values / torch.where(peak > 0, peak, torch.ones_like(peak))
    return (relative > eps).sum(dim=1).to(dtype)
