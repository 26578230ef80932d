"""Map-against-mask localisation as Quantus names it: AUC, top-k intersection, attribution localisation, focus.

None runs a model; each reads maps (N, *S), 2D or 3D, and a ground truth.

* **auc** (Fawcett, "An introduction to ROC analysis", Pattern Recognition
  Letters 2006): the area under the ROC curve of the map's values as a
  classifier of the mask's voxels, i.e. the probability that a voxel inside
  outranks one outside, ties counting one half (Mann-Whitney U / (P Q), P and
  Q the voxel counts inside and outside).  0.5 is chance.  Computed from
  tie-averaged ranks, all maps at once; equal to scikit-learn's trapezoidal
  ``roc_auc`` that Quantus uses.  Needs voxels inside and outside.
* **top_k_intersection** (Theiner, Mueller-Budack & Ewerth, "Interpretable
  semantic photo geolocation", WACV 2022): the share of the k most relevant
  voxels that lie inside the mask; with ``concept_influence`` it is divided by
  the mask's volume fraction (1: chance).  Voxels tied at the k-th rank are
  ordered by a seeded permutation (as relevance rank accuracy does).
* **attribution_localisation** (Kohlbrenner et al., "Towards best practice in
  explaining neural network decisions with LRP", IJCNN 2020): the share of
  the relevance inside the mask, mu = R_in / R_tot, with R = |Phi| (Quantus's
  default ``abs=True``) or, with ``positive_only``, the positive part of Phi
  (then it is the energy-based pointing game, computed there).  ``weighted``
  gives the paper's size-corrected mu_w = mu * S_tot / S_in (S: voxel counts),
  so that a uniform map scores 1 whatever the object's size.  Quantus's
  ``weighted=True`` multiplies by S_in / S_tot instead and takes S_tot from
  the batch's array size, so only the unweighted score is comparable.
* **focus** (Arias-Duart et al., "Focus! Rating XAI methods and finding
  biases", FUZZ-IEEE 2022): the input is a *mosaic*, 2 x 2 images of which
  some show the target class; focus is the share of the map's positive
  relevance on those tiles (Quantus: ``custom_batch`` = four 0/1 flags,
  top-left, top-right, bottom-left, bottom-right).  Each spatial axis is split
  at ``size // 2`` as Quantus does.  In 3D the mosaic is 2 x 2 x 2 volumes,
  eight octants; ``tiles`` then holds eight flags, ordered like a C-order
  (depth half, row half, column half) index, so the 2D order is the same rule
  with one axis fewer.  ``mosaic`` assembles such an input from its tiles.
"""
from __future__ import annotations

import torch

from ._checks import as_maps, as_masks, require_nonempty
from ._scoring import positive_int
from .localisation import energy_pointing_game
from .perturbation import _ranks

__all__ = ["auc", "top_k_intersection", "attribution_localisation", "focus", "mosaic", "tile_mask"]


def auc(maps, masks) -> torch.Tensor:
    """ROC AUC of each map's values against its mask (N,), in [0, 1]; 0.5 is chance."""
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    require_nonempty(masks, full_ok=False)
    n = maps.shape[0]
    values = maps.reshape(n, -1).double()
    inside = masks.reshape(n, -1)
    ordered, order = torch.sort(values, dim=1)
    # 1-based rank of each voxel, ties given the mean of the ranks they span.
    first = torch.searchsorted(ordered, ordered, right=False)
    last = torch.searchsorted(ordered, ordered, right=True)
    ranks = (first + last + 1).double() / 2
    positive = torch.gather(inside, 1, order).double()
    p = positive.sum(dim=1)
    q = inside.shape[1] - p
    u = (ranks * positive).sum(dim=1) - p * (p + 1) / 2
    return (u / (p * q)).to(maps.dtype)


def top_k_intersection(maps, masks, k: int = 1000, concept_influence: bool = False, seed: int = 0) -> torch.Tensor:
    """Share of the ``k`` most relevant voxels inside the mask (N,); see the module docstring."""
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    require_nonempty(masks)
    positive_int(k, "k")
    n = maps.shape[0]
    voxels = maps[0].numel()
    if k > voxels:
        raise ValueError(f"k = {k} exceeds the {voxels} voxels of a map; choose k <= {voxels}")
    inside = masks.reshape(n, -1)
    top = _ranks(maps, seed) < k
    share = (top & inside).sum(dim=1).double() / k
    if concept_influence:
        share = share * voxels / inside.sum(dim=1).double()
    return share.to(maps.dtype)


