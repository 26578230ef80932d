"""Integrated Gradients (Sundararajan et al. 2017), path points batched copy-major.

Integrated Gradients: (x - x') * sum_j w_j d y / d x (x' + alpha_j (x - x')), summed
over input channels, with Gauss-Legendre nodes alpha_j and weights w_j on [0, 1]
(captum's default ``method="gausslegendre"``: exact for polynomial paths of degree
< 2 x steps, so the completeness error falls fast with ``steps``). The completeness
error |sum IG - (y(x) - y(x'))| per sample goes to
``info["integrated_gradients"]["completeness_error"]`` (``explain(..., return_info=True)``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..batching import chunks, copies_per_forward, copy_gradients
from ..interrupt import checkpoint
from ..options import baseline, positive_int
from ..registry import MethodInfo, register


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
        checkpoint(start, steps)  # cancel / heartbeat / progress hook (engine/interrupt.py)
        alpha = torch.tensor(alphas[start:stop], dtype=x.dtype, device=x.device).reshape((-1, 1) + (1,) * (x.dim() - 1))
        weight = torch.tensor(weights[start:stop], dtype=x.dtype, device=x.device).reshape(alpha.shape)
        inputs = (x0[None] + alpha * (x - x0)[None]).flatten(0, 1)
        grad = copy_gradients(request.model, bound, inputs, n).reshape((stop - start,) + tuple(x.shape))
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


register(MethodInfo(
    "integrated_gradients", "Integrated Gradients: (x - baseline) x path-averaged gradient (Gauss-Legendre)",
    compute=integrated_gradients, family="gradient", needs_layer=False, signed=True,
    cost="steps x (forward + full backward), batched", options=("steps", "baseline"),
))
