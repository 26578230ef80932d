"""Input checks and small tensor helpers shared by the evaluation metrics.

Every metric takes maps of shape (N, *S) with S two- or three-dimensional and,
where it needs one, a mask on the same grid.  Checking both here keeps the
error messages identical across metrics, so a user who passes a (C, H, W) map
or a mask on the wrong grid learns the same thing whichever metric they call.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

# The engine's per-sample min-max: a constant map becomes all zeros (it highlights
# nothing) instead of NaN, so metrics and displayed maps agree on what a map means.
from ..engine.normalize import minmax as _engine_minmax

__all__ = [
    "as_maps",
    "as_masks",
    "check_input",
    "check_spacing",
    "minmax_normalize",
    "require_nonempty",
]


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def as_maps(maps, name: str = "maps") -> torch.Tensor:
    """Return ``maps`` as a floating (N, *S) tensor with two or three spatial dims.

    Integer or boolean maps are promoted to float32 (a binary map is a valid,
    if coarse, attribution); float64 stays float64 so no precision is lost.
    """
    maps = _as_tensor(maps, name)
    if maps.dim() not in (3, 4):
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, D, H, W) (one map per sample, no channel "
            f"axis), got shape {tuple(maps.shape)}"
        )
    if maps.shape[0] == 0:
        raise ValueError(f"{name} holds no samples (N = 0)")
    if not maps.is_floating_point():
        maps = maps.float()
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return maps


def as_masks(masks, maps: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Return ``masks`` as a bool (N, *S) tensor on the maps' device.

    A mask of shape S (no sample axis) is shared by every sample.  Any nonzero
    value counts as inside, so label maps (0/1, 0/255, 0/label) work as they are.
    """
    masks = _as_tensor(masks, name).to(maps.device)
    if tuple(masks.shape) == tuple(maps.shape[1:]):
        masks = masks.unsqueeze(0).expand_as(maps)
    if tuple(masks.shape) != tuple(maps.shape):
        raise ValueError(
            f"{name} shape {tuple(masks.shape)} does not match the maps: expected "
            f"{tuple(maps.shape)} (one mask per sample) or {tuple(maps.shape[1:])} (shared)"
        )
    return masks != 0


def require_nonempty(masks: torch.Tensor, name: str = "mask", full_ok: bool = True) -> None:
    """Raise if a sample's mask is empty (or covers everything when ``full_ok`` is False).

    Dice, pointing games and foreground contrasts are undefined without a
    foreground; naming the offending samples saves the user a search.
    """
    flat = masks.reshape(masks.shape[0], -1)
    counts = flat.sum(dim=1)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"{name} is empty for sample(s) {empty}: the metric needs at least one voxel inside")
    if not full_ok:
        full = torch.nonzero(counts == flat.shape[1]).flatten().tolist()
        if full:
            raise ValueError(
                f"{name} covers the whole image for sample(s) {full}: the metric needs voxels "
                f"outside the mask as well"
            )


def check_input(x, maps: torch.Tensor) -> torch.Tensor:
    """Check that the model input ``x`` (N, C, *S) matches the maps (N, *S)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != maps.dim() + 1:
        raise ValueError(
            f"x must have shape (N, C, *S) matching maps of shape (N, *S); got x {tuple(x.shape)} "
            f"and maps {tuple(maps.shape)}"
        )
    if x.shape[0] != maps.shape[0] or tuple(x.shape[2:]) != tuple(maps.shape[1:]):
        raise ValueError(
            f"x {tuple(x.shape)} and maps {tuple(maps.shape)} disagree: need the same N and the "
            f"same spatial shape (maps are on the input grid)"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    return x


def check_spacing(spacing: Optional[Sequence[float]], ndim: int) -> torch.Tensor:
    """Return the voxel spacing in mm as a float64 tensor of ``ndim`` entries.

    ``None`` means 1 mm per voxel, so a tolerance is then given in voxels.
    """
    if spacing is None:
        return torch.ones(ndim, dtype=torch.float64)
    values = torch.as_tensor(spacing, dtype=torch.float64).flatten()
    if values.numel() != ndim:
        raise ValueError(
            f"spacing must give one value per spatial axis ({ndim}), in the order of the tensor's "
            f"axes, got {list(values.tolist())}"
        )
    if not (values > 0).all():
        raise ValueError(f"spacing must be positive, got {list(values.tolist())}")
    return values


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] over its own voxels; constant maps become zeros."""
    return _engine_minmax(maps, per_sample=True)
