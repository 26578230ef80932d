"""GradientSHAP (Lundberg & Lee 2017, as captum computes it): expected gradients with noise, seeded.

For each of ``samples`` draws s: a baseline b_s picked from the baseline distribution,
Gaussian noise e_s (standard deviation ``stdev``, absolute, in input units) and a point
alpha_s ~ U(0, 1). With x_s = x + e_s the attribution is
mean_s (x_s - b_s) * dy/dx (b_s + alpha_s (x_s - b_s)), summed over input channels.

The draws come from a local ``torch.Generator`` seeded with ``seed`` and depend only on
the seed, the number of baselines and the shape of one sample (``gradient_shap_draws``):
every sample of a batch gets the same draws, so a sample's map does not depend on the
batch it is in, and the global random state is untouched. The points are stacked
copy-major into forwards of ``batching.copies_per_forward`` copies.

``baselines``: a number, one reference (C, *S) / (1, C, *S), or a distribution
(B, C, *S) of B references drawn from for every sample.
"""
from __future__ import annotations

from numbers import Real

import numpy as np
import torch

from ..batching import chunks, copies_per_forward, copy_gradients
from ..interrupt import checkpoint
from ..options import integer, non_negative_float, positive_int
from ..registry import MethodInfo, register


def baseline_distribution(options: dict, x: torch.Tensor) -> torch.Tensor:
    """The ``baselines`` option as a (B, C, *S) tensor on x's device and dtype."""
    value = options.get("baselines", 0.0)
    sample_shape = tuple(x.shape[1:])
    if isinstance(value, Real) and not isinstance(value, bool):
        return torch.full((1,) + sample_shape, float(value), dtype=x.dtype, device=x.device)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"option baselines must be a number or a tensor (B, C, *S) of references, got "
                        f"{type(value).__name__}")
    if value.dim() == x.dim() - 1:
        value = value.unsqueeze(0)
    if value.dim() != x.dim() or tuple(value.shape[1:]) != sample_shape or value.shape[0] < 1:
        raise ValueError(f"option baselines has shape {tuple(value.shape)}; give a number, one reference of a "
                         f"sample's shape {sample_shape}, or B references (B, *{sample_shape})")
    return value.to(device=x.device, dtype=x.dtype)


def gradient_shap_draws(sample_shape: tuple[int, ...], baselines: int, samples: int, seed: int):
    """(baseline index (samples,), unit noise (samples, C, *S), alpha (samples,)) for one seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    indices = torch.randint(baselines, (samples,), generator=generator)
    noise = torch.randn((samples,) + tuple(sample_shape), generator=generator)
    alphas = torch.rand(samples, generator=generator, dtype=torch.float64)
    return indices, noise, alphas


def _gradient_shap(request):
    samples = positive_int(request.options, "samples", 25)
    stdev = non_negative_float(request.options, "stdev", 0.0)
    seed = integer(request.options, "seed", 0)
    x = request.x
    references = baseline_distribution(request.options, x)
    n = x.shape[0]
    _, bound = request.reference()
    indices, unit, alphas = gradient_shap_draws(tuple(x.shape[1:]), references.shape[0], samples, seed)
    total = torch.zeros_like(x)
    for start, stop in chunks(samples, copies_per_forward(n * x[0].numel(), samples)):
        checkpoint(start, samples)  # cancel / heartbeat / progress hook (engine/interrupt.py)
        count = stop - start
        broadcast = (count, 1) + (1,) * (x.dim() - 1)
        noisy = x[None] + stdev * unit[start:stop].to(device=x.device, dtype=x.dtype)[:, None]  # (b, N, C, *S)
        chosen = references[indices[start:stop].to(x.device)][:, None]  # (b, 1, C, *S)
        alpha = alphas[start:stop].to(device=x.device, dtype=x.dtype).reshape(broadcast)
        difference = noisy - chosen
        points = (chosen + alpha * difference).flatten(0, 1)
        grad = copy_gradients(request.model, bound, points, n).reshape(difference.shape)
        total += (difference * grad).sum(dim=0)
    return (total / samples).sum(dim=1)


register(MethodInfo(
    "gradient_shap", "GradientSHAP: expected (x + noise - baseline) x gradient at random points to random baselines",
    compute=_gradient_shap, family="gradient", needs_layer=False, signed=True,
    cost="samples x (forward + full backward), batched", options=("samples", "stdev", "baselines", "seed"),
))
