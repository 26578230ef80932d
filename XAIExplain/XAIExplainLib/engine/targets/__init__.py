"""What to explain: one target per sample, frozen from the unperturbed output.

A target spec is resolved once against the model's unperturbed output into a *bound*
target. Its ``score(output, rows)`` turns any later output (the same batch, or perturbed
copies of it) into one scalar per row, so gradient and perturbation methods share the
exact same definition of "the score".

Target specs accepted by ``resolve_target``:
- ``None``: the predicted class of each sample (argmax of the output);
- an int: that class for every sample;
- a sequence / 1-D tensor / numpy array of N ints: one class per sample (any other length
  is an error, never silently truncated);
- any object with a ``bind(output) -> BoundTarget`` method (segmentation targets).
"""
from __future__ import annotations

import torch

from .classes import BoundClassTarget, check_output, class_indices
from .segmentation import SegmentationTarget

__all__ = ["BoundClassTarget", "SegmentationTarget", "check_output", "class_indices", "resolve_target",
           "segmentation_default"]


def segmentation_default(target, output: torch.Tensor):
    """A plain target (None, a class, N classes) on a segmentation output: Seg-Grad-CAM over the predicted region.

    An int (or N ints) explains that class, None the most-predicted non-background class;
    in both cases the score is the sum of the class logits over its predicted region.
    """
    return SegmentationTarget(class_index=target).bind(output)


def resolve_target(target, output: torch.Tensor):
    """Bind a target spec to the unperturbed ``output``; see the module docstring."""
    output = check_output(output)
    if hasattr(target, "bind"):
        return target.bind(output.detach())
    if output.dim() > 2:
        return segmentation_default(target, output.detach())
    n, n_classes = output.shape
    if target is None:
        return BoundClassTarget(output.detach().argmax(dim=1))
    return BoundClassTarget(class_indices(target, n, n_classes, output.device))
