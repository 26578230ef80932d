"""Max-sensitivity and infidelity (Yeh et al., NeurIPS 2019), 2D and 3D, batched.

* **Max-sensitivity**: how much the explanation moves under small input
  noise.  For K perturbations delta drawn uniformly from [-radius, radius]
  per input value, the explanation of x + delta is computed with the same
  method, layer, options and frozen target, and

      max_k ||Phi(x + delta_k) - Phi(x)|| / ||Phi(x)||     (Frobenius norms)

  is the score (0: perfectly stable).  An all-zero Phi(x) is divided by 1,
  as captum's ``sensitivity_max`` does.
* **Infidelity**: how well the map predicts the effect of perturbing the
  input.  For K Gaussian perturbations I (standard deviation ``noise_std``),
  with the map applied to every channel of its voxel,

      E_I[(I . Phi - (f(x) - f(x - I)))^2]

  where f is the activated target score bound on the unperturbed output.
  With ``normalize`` (the default) Phi is first scaled by the factor beta
  that minimises that error, as in the paper's experiments and captum's
  ``normalize=True``: an attribution map's scale is arbitrary (the engine
  min-max normalises), and without beta the score would mostly measure it.

Perturbations are drawn per copy from a generator seeded by ``seed`` and the
copy's index, so results do not depend on ``batch_size``; ``perturbations``
(N, K, C, *S) replaces the draw, to compare with another library on the very
same noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..engine import explain, resolve_target
from ._checks import as_maps, check_input
from ._model import check_model, frozen_inference
from ._scoring import FrozenTarget, check_batch, positive_int, score_original_and_copies

__all__ = ["MaxSensitivity", "max_sensitivity", "Infidelity", "infidelity", "explanation_changes"]


@dataclass(frozen=True)
class MaxSensitivity:
    """Relative change of the explanation per perturbation (N, K) and its maximum per sample (N,)."""

    sensitivities: torch.Tensor
    max_sensitivity: torch.Tensor


@dataclass(frozen=True)
class Infidelity:
    """Infidelity per sample and the map scale beta it was computed with (1 without ``normalize``)."""

    infidelity: torch.Tensor  # (N,)
    beta: torch.Tensor  # (N,)


def _sample_count(samples, perturbations) -> int:
    """K: ``samples``, or the second axis of explicit ``perturbations`` (N, K, C, *S)."""
    if perturbations is None:
        return positive_int(samples, "samples")
    shape = tuple(torch.as_tensor(perturbations).shape)
    if len(shape) < 2 or shape[1] < 1:
        raise ValueError(f"perturbations must have shape (N, K, C, *S) with K >= 1, got {shape}")
    return shape[1]


def _perturbation_source(x: torch.Tensor, samples: int, perturbations, seed: int,
                         draw: Callable[[tuple, torch.Generator], torch.Tensor]):
    """``get(start, stop) -> (m, C, *S)`` perturbations of copies start..stop-1 (copy = sample * K + k)."""
    n = x.shape[0]
    if perturbations is not None:
        perturbations = torch.as_tensor(perturbations)
        expected = (n, samples, *x.shape[1:])
        if tuple(perturbations.shape) != expected:
            raise ValueError(f"perturbations must have shape {expected} (N, K, C, *S), got "
                             f"{tuple(perturbations.shape)}")
        flat = perturbations.reshape(n * samples, *x.shape[1:]).to(device=x.device, dtype=x.dtype)
        return lambda start, stop: flat[start:stop]
    generator = torch.Generator()

    def get(start: int, stop: int) -> torch.Tensor:
        draws = []
        for copy in range(start, stop):
            generator.manual_seed(int(seed) * 1_000_003 + copy)
            draws.append(draw(tuple(x.shape[1:]), generator))
        return torch.stack(draws).to(device=x.device, dtype=x.dtype)

    return get


def max_sensitivity(model, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
                    radius: float = 0.02, samples: int = 10, perturbations=None, batch_size: int = 32,
                    seed: int = 0, **options) -> MaxSensitivity:
    """Max-sensitivity of ``method``'s maps per sample; ``options`` go to ``explain`` unchanged.

    The explanation of x is recomputed here with the same options as the
    perturbed ones, so that both sides of the difference are processed alike
    (maps resampled or clipped elsewhere would add their own differences).
    ``radius`` is in the units of x (captum's default 0.02).
    """
    radius = float(radius)
    if perturbations is None and not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")

    def relative_change(change: torch.Tensor, reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        norms = reference.norm(dim=1)
        return change.norm(dim=1) / torch.where(norms == 0, torch.ones_like(norms), norms)

    sensitivities = explanation_changes(
        model, x, method, relative_change, target=target, layer=layer, samples=samples,
        perturbations=perturbations, batch_size=batch_size, seed=seed, options=options,
        draw=lambda shape, gen: (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * radius)
    return MaxSensitivity(sensitivities=sensitivities.float(), max_sensitivity=sensitivities.max(dim=1).values.float())


def explanation_changes(model, x: torch.Tensor, method: str,
                        measure: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                        target=None, layer=None, samples: int = 10, perturbations=None, batch_size: int = 32,
                        seed: int = 0, options: Optional[dict] = None,
                        draw: Optional[Callable[[tuple, torch.Generator], torch.Tensor]] = None) -> torch.Tensor:
    """(N, K) float64 ``measure`` of how ``method``'s map moves when x is perturbed K times per sample.

    The shared machinery of the explanation-robustness metrics (max- and
    average sensitivity, the local Lipschitz estimate): the target is bound on
    the unperturbed output and replayed for every copy, the reference map is
    recomputed with the same options, and copies are explained ``batch_size``
    at a time.  ``measure(change, reference, delta)`` gets, per copy, the
    flattened map difference Phi(x + delta) - Phi(x) (m, V), the flattened
    Phi(x) (m, V) and the perturbation delta (m, C, *S), all float64, and
    returns one number per copy.  ``draw(shape, generator)`` draws one delta
    (seeded per copy); ``perturbations`` (N, K, C, *S) replaces the draws.
    """
    if perturbations is None and draw is None:
        raise TypeError("explanation_changes needs draw= (how to draw a perturbation) or perturbations=")
    check_model(model)
    x = check_batch(x)
    samples = _sample_count(samples, perturbations)
    positive_int(batch_size, "batch_size")
    options = dict(options or {})
    n = x.shape[0]
    with frozen_inference(model, x) as forward:
        bound = resolve_target(target, forward(x))
    reference = explain(model, x, method, target=FrozenTarget(bound), layer=layer, **options)
    reference = reference.reshape(n, -1).double().to(x.device)
    noise = _perturbation_source(x, samples, perturbations, seed, draw)
    rows = torch.arange(n, device=x.device).repeat_interleave(samples)
    values = torch.empty(rows.numel(), dtype=torch.float64, device=x.device)
    for start in range(0, rows.numel(), batch_size):
        stop = min(start + batch_size, rows.numel())
        chunk = rows[start:stop]
        delta = noise(start, stop)
        perturbed = explain(model, x[chunk] + delta, method, target=FrozenTarget(bound, chunk), layer=layer,
                            **options)
        change = perturbed.reshape(chunk.numel(), -1).double().to(x.device) - reference[chunk]
        values[start:stop] = measure(change, reference[chunk], delta.double())
    return values.view(n, samples)


def infidelity(model, x: torch.Tensor, maps, target=None, samples: int = 10, noise_std: float = 0.1,
               normalize: bool = True, activation: Optional[str] = "auto", perturbations=None,
               batch_size: int = 32, seed: int = 0) -> Infidelity:
    """Infidelity of ``maps`` (N, *S) per sample, with the perturbed input x - I.

    ``noise_std`` is in the units of x.  ``perturbations`` (N, K, C, *S) are
    the I to use instead of Gaussian draws.
    """
    check_model(model)
    maps = as_maps(maps)
    x = check_input(x, maps).to(maps.device)
    samples = _sample_count(samples, perturbations)
    noise_std = float(noise_std)
    if perturbations is None and not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std}")
    positive_int(batch_size, "batch_size")
    n = x.shape[0]
    noise = _perturbation_source(x, samples, perturbations, seed,
                                 lambda shape, gen: torch.randn(shape, generator=gen, dtype=torch.float64)
                                 * noise_std)
    rows = torch.arange(n, device=maps.device).repeat_interleave(samples)
    flat_maps = maps.reshape(n, 1, -1).double()
    dots = torch.empty(rows.numel(), dtype=torch.float64, device=maps.device)

    def build(start: int, stop: int) -> torch.Tensor:
        chunk = rows[start:stop]
        delta = noise(start, stop)
        dots[start:stop] = (delta.reshape(chunk.numel(), x.shape[1], -1).double() * flat_maps[chunk]).sum(dim=(1, 2))
        return x[chunk] - delta

    original, perturbed = score_original_and_copies(model, x, maps, target, activation, rows, build,
                                                         batch_size)
    dots = dots.view(n, samples)
    drops = (original[rows] - perturbed).view(n, samples)
    if normalize:
        numerator, denominator = (dots * drops).sum(dim=1), (dots * dots).sum(dim=1)
        beta = torch.where(denominator != 0, numerator / torch.where(denominator != 0, denominator, 1.0), numerator)
    else:
        beta = torch.ones(n, dtype=torch.float64, device=maps.device)
    values = ((beta.unsqueeze(1) * dots - drops) ** 2).mean(dim=1)
    return Infidelity(infidelity=values.to(maps.dtype), beta=beta.to(maps.dtype))
