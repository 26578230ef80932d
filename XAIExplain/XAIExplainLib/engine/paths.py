"""Input-gradient methods over many inputs: SmoothGrad and Integrated Gradients, batched.

Both need d y / d x at many points (noisy copies, points on a straight path); the
points are stacked copy-major into forwards of ``batching.copies_per_forward`` copies,
and ``autograd.grad`` of the summed scores gives every row its own gradient (samples
are independent in eval mode). The target is frozen from the unperturbed output.

SmoothGrad: mean over ``samples`` noisy copies of the saliency |d y / d x| (max over
channels). Noise ~ N(0, sigma^2) with sigma = ``noise`` x (max - min of the sample).
The noise pattern comes from a local ``torch.Generator`` seeded with ``seed`` and
depends only on the seed and the shape of one sample: every sample of a batch gets the
same pattern (scaled by its own range), so a sample's map does not depend on the batch
it is in, and the global RNG is untouched.

Integrated Gradients: (x - x') * sum_j w_j d y / d x (x' + alpha_j (x - x')), summed
over input channels, with Gauss-Legendre nodes alpha_j and weights w_j on [0, 1]
(captum's default ``method="gausslegendre"``: exact for polynomial paths of degree
< 2 x steps, so the completeness error falls fast with ``steps``). The completeness
error |sum IG - (y(x) - y(x'))| per sample goes to
``info["integrated_gradients"]["completeness_error"]`` (``explain(..., return_info=True)``).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .batching import chunks, copies_per_forward
from .options import baseline, integer, non_negative_float, positive_int


def _gradients(model, bound, inputs: torch.Tensor, n: int) -> torch.Tensor:
    """d score / d input for a copy-major batch (copies * N, C, *S) against the frozen target."""
    inputs = inputs.detach().requires_grad_(True)
    output = model(inputs)
    rows = torch.arange(n, device=output.device).repeat(inputs.shape[0] // n)
    (grad,) = torch.autograd.grad(bound.score(output, rows).sum(), inputs, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad


def noise_stream(sample_shape: tuple[int, ...], seed: int) -> Iterator[torch.Tensor]:
    """Standard normal noise of one sample's shape (C, *S), one draw per copy, from a seeded local generator."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    while True:
        yield torch.randn(sample_shape, generator=generator)


def smoothgrad_noise(sample_shape: tuple[int, ...], samples: int = 25, seed: int = 0) -> torch.Tensor:
    """The (samples, C, *S) unit noise SmoothGrad uses (times sigma); for references and reproducibility."""
    stream = noise_stream(tuple(sample_shape), seed)
    return torch.stack([next(stream) for _ in range(samples)])


def smoothgrad(request) -> torch.Tensor:
    samples = positive_int(request.options, "samples", 25)
    noise = non_negative_float(request.options, "noise", 0.15)
    seed = integer(request.options, "seed", 0)
    x = request.x
    n = x.shape[0]
    _, bound = request.reference()
    flat = x.flatten(1)
    sigma = (noise * (flat.amax(dim=1) - flat.amin(dim=1))).reshape((1, n) + (1,) * (x.dim() - 1))
    stream = noise_stream(tuple(x.shape[1:]), seed)
    total = torch.zeros((n,) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    for start, stop in chunks(samples, copies_per_forward(n * x[0].numel(), samples)):
        unit = torch.stack([next(stream) for _ in range(stop - start)]).to(device=x.device, dtype=x.dtype)
        inputs = (x[None] + sigma * unit[:, None]).flatten(0, 1)  # (copies * N, C, *S)
        grad = _gradients(request.model, bound, inputs, n)
        total += grad.abs().amax(dim=1).reshape((stop - start, n) + tuple(x.shape[2:])).sum(dim=0)
    return total / samples


def gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """Nodes alpha in (0, 1) and weights (summing to 1) of the ``steps``-point Gauss-Legendre rule."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (0.5 * (nodes + 1)).tolist(), (0.5 * weights).tolist()


def integrated_gradients(request) -> torch.Tensor:
    steps = positive_int(request.options, "steps", 32)
    x = request.x
    x0 = baseline(request.options, "baseline", x)
    n = x.shape[0]
    output, bound = request.reference()
    alphas, weights = gauss_legendre(steps)
    path_gradient = torch.zeros_like(x)
    for start, stop in chunks(steps, copies_per_forward(n * x[0].numel(), steps)):
        alpha = torch.tensor(alphas[start:stop], dtype=x.dtype, device=x.device).reshape((-1, 1) + (1,) * (x.dim() - 1))
        weight = torch.tensor(weights[start:stop], dtype=x.dtype, device=x.device).reshape(alpha.shape)
        inputs = (x0[None] + alpha * (x - x0)[None]).flatten(0, 1)
        grad = _gradients(request.model, bound, inputs, n).reshape((stop - start,) + tuple(x.shape))
        path_gradient += (weight * grad).sum(dim=0)
    attribution = ((x - x0) * path_gradient).sum(dim=1)  # (N, *S)
    with torch.no_grad():
        score = bound.score(output)
        baseline_score = bound.score(request.model(x0))
    total = attribution.flatten(1).sum(dim=1)
    request.info["integrated_gradients"] = {
        "completeness_error": (total - (score - baseline_score)).abs().detach(),
        "score": score.detach(), "baseline_score": baseline_score.detach(),
        "attribution_sum": total.detach(), "steps": steps, "rule": "gauss-legendre",
    }
    return attribution
