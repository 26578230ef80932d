"""Average sensitivity, local Lipschitz estimate and continuity of an explanation method, 2D and 3D, batched.

Each re-explains K perturbed copies of every input with the same method,
layer, options and frozen target (``robustness.explanation_changes``, the
machinery of max-sensitivity) and scores how far the map moves; lower is
more robust.  Phi is the method's map as ``explain`` returns it (per-sample
min-max normalised unless ``normalize=False`` is passed through).

* **avg_sensitivity** (Yeh et al., "On the (in)fidelity and sensitivity of
  explanations", NeurIPS 2019): the mean over K uniform perturbations delta in
  [-radius, radius] per input value of

      ||Phi(x + delta) - Phi(x)||_F / ||Phi(x)||_F

  (an all-zero Phi(x) is divided by 1).  Drawn with the same seed and radius
  as ``max_sensitivity`` the perturbations are the same, so it never exceeds
  max-sensitivity.  Quantus's ``AvgSensitivity`` defaults to radius 0.2 and
  200 samples; the default here is max-sensitivity's 0.02 and 10.
* **local_lipschitz** (Alvarez-Melis & Jaakkola, "On the robustness of
  interpretability methods", ICML WHI 2018): the largest ratio over K
  Gaussian perturbations (standard deviation ``noise_std``, Quantus's 0.1)

      max_k ||Phi(x + delta_k) - Phi(x)||_2 / ||delta_k||_2

  a sampled estimate of the explanation's local Lipschitz constant.
* **continuity** (Montavon, Samek & Mueller, "Methods for interpreting and
  understanding deep neural networks", Digital Signal Processing 2018), as
  Quantus defines it: the input is translated along its last spatial axis
  (width; in 3D also the last axis) by t_s = -W + s dx, s = 1 .. ``steps``,
  dx = (2 W + 1) // steps, the uncovered voxels set to the sample's minimum
  ("black"); the score is

      max_s || |Phi(x_s)| - |Phi(x)| ||_1 / (||x_s - x||_2 + 1e-9)

  (``absolute=False`` drops the magnitudes).  Quantus first divides maps by
  the largest magnitude of the whole batch; the engine's per-sample
  normalisation replaces that here.

Perturbations are drawn per copy from a generator seeded by ``seed`` and the
copy's index (results do not depend on ``batch_size``); ``perturbations``
(N, K, C, *S) replaces the draw, to compare with another library on the very
same noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._scoring import check_batch, positive_int
from .robustness import explanation_changes

__all__ = ["AvgSensitivity", "avg_sensitivity", "LocalLipschitz", "local_lipschitz", "Continuity", "continuity",
           "translations"]


@dataclass(frozen=True)
class AvgSensitivity:
    """Relative change of the explanation per perturbation (N, K) and its mean per sample (N,)."""

    sensitivities: torch.Tensor
    avg_sensitivity: torch.Tensor


@dataclass(frozen=True)
class LocalLipschitz:
    """Map change over input change per perturbation (N, K) and its maximum per sample (N,)."""

    ratios: torch.Tensor
    local_lipschitz: torch.Tensor


@dataclass(frozen=True)
class Continuity:
    """L1 map change over L2 input change per translation (N, steps), the shifts, and the maximum (N,)."""

    ratios: torch.Tensor
    shifts: torch.Tensor
    continuity: torch.Tensor


def _positive(value, name: str) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def avg_sensitivity(model, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
                    radius: float = 0.02, samples: int = 10, perturbations=None, batch_size: int = 32,
                    seed: int = 0, **options) -> AvgSensitivity:
    """Average sensitivity of ``method``'s maps per sample; ``options`` go to ``explain`` unchanged."""
    if perturbations is None:
        radius = _positive(radius, "radius")

    def relative_change(change, reference, delta):
        norms = reference.norm(dim=1)
        return change.norm(dim=1) / torch.where(norms == 0, torch.ones_like(norms), norms)

    values = explanation_changes(
        model, x, method, relative_change, target=target, layer=layer, samples=samples,
        perturbations=perturbations, batch_size=batch_size, seed=seed, options=options,
        draw=lambda shape, gen: (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * radius)
    return AvgSensitivity(sensitivities=values.float(), avg_sensitivity=values.mean(dim=1).float())


def local_lipschitz(model, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
                    noise_std: float = 0.1, samples: int = 10, perturbations=None, batch_size: int = 32,
                    seed: int = 0, **options) -> LocalLipschitz:
    """Local Lipschitz estimate of ``method``'s maps per sample; ``options`` go to ``explain`` unchanged."""
    if perturbations is None:
        noise_std = _positive(noise_std, "noise_std")

    def lipschitz_ratio(change, reference, delta):
        steps = delta.reshape(delta.shape[0], -1).norm(dim=1)
        moved = change.norm(dim=1)
        # Quantus adds 1e-10 to the step; a zero step moves nothing and scores 0.
        return torch.where(steps > 0, moved / (steps + 1e-10), torch.zeros_like(moved))

    values = explanation_changes(
        model, x, method, lipschitz_ratio, target=target, layer=layer, samples=samples,
        perturbations=perturbations, batch_size=batch_size, seed=seed, options=options,
        draw=lambda shape, gen: torch.randn(shape, generator=gen, dtype=torch.float64) * noise_std)
    return LocalLipschitz(ratios=values.float(), local_lipschitz=values.max(dim=1).values.float())


def translations(x: torch.Tensor, steps: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuity's translated inputs minus x, (N, steps, C, *S), and the shifts (steps,) in voxels.

    Shift t moves the content t voxels along the last axis (positive: towards
    higher indices); the uncovered voxels take the sample's minimum over all
    channels and voxels.
    """
    x = check_batch(x)
    positive_int(steps, "steps")
    width = x.shape[-1]
    dx = (2 * width + 1) // steps
    if dx < 1:
        raise ValueError(f"steps = {steps} exceeds 2 W + 1 = {2 * width + 1} translations of the last axis "
                         f"(W = {width}); choose steps <= {2 * width + 1}")
    shifts = torch.tensor([-width + (s + 1) * dx for s in range(steps)])
    floor = x.reshape(x.shape[0], -1).min(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    moved = []
    for t in shifts.tolist():
        shifted = floor.expand_as(x).clone()
        # |t| >= W moves everything out of view (t = W + 1 happens when steps divides 2 W + 1).
        if 0 <= t < width:
            shifted[..., t:] = x[..., :width - t]
        elif -width < t < 0:
            shifted[..., :width + t] = x[..., -t:]
        moved.append(shifted - x)
    return torch.stack(moved, dim=1), shifts


def continuity(model, x: torch.Tensor, method: str = "gradcam", target=None, layer=None, steps: int = 28,
               absolute: bool = True, batch_size: int = 32, **options) -> Continuity:
    """Continuity of ``method``'s maps under translation per sample; ``options`` go to ``explain`` unchanged."""
    deltas, shifts = translations(x, steps)

    def l1_over_l2(change, reference, delta):
        if absolute:
            change = (reference + change).abs() - reference.abs()
        return change.abs().sum(dim=1) / (delta.reshape(delta.shape[0], -1).norm(dim=1) + 1e-9)

    values = explanation_changes(model, x, method, l1_over_l2, target=target, layer=layer,
                                 perturbations=deltas, batch_size=batch_size, options=options)
    return Continuity(ratios=values.float(), shifts=shifts, continuity=values.max(dim=1).values.float())
