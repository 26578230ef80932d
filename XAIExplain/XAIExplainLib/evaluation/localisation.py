"""Localisation metrics: how well a map agrees with a mask, without running a model.

* ``dice_sweep`` reads the map as a soft segmentation (Guan & Loew, "A Sneak Attack on
  Segmentation of Medical Images Using Deep Neural Network Classifiers", arXiv 2022,
  https://arxiv.org/abs/2201.02771):
  threshold the min-max normalised map and score the Dice overlap with a
  ground-truth mask, over a sweep of thresholds and at Otsu's threshold.
* ``specificity`` / ``sensitivity`` compare the thresholded map with the voxels
  the model really uses (Philbrick et al., AJR 2018, https://doi.org/10.2214/AJR.18.20331):
  a specific map does not light up voxels
  the model ignores.
* ``pointing_game`` asks whether the map's maximum lies in the mask (within a
  tolerance in mm); ``energy_pointing_game`` is the share of map mass inside.

All functions take maps (N, *S) and masks (N, *S) or (*S), 2D or 3D, and
return per-sample tensors on the maps' device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ._checks import as_maps, as_masks, check_spacing, minmax_normalize, require_nonempty

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DiceSweep",
    "dice_sweep",
    "otsu_threshold",
    "SpecificityResult",
    "specificity_sensitivity",
    "specificity",
    "sensitivity",
    "pointing_game",
    "energy_pointing_game",
]

#: Guan & Loew's sweep (arXiv 2201.02771): 0.05, 0.10, ..., 0.95 on the min-max normalised map.
DEFAULT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))

_OTSU_BINS = 256
# Upper bound on (points x mask voxels) distances held at once by the pointing game.
_DISTANCE_CHUNK = 1 << 22


@dataclass(frozen=True)
class DiceSweep:
    """Dice of the thresholded map against a mask, per sample.

    ``dice[n, k]`` is the Dice at ``thresholds[k]``; ``best_threshold`` is the
    smallest threshold of the sweep reaching ``best_dice``.  Otsu's threshold
    is computed per map and is not part of the sweep.  Thresholds are in units
    of the min-max normalised map.
    """

    thresholds: torch.Tensor  # (T,)
    dice: torch.Tensor  # (N, T)
    best_threshold: torch.Tensor  # (N,)
    best_dice: torch.Tensor  # (N,)
    otsu_threshold: torch.Tensor  # (N,)
    otsu_dice: torch.Tensor  # (N,)


@dataclass(frozen=True)
class SpecificityResult:
    """Confusion-based scores of the thresholded map against the voxels used."""

    specificity: torch.Tensor  # (N,) TN / (TN + FP)
    sensitivity: torch.Tensor  # (N,) TP / (TP + FN)
    threshold: torch.Tensor  # (N,) threshold applied to the normalised map


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Dice per sample of two bool (N, V) tensors; the truth is never empty here."""
    inter = (pred & truth).sum(dim=1).double()
    total = pred.sum(dim=1).double() + truth.sum(dim=1).double()
    return 2.0 * inter / total


def otsu_threshold(maps, bins: int = _OTSU_BINS) -> torch.Tensor:
    """Otsu's threshold of each min-max normalised map, in [0, 1].

    The rule is ``imaging.thresholds``' (the one the label maps use, so ``dice_otsu`` and a
    label map cut a map at the same place): a ``bins``-bin histogram, the cut that maximises
    the between-class variance, the middle of tied cuts (a 0/1 map is cut at 0.5). A constant
    map normalises to zeros, every cut ties, and the threshold of 0.5 selects nothing. The
    histogram is counted on the maps' device; only its ``bins`` counts per map go to the host.
    """
    from ..imaging.thresholds import otsu_cut

    maps = minmax_normalize(as_maps(maps))
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    index = (flat * bins).long().clamp_(0, bins - 1)
    hist = torch.zeros(n, bins, dtype=torch.float64, device=maps.device)
    hist.scatter_add_(1, index, torch.ones_like(flat, dtype=torch.float64))
    cuts = otsu_cut(hist.cpu().numpy())
    return torch.as_tensor(cuts, dtype=maps.dtype, device=maps.device)


def dice_sweep(maps, masks, thresholds: Optional[Sequence[float]] = None) -> DiceSweep:
    """Dice of ``normalised map > t`` against ``masks`` for each t, plus Otsu's t.

    A perfect map (equal to the mask) scores 1 at every threshold; an inverted
    or constant map scores 0.  Masks must not be empty: Dice against an empty
    truth is undefined.
    """
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    require_nonempty(masks)
    if thresholds is None:
        thresholds = DEFAULT_THRESHOLDS
    thr = torch.as_tensor(thresholds, dtype=torch.float64).flatten()
    if thr.numel() == 0:
        raise ValueError("thresholds must hold at least one value")
    if not ((thr >= 0) & (thr < 1)).all():
        raise ValueError(f"thresholds apply to the map normalised to [0, 1] and must lie in [0, 1), got {thr.tolist()}")
    n = maps.shape[0]
    norm = minmax_normalize(maps).reshape(n, -1)
    truth = masks.reshape(n, -1)
    dice = torch.stack([_dice(norm > float(t), truth) for t in thr.tolist()], dim=1)
    best_dice, best_index = dice.max(dim=1)  # first maximum: the smallest best threshold
    thr = thr.to(maps.device)
    otsu = otsu_threshold(maps)
    otsu_dice = _dice(norm > otsu.unsqueeze(1), truth)
    return DiceSweep(
        thresholds=thr.to(maps.dtype),
        dice=dice.to(maps.dtype),
        best_threshold=thr[best_index].to(maps.dtype),
        best_dice=best_dice.to(maps.dtype),
        otsu_threshold=otsu,
        otsu_dice=otsu_dice.to(maps.dtype),
    )


