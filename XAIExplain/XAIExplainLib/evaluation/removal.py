"""Removing features in the map's order, step by step: the engine of the Quantus-style faithfulness metrics.

Pixel flipping, region perturbation, selectivity, IROF, monotonicity, the
monotonicity correlation and the faithfulness estimate all do the same thing
with different features and bookkeeping: split the voxels into *features*
(single voxels taken ``features_in_step`` at a time, cubic patches, or given
segments), order the features by the map, and run the model on copies of
the input in which step k's feature is removed

    "cumulative"  every feature of steps 0..k replaced by the baseline (deletion),
    "single"      only step k's feature replaced (one-at-a-time occlusion),
    "insert"      the baseline image with the features of steps 0..k restored.

A feature's voxels are every channel of those voxels.  Each copy is scored
with the target bound once on the unperturbed input (design principle 5) and
all copies of all samples run in batches.  Ties in the map are ordered by a
seeded permutation, as in the deletion curve.

The step of each voxel is one (N, V) integer tensor (``steps``), so each
metric only says how voxels map to steps; a voxel that no step removes has
a step >= the number of steps run.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from ._scoring import positive_int, score_original_and_copies
from .perturbation import BaselineSpec, _ranks, baseline_like

__all__ = ["MODES", "voxel_steps", "step_count", "patch_labels", "patch_count", "segment_labels", "group_steps",
           "group_sums", "removal_scores"]

#: How a step's copy is made (see the module docstring).
MODES = ("cumulative", "single", "insert")


def voxel_steps(maps: torch.Tensor, features_in_step: int, descending: bool, seed: int = 0) -> torch.Tensor:
    """(N, V) step of each voxel: its rank in map order, ``features_in_step`` voxels per step.

    ``descending``: the most attributed voxels come first (pixel flipping,
    faithfulness estimate); otherwise the least attributed (monotonicity).
    """
    positive_int(features_in_step, "features_in_step")
    voxels = maps[0].numel()
    if features_in_step > voxels:
        raise ValueError(f"features_in_step ({features_in_step}) exceeds the {voxels} voxels of a map")
    ranks = _ranks(maps if descending else -maps, seed)
    return torch.div(ranks, features_in_step, rounding_mode="floor")


def _patch_size(patch_size: Union[int, Sequence[int]], spatial: Tuple[int, ...]) -> Tuple[int, ...]:
    sizes = (patch_size,) * len(spatial) if isinstance(patch_size, int) and not isinstance(patch_size, bool) \
        else tuple(patch_size)
    if len(sizes) != len(spatial) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"patch_size must be a positive int or one positive int per spatial axis "
                         f"({len(spatial)}), got {patch_size!r}")
    if any(s > extent for s, extent in zip(sizes, spatial)):
        raise ValueError(f"patch_size {sizes} is larger than the image {spatial}; choose a smaller patch")
    return sizes


def patch_labels(spatial: Tuple[int, ...], patch_size: Union[int, Sequence[int]], device=None) -> torch.Tensor:
    """(V,) patch index of each voxel: non-overlapping patches tiling the grid in row-major order.

    Where an axis is not a multiple of the patch, the grid is centred (the
    shortfall split as floor / ceil between the two ends) and the border
    patches are cut by the image: Quantus pads the image that way and drops
    the padding again, which removes the same voxels.
    """
    sizes = _patch_size(patch_size, spatial)
    counts = [-(-extent // size) for extent, size in zip(spatial, sizes)]
    label = torch.zeros(spatial, dtype=torch.long, device=device)
    for axis, (extent, size) in enumerate(zip(spatial, sizes)):
        before = (-extent % size) // 2
        index = torch.div(torch.arange(extent, device=device) + before, size, rounding_mode="floor")
        stride = 1
        for later in counts[axis + 1:]:
            stride *= later
        shape = [1] * len(spatial)
        shape[axis] = extent
        label = label + (index * stride).view(shape)
    return label.flatten()


def segment_labels(segments, maps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Given segments (N, *S) or (*S) as integer labels -> ((N, V) labels 0..G_n - 1, (N,) counts G_n).

    Any integer labels work (superpixels from SLIC, a label map); each
    sample's labels are renumbered in increasing order.
    """
    segments = torch.as_tensor(segments, device=maps.device)
    if segments.is_floating_point() or segments.dtype == torch.bool:
        raise TypeError(f"segments must hold integer labels, got dtype {segments.dtype}")
    if tuple(segments.shape) == tuple(maps.shape[1:]):
        segments = segments.expand_as(maps)
    if tuple(segments.shape) != tuple(maps.shape):
        raise ValueError(f"segments must have the maps' shape {tuple(maps.shape)} or {tuple(maps.shape[1:])}, "
                         f"got {tuple(segments.shape)}")
    labels, counts = [], []
    for row in segments.reshape(maps.shape[0], -1):
        _, inverse = torch.unique(row, return_inverse=True)
        labels.append(inverse)
        counts.append(int(inverse.max()) + 1)
    if min(counts) < 2:
        raise ValueError("every sample needs at least two segments to order; got a sample with one segment")
    return torch.stack(labels), torch.tensor(counts, device=maps.device)


def group_sums(maps: torch.Tensor, labels: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, G) sum of each sample's map over each group of voxels (float64)."""
    flat = maps.reshape(maps.shape[0], -1).double()
    sums = torch.zeros(flat.shape[0], groups, dtype=torch.float64, device=maps.device)
    return sums.scatter_add_(1, labels, flat)


def group_steps(values: torch.Tensor, labels: torch.Tensor, descending: bool, seed: int = 0) -> torch.Tensor:
    """(N, V) step of each voxel when whole groups are removed in the order of their ``values`` (N, G)."""
    ranks = _ranks(values if descending else -values, seed)
    return ranks.gather(1, labels)


def removal_scores(model, x: torch.Tensor, maps: torch.Tensor, steps: torch.Tensor, count: int, mode: str,
                   target=None, baseline: BaselineSpec = 0.0, activation: Optional[str] = "auto",
                   batch_size: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Activated target score of the unperturbed input (N,) and of each step's copy (N, count), float64.

    ``steps`` (N, V) is the step of each voxel; copy k of a sample follows
    ``mode`` (``MODES``) with the features of step k.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    positive_int(batch_size, "batch_size")
    n, channels = x.shape[0], x.shape[1]
    flat_x = x.reshape(n, channels, -1)
    flat_base = baseline_like(x, baseline).reshape(n, channels, -1)
    rows = torch.arange(n, device=maps.device).repeat_interleave(count)
    levels = torch.arange(count, device=maps.device).repeat(n)
    steps = steps.to(maps.device)

    def build(start: int, stop: int) -> torch.Tensor:
        chunk, level = rows[start:stop], levels[start:stop].unsqueeze(1)
        chosen = steps[chunk] == level if mode == "single" else steps[chunk] <= level
        chosen = chosen.unsqueeze(1)
        if mode == "insert":
            batch = torch.where(chosen, flat_x[chunk], flat_base[chunk])
        else:
            batch = torch.where(chosen, flat_base[chunk], flat_x[chunk])
        return batch.view(chunk.numel(), *x.shape[1:])

    original, scores = score_original_and_copies(model, x, maps, target, activation, rows, build,
                                                      batch_size)
    return original, scores.view(n, count)


def step_count(voxels: int, features_in_step: int) -> int:
    """Number of steps that remove ``voxels`` voxels ``features_in_step`` at a time (the last may be short)."""
    return -(-voxels // features_in_step)


def patch_count(spatial: Tuple[int, ...], patch_size: Union[int, Sequence[int]]) -> int:
    """Number of patches ``patch_labels`` tiles the grid into."""
    total = 1
    for extent, size in zip(spatial, _patch_size(patch_size, spatial)):
        total *= -(-extent // size)
    return total

