"""Smooth and efficient model-parameter randomisation tests (Hedstroem et al., XAI in Action 2023).

Hedstroem et al. ("Sanity checks revisited: an exploration to repair the
model parameter randomisation test") show two flaws of the MPRT of Adebayo
et al. (``sanity.sanity_randomization``) and repair each:

``smprt`` smooth MPRT
    gradient noise makes the maps of the trained and the randomised model
    look unalike for reasons other than the weights.  Each map is therefore
    averaged over ``samples`` explanations of noisy copies x + e, e ~
    N(0, (noise * (max x - min x))^2) per sample, the last copy noise-free;
    the score is the Spearman correlation between the smoothed map of the
    trained model and that of the fully randomised model (low = the map
    depends on the weights).  Noise is drawn from one generator seeded with
    ``seed``: first the trained model's copies, then the randomised model's.
``emprt`` efficient MPRT
    a correlation between two maps says little about *how* they differ; the
    eMPRT compares their complexity instead, as the relative rise of the
    discrete entropy of the map's histogram (``n_bins`` equal-width bins over
    the map's range, natural log) from the trained to the fully randomised
    model: (H(random) - H(trained)) / H(trained).  High = randomising the
    weights turns a structured map into noise.

"Fully randomised" is every module owning parameters re-initialised as in
the cascading test (``sanity``: the module's own ``reset_parameters``,
seeded per layer name), on a deep copy; the caller's model is never
modified.  The target is frozen on the trained model's output, so both
models explain the same class.  Quantus's versions with ``skip_layers=True``
(its eMPRT default; ``return_last_correlation`` for the sMPRT) score the same
fully randomised model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..engine import explain
from ..engine.interrupt import checkpoint
from ._checks import as_maps
from ._scoring import check_batch, positive_int
from .sanity import _deep_copy, _layer_seed, _randomization_setup, _randomize, rank_correlation

__all__ = ["RandomisationScore", "emprt", "smprt", "discrete_entropy"]


@dataclass(frozen=True)
class RandomisationScore:
    """Per sample: the trained and the randomised model's entropies (N,) (eMPRT) or smoothed maps
    (N, *S) (sMPRT), and the score (N,)."""

    trained: torch.Tensor
    randomised: torch.Tensor
    score: torch.Tensor


def _histogram_edges(low: torch.Tensor, high: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, bins + 1) equal-width edges, computed as numpy's ``linspace`` does (so bin membership matches)."""
    steps = torch.arange(bins + 1, dtype=low.dtype, device=low.device)
    edges = steps.unsqueeze(0) * ((high - low) / bins).unsqueeze(1) + low.unsqueeze(1)
    edges[:, -1] = high
    return edges


def discrete_entropy(maps, n_bins: int = 100) -> torch.Tensor:
    """(N,) Shannon entropy (nats) of each map's histogram of ``n_bins`` bins over its own range.

    Bins as ``numpy.histogram``: half-open except the last, and a constant
    map's range widened by 0.5 on either side (its entropy is then 0).
    """
    positive_int(n_bins, "n_bins")
    maps = as_maps(maps)
    flat = maps.reshape(maps.shape[0], -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    flat_range = low == high
    low = torch.where(flat_range, low - 0.5, low)
    high = torch.where(flat_range, high + 0.5, high)
    edges = _histogram_edges(low, high, n_bins)
    index = (torch.searchsorted(edges.contiguous(), flat.contiguous(), right=True) - 1).clamp(0, n_bins - 1)
    counts = torch.zeros(flat.shape[0], n_bins, dtype=torch.float64, device=maps.device)
    counts.scatter_add_(1, index, torch.ones_like(flat, dtype=torch.float64))
    p = counts / counts.sum(dim=1, keepdim=True)
    return -(torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))).sum(dim=1)


def _fully_randomised(model, cascade: Sequence[str], seed: int):
    randomised = _deep_copy(model)
    modules = dict(randomised.named_modules())
    for name in cascade:
        checkpoint()  # cancel / heartbeat hook (engine/interrupt.py)
        _randomize(modules[name], _layer_seed(seed, name))
    return randomised


def emprt(model, x: torch.Tensor, method: str = "gradcam", target=None, layer=None, maps=None,
          layers: Optional[Sequence[str]] = None, n_bins: int = 100, seed: int = 0, **options) -> RandomisationScore:
    """Relative rise of the map's histogram entropy when every layer is randomised.

    ``maps`` are the trained model's maps (computed with ``method`` when
    None); ``layers`` limits which layers are randomised (default: all);
    ``options`` go to ``explain`` for both models.  A trained map of entropy
    0 (constant) has no relative rise to give and is refused.
    """
    positive_int(n_bins, "n_bins")
    maps, x, cascade, frozen, layer_spec = _randomization_setup(model, x, method, target, layer, maps, layers,
                                                                options)
    trained = discrete_entropy(maps, n_bins)
    flat = torch.nonzero(trained == 0).flatten().tolist()
    if flat:
        raise ValueError(f"the map of sample(s) {flat} is constant (entropy 0), so its relative entropy change "
                         "is undefined; explain with a method that gives these samples a map")
    randomised_model = _fully_randomised(model, cascade, seed)
    random_maps = explain(randomised_model, x, method, target=frozen, layer=layer_spec, **options)
    randomised = discrete_entropy(random_maps.to(maps.device), n_bins)
    return RandomisationScore(trained=trained.to(maps.dtype), randomised=randomised.to(maps.dtype),
                              score=((randomised - trained) / trained).to(maps.dtype))


def _smoothed(model, x, method, frozen, layer_spec, samples: int, noise: float, generator, options):
    flat = x.reshape(x.shape[0], -1)
    spread = (flat.max(dim=1).values - flat.min(dim=1).values).view(-1, *([1] * (x.dim() - 1)))
    total = None
    for sample in range(samples):
        checkpoint()
        if sample == samples - 1:
            noisy = x
        else:
            draw = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
            noisy = (x.double() + draw * noise * spread.double()).to(x.dtype)
        maps = explain(model, noisy, method, target=frozen, layer=layer_spec, **options).double() / samples
        total = maps if total is None else total + maps
    return total


def smprt(model, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
          layers: Optional[Sequence[str]] = None, samples: int = 50, noise: float = 0.1, seed: int = 0,
          **options) -> RandomisationScore:
    """Spearman correlation of the noise-averaged maps of the trained and the fully randomised model.

    ``samples`` explanations are averaged per map (``samples - 1`` noisy and
    the clean input), with noise of standard deviation ``noise`` times each
    sample's intensity range.  Costs 2 * ``samples`` explanations.
    """
    positive_int(samples, "samples")
    noise = float(noise)
    if noise < 0:
        raise ValueError(f"noise is a fraction of the intensity range and must be >= 0, got {noise}")
    check_batch(x)
    placeholder = torch.zeros(x.shape[0], *x.shape[2:], dtype=x.dtype, device=x.device)  # no trained map needed
    _, x, cascade, frozen, layer_spec = _randomization_setup(model, x, method, target, layer, placeholder, layers,
                                                             options)
    generator = torch.Generator().manual_seed(int(seed))
    trained = _smoothed(model, x, method, frozen, layer_spec, samples, noise, generator, options)
    randomised_model = _fully_randomised(model, cascade, seed)
    randomised = _smoothed(randomised_model, x, method, frozen, layer_spec, samples, noise, generator, options)
    score = rank_correlation(trained, randomised.to(trained.device))
    return RandomisationScore(trained=trained.to(x.dtype), randomised=randomised.to(x.dtype),
                              score=score.to(x.dtype))