def attribution_localisation(maps, masks, weighted: bool = False, positive_only: bool = False) -> torch.Tensor:
    """Share of |Phi| (or, ``positive_only``, of positive Phi) inside the mask (N,); ``weighted``: * S_tot / S_in."""
    maps = as_maps(maps)
    masks = as_masks(masks, maps)
    share = energy_pointing_game(maps if positive_only else maps.abs(), masks).double()
    if weighted:
        flat = masks.reshape(masks.shape[0], -1)
        share = share * flat.shape[1] / flat.sum(dim=1).double()
    return share.to(maps.dtype)


def _tile_flags(tiles, dims: int) -> torch.Tensor:
    """(N, 2**dims) bool flags from ``tiles`` (N, 2**dims) or (N, 2, 2[, 2]), at least one per sample."""
    try:
        tiles = torch.as_tensor(tiles)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"tiles must be a tensor or nested sequence of 0/1 flags, got {type(tiles).__name__}") \
            from exc
    count = 2 ** dims
    if tiles.dim() < 2 or tiles.shape[0] < 1 or tiles[0].numel() != count:
        raise ValueError(f"tiles must hold {count} flags per sample for {dims}D maps (shape (N, {count}) or "
                         f"(N,{' 2,' * dims})), one per mosaic tile; got shape {tuple(tiles.shape)}")
    flags = tiles.reshape(tiles.shape[0], count) != 0
    empty = torch.nonzero(~flags.any(dim=1)).flatten().tolist()
    if empty:
        raise ValueError(f"tiles flag no tile of the target class for sample(s) {empty}: a focus mosaic "
                         "must hold the target class in at least one tile")
    return flags


def tile_mask(tiles, shape) -> torch.Tensor:
    """Boolean (N, *S) mask of the flagged mosaic tiles, each axis split at ``size // 2``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise ValueError(f"a mosaic has 2 or 3 spatial axes of at least 2 voxels each, got {shape}")
    flags = _tile_flags(tiles, len(shape))
    index = torch.zeros(shape, dtype=torch.long)
    for axis, size in enumerate(shape):
        half = (torch.arange(size) >= size // 2).long()
        index = index * 2 + half.view([-1 if a == axis else 1 for a in range(len(shape))])
    return flags[:, index.flatten()].view(flags.shape[0], *shape)


def focus(maps, tiles) -> torch.Tensor:
    """Share of positive relevance on the mosaic tiles that hold the target class (N,), in [0, 1]."""
    maps = as_maps(maps)
    masks = tile_mask(tiles, maps.shape[1:])
    if masks.shape[0] != maps.shape[0]:
        raise ValueError(f"tiles has flags for {masks.shape[0]} sample(s) but there are {maps.shape[0]} maps; "
                         "give one row of flags per map")
    return energy_pointing_game(maps, masks.to(maps.device))


def mosaic(images: torch.Tensor) -> torch.Tensor:
    """Assemble mosaics (N, C, 2 H, 2 W) or (N, C, 2 D, 2 H, 2 W) from tiles (N, 4 or 8, C, *S), in ``tiles`` order."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (5, 6):
        raise ValueError("images must be a tensor (N, 4, C, H, W) or (N, 8, C, D, H, W): the tiles of each "
                         f"mosaic; got {getattr(images, 'shape', type(images).__name__)}")
    dims = images.dim() - 3
    if images.shape[1] != 2 ** dims:
        raise ValueError(f"a {dims}D mosaic has {2 ** dims} tiles, got {images.shape[1]} (axis 1)")
    n, c, spatial = images.shape[0], images.shape[2], tuple(images.shape[3:])
    grid = images.reshape(n, *([2] * dims), c, *spatial)
    # (N, t0, t1[, t2], C, s0, s1[, s2]) -> (N, C, t0, s0, t1, s1[, t2, s2])
    order = [0, dims + 1] + [axis for d in range(dims) for axis in (1 + d, dims + 2 + d)]
    return grid.permute(order).reshape(n, c, *(2 * s for s in spatial))
