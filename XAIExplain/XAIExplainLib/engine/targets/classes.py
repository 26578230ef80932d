"""Class targets of classifiers: one class per sample, checked, frozen from the unperturbed output.

The bound class target scores pre-softmax logits; ``resolve_target`` (package level) picks it
for (N, K) outputs.
"""
from __future__ import annotations

from numbers import Integral

import numpy as np
import torch


class BoundClassTarget:
    """Class scores (pre-softmax logits) of a classifier, one class per sample."""

    def __init__(self, classes: torch.Tensor):
        self.classes = classes

    def score(self, output: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logit of each row's class; ``rows[m]`` says which sample's class row m uses."""
        classes = self.classes if rows is None else self.classes[rows]
        return output.gather(1, classes.to(output.device)[:, None])[:, 0]

    def subset(self, rows) -> "BoundClassTarget":
        return BoundClassTarget(self.classes[rows])

    def describe(self, sample: int) -> str:
        return f"class {int(self.classes[sample])}"


def class_indices(target, n: int, n_classes: int, device) -> torch.Tensor:
    if isinstance(target, bool):
        raise TypeError("target must be None, a class index, or a sequence of N class indices; got a bool")
    if isinstance(target, Integral):
        classes = torch.full((n,), int(target), dtype=torch.long, device=device)
    elif isinstance(target, (torch.Tensor, np.ndarray, list, tuple)):
        values = torch.as_tensor(np.asarray(target) if isinstance(target, (list, tuple)) else target)
        if values.dim() == 0:
            return class_indices(int(values), n, n_classes, device)
        if values.dim() != 1 or values.is_floating_point() or values.dtype == torch.bool:
            raise TypeError(
                f"a target sequence must be 1-D integer class indices, got dtype {values.dtype} "
                f"and shape {tuple(values.shape)}"
            )
        if values.numel() != n:
            raise ValueError(
                f"got {values.numel()} targets for a batch of {n} samples; give one class per sample, "
                "a single int for all, or None for the predicted class"
            )
        classes = values.to(device=device, dtype=torch.long)
    else:
        raise TypeError(
            "target must be None (predicted class), an int, a sequence of N ints, or a segmentation target; "
            f"got {type(target).__name__}"
        )
    out_of_range = classes[(classes < 0) | (classes >= n_classes)]
    if out_of_range.numel():
        raise ValueError(
            f"target class {int(out_of_range[0])} is out of range: the model has {n_classes} output classes "
            f"(0..{n_classes - 1})"
        )
    return classes


def check_output(output) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}, not a tensor; a tuple, list or dict output is read "
            "with the option output_key= (default: a tuple's first element), anything else needs a wrapper "
            "whose forward returns the class scores (N, K) or segmentation logits (N, K, *spatial)"
        )
    if output.dim() < 2:
        raise ValueError(f"the model output has shape {tuple(output.shape)}; expected (N, K) or (N, K, *spatial)")
    return output
