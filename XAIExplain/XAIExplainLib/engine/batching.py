"""How many perturbed copies of a batch go through one forward pass.

Perturbation and path methods (Score-CAM, occlusion, SmoothGrad, Integrated Gradients,
KWC) evaluate the model on many modified copies of the input. Stacking copies into one
forward is what makes them fast; the number per forward is bounded by an element budget
so that a 3D volume does not exhaust memory where a 2D slice would use large batches.
"""
from __future__ import annotations

from typing import Iterator

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
