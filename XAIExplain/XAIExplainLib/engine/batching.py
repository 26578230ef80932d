"""Copy-major batches of perturbed copies: how many go through one forward pass, and their scores.

Perturbation and path methods (Score-CAM, occlusion, SmoothGrad, Integrated Gradients,
KWC) evaluate the model on many modified copies of the input. Stacking copies into one
forward is what makes them fast; the number per forward is bounded by an element budget
so that a 3D volume does not exhaust memory where a 2D slice would use large batches.
Rows are copy-major (row = copy * N + sample), and every copy is scored against the
target frozen from the unperturbed output.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .targets import BoundClassTarget

# Input elements per forward pass (2 Mi floats = 8 MiB of input; the network's own
# activations are a small multiple of that for the U-Nets and CNNs the engine targets).
# Measured on CPU: larger batches stop paying off once the activations leave the cache.
ELEMENTS_PER_FORWARD = 2 ** 21


def copies_per_forward(elements_per_copy: int, total: int, budget: int | None = None) -> int:
    """Copies per forward: as many as the budget (default ``ELEMENTS_PER_FORWARD``) allows, in [1, total]."""
    budget = ELEMENTS_PER_FORWARD if budget is None else budget
    return max(1, min(total, budget // max(1, elements_per_copy)))


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges covering [0, total) in steps of ``size``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)


def copy_rows(n: int, copies: int, device) -> torch.Tensor:
    """Sample index of each row of a copy-major batch of ``copies`` x N rows."""
    return torch.arange(n, device=device).repeat(copies)


def copy_scores(model, bound, inputs: torch.Tensor, n: int, probability: bool = False) -> torch.Tensor:
    """Scores of a copy-major batch (copies * N, C, *S) against the frozen target: (copies, N)."""
    copies = inputs.shape[0] // n
    output = model(inputs)
    rows = copy_rows(n, copies, output.device)
    if probability and isinstance(bound, BoundClassTarget):
        scores = torch.softmax(output, dim=1).gather(1, bound.classes.to(output.device)[rows][:, None])[:, 0]
    else:
        scores = bound.score(output, rows)
    return scores.reshape(copies, n)


def copy_gradients(model, bound, inputs: torch.Tensor, n: int) -> torch.Tensor:
    """d score / d input for a copy-major batch (copies * N, C, *S) against the frozen target."""
    inputs = inputs.detach().requires_grad_(True)
    output = model(inputs)
    rows = copy_rows(n, inputs.shape[0] // n, output.device)
    (grad,) = torch.autograd.grad(bound.score(output, rows).sum(), inputs, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad
