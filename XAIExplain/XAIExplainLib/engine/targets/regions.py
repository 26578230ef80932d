"""Connected components of boolean masks, in torch on the mask's device (2D and 3D).

The engine depends on torch only, so the largest connected component of a predicted
region is found here rather than with scipy / SimpleITK. Connectivity is by faces
(4 in 2D, 6 in 3D), as in ``scipy.ndimage.label`` and SimpleITK's default.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _neighbour_max(labels: torch.Tensor) -> torch.Tensor:
    """Max of each voxel's label and its face neighbours' labels; labels (N, *S)."""
    result = labels
    for axis in range(1, labels.dim()):
        size = labels.shape[axis]
        if size < 2:
            continue
        pad = [0, 0] * (labels.dim() - 1 - axis)
        padded = F.pad(labels, pad + [1, 1])  # zero label outside the volume
        result = torch.maximum(result, torch.maximum(padded.narrow(axis, 0, size), padded.narrow(axis, 2, size)))
    return result


def component_labels(mask: torch.Tensor) -> torch.Tensor:
    """Label every voxel of ``mask`` (N, *S) with 1 + the largest flat index of its component; 0 outside.

    Labels spread to face neighbours (max propagation) and, to converge in few
    iterations on long thin structures, each voxel also jumps to the label of the voxel
    its label names (the pointer jumping of union-find). Both steps only ever raise a
    label to that of another voxel of the same component, so at the fixed point every
    component carries its largest index.
    """
    n = mask.shape[0]
    flat_size = mask[0].numel()
    index = torch.arange(1, flat_size + 1, device=mask.device).expand(n, flat_size).reshape(mask.shape)
    labels = torch.where(mask, index, torch.zeros_like(index))
    while True:
        spread = torch.where(mask, _neighbour_max(labels), labels)
        flat = spread.reshape(n, -1)
        jumped = flat.gather(1, (flat - 1).clamp(min=0)).reshape(mask.shape)
        updated = torch.where(mask, torch.maximum(spread, jumped), spread)
        if torch.equal(updated, labels):
            return labels
        labels = updated


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest face-connected component of each sample's mask (N, *S).

    Ties go, deterministically, to the component whose last voxel (in flat order) comes first.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"largest_component needs a boolean mask, got dtype {mask.dtype}")
    labels = component_labels(mask).reshape(mask.shape[0], -1)
    counts = torch.zeros(labels.shape[0], labels.shape[1] + 1, dtype=torch.long, device=mask.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels))
    counts[:, 0] = 0  # background
    sizes, best = counts.max(dim=1)
    keep = (labels == best[:, None]) & (sizes[:, None] > 0)
    return keep.reshape(mask.shape)