def _thresholds_for(maps: torch.Tensor, threshold: Union[float, str]) -> torch.Tensor:
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold must be a number in [0, 1) or 'otsu', got {threshold!r}")
        return otsu_threshold(maps)
    value = float(threshold)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"threshold applies to the map normalised to [0, 1] and must lie in [0, 1), got {value}")
    return torch.full((maps.shape[0],), value, dtype=maps.dtype, device=maps.device)


def specificity_sensitivity(maps, used, threshold: Union[float, str] = 0.5) -> SpecificityResult:
    """Score the thresholded map against ``used``, the voxels the model relies on.

    ``used`` is known by construction for a phantom, or estimated (for
    instance by occlusion).  The map is min-max normalised and thresholded at
    ``threshold`` (a number, or ``"otsu"`` for a per-map threshold).
    Specificity = TN / (TN + FP) asks whether the map stays dark where the
    model does not look; sensitivity = TP / (TP + FN) whether it covers what
    the model uses.  ``used`` must have voxels both inside and outside.
    """
    maps = as_maps(maps)
    used = as_masks(used, maps, name="used")
    require_nonempty(used, name="used", full_ok=False)
    n = maps.shape[0]
    thr = _thresholds_for(maps, threshold)
    pred = minmax_normalize(maps).reshape(n, -1) > thr.unsqueeze(1)
    truth = used.reshape(n, -1)
    tp = (pred & truth).sum(dim=1).double()
    fp = (pred & ~truth).sum(dim=1).double()
    tn = (~pred & ~truth).sum(dim=1).double()
    fn = (~pred & truth).sum(dim=1).double()
    return SpecificityResult(
        specificity=(tn / (tn + fp)).to(maps.dtype),
        sensitivity=(tp / (tp + fn)).to(maps.dtype),
        threshold=thr,
    )


def specificity(maps, used, threshold: Union[float, str] = 0.5) -> torch.Tensor:
    """TN / (TN + FP) of the thresholded map against ``used``; see ``specificity_sensitivity``."""
    return specificity_sensitivity(maps, used, threshold).specificity


def sensitivity(maps, used, threshold: Union[float, str] = 0.5) -> torch.Tensor:
    """TP / (TP + FN) of the thresholded map against ``used``; see ``specificity_sensitivity``."""
    return specificity_sensitivity(maps, used, threshold).sensitivity


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Mask voxels with a non-mask voxel among their neighbours.

    The mask voxel nearest to any outside point is always such a voxel, so
    distances need only be measured to these.
    """
    outside = (~mask).float()[None, None]
    pool = F.max_pool2d if mask.dim() == 2 else F.max_pool3d
    touches = pool(outside, kernel_size=3, stride=1, padding=1)[0, 0] > 0
    return mask & touches


def _all_within(points: torch.Tensor, targets: torch.Tensor, tolerance: float) -> bool:
    """True when every point lies within ``tolerance`` (mm) of some target point."""
    if targets.shape[0] == 0:
        return False
    chunk = max(1, _DISTANCE_CHUNK // targets.shape[0])
    for start in range(0, points.shape[0], chunk):
        nearest = torch.cdist(points[start:start + chunk], targets).min(dim=1).values
        if bool((nearest > tolerance).any()):
            return False
    return True


def pointing_game(maps, masks, spacing: Optional[Sequence[float]] = None, tolerance_mm: float = 0.0) -> torch.Tensor:
    """1.0 where the map's maximum lies in the mask (within ``tolerance_mm``), else 0.0.

    ``spacing`` is the voxel size in mm along the tensor's spatial axes (for a
    Slicer KJI array that is (sz, sy, sx)); ``None`` means 1 mm, so the
    tolerance is then in voxels.  When the maximum is reached at several voxels
    *all* of them must be within tolerance: a constant map points nowhere and
    scores a miss (unless the mask covers the whole image).  Averaging the
    result over samples gives the pointing-game accuracy.
    """
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    require_nonempty(masks)
    tolerance = float(tolerance_mm)
    if tolerance < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance}")
    spatial = maps.dim() - 1
    scale = check_spacing(spacing, spatial).to(maps.device)
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    peaks = flat == flat.max(dim=1, keepdim=True).values
    inside = masks.reshape(n, -1)
    hits = torch.zeros(n, dtype=maps.dtype, device=maps.device)
    for i in range(n):
        missed = peaks[i] & ~inside[i]
        if not bool(missed.any()):
            hits[i] = 1.0
            continue
        if tolerance == 0:
            continue
        points = torch.nonzero(missed.reshape(maps.shape[1:])).double() * scale
        targets = torch.nonzero(_boundary(masks[i])).double() * scale
        hits[i] = float(_all_within(points, targets, tolerance))
    return hits


def energy_pointing_game(maps, masks) -> torch.Tensor:
    """Share of the map's positive mass that falls inside the mask, in [0, 1].

    Negative attributions are not mass, so they are clipped first.  A map with
    no positive mass puts nothing inside and scores 0.  A constant positive map
    scores the mask's volume fraction, the chance level.
    """
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    require_nonempty(masks)
    n = maps.shape[0]
    mass = maps.reshape(n, -1).clamp_min(0).double()
    total = mass.sum(dim=1)
    inside = (mass * masks.reshape(n, -1)).sum(dim=1)
    share = torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total))
    return share.to(maps.dtype)
