"""Segmentation targets: one scalar score per sample from a (N, K, *S) segmentation output.

Every method of the engine explains a scalar per sample. For a segmentation model that
scalar is the sum, over a voxel region M, of the class channel (Seg-Grad-CAM,
Vinogradova et al. AAAI 2020): ``y = sum_{i in M} a(out)_{c, i}`` with ``a`` the
identity (``activation="logits"``), a sigmoid or a softmax over classes. M is computed
once from the unperturbed prediction and frozen, so perturbed copies of the input
(Score-CAM, occlusion, KWC, ...) are scored on the very same voxels.

The targets of the seed papers:

- Seg-Grad-CAM: ``SegmentationTarget(c)`` (logits over the predicted region of c);
- thresholded Grad-CAM for segmentation (Xiao et al., EIECS 2021):
  ``SegmentationTarget(c, region="threshold", activation="sigmoid", threshold=0.5)``,
  i.e. the sum of probabilities p > T, the set {p > T} detached;
- multi-layer attribution and KWC (Mullan & Sonka, SPIE 2022): the sum of all output
  probabilities, ``SegmentationTarget(c, region="all", activation="sigmoid")``;
- a user's ROI (a Slicer segment, a label value): ``region=labels == value``;
- one voxel: ``region=(z, y, x)``.
"""
from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch

from ..activations import LOGITS, SIGMOID, SOFTMAX, activation_for_channels, check_softmax_channels
from .regions import largest_component
from .classes import class_indices

REGIONS = ("predicted", "all", "largest_component", "threshold")
ACTIVATIONS = (LOGITS, SIGMOID, SOFTMAX)  # engine.activations' words; "logits": no activation
PREDICTIONS = ("argmax", SIGMOID)


def _model_probability(prediction: str) -> str:
    """The activation of a model that predicts by ``prediction``: softmax for argmax, else sigmoid."""
    return SOFTMAX if prediction == "argmax" else SIGMOID


def _gather_class(values: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """values (M, K, *S), classes (M,) -> (M, *S): each row's class channel."""
    index = classes.to(values.device).reshape((-1, 1) + (1,) * (values.dim() - 2))
    return values.gather(1, index.expand((-1, 1) + tuple(values.shape[2:])))[:, 0]


def channel_argmax(output: torch.Tensor) -> torch.Tensor:
    """``output.argmax(dim=1)`` of (N, K, *S) outputs, the same indices, by K - 1 elementwise passes.

    On a CPU ``argmax`` over the channel axis (a strided reduction over few channels) costs
    about ten times the comparisons that give its result, which on a 3D segmenter's window
    batches was a tenth of the forward. A channel replaces the running best only when
    strictly greater, so ties keep the first index as ``argmax`` does; an output with a NaN
    (``argmax`` takes the first NaN as the maximum) goes to ``argmax`` itself.
    """
    if output.shape[1] == 1 or bool(torch.isnan(output).any()):
        return output.argmax(dim=1)
    best = output[:, 0]
    index = torch.zeros(best.shape, dtype=torch.long, device=output.device)
    for channel in range(1, output.shape[1]):
        values = output[:, channel]
        better = values > best
        index.masked_fill_(better, channel)
        if channel + 1 < output.shape[1]:
            best = torch.where(better, values, best)
    return index


def _activated(output: torch.Tensor, classes: torch.Tensor, activation: str) -> torch.Tensor:
    """The class channel of ``output`` (M, K, *S) after the activation: (M, *S)."""
    if activation == "softmax":
        return _gather_class(torch.softmax(output, dim=1), classes)
    channel = _gather_class(output, classes)
    return torch.sigmoid(channel) if activation == "sigmoid" else channel


class BoundSegmentationTarget:
    """A segmentation target frozen against one batch: a class and a voxel region per sample.

    ``score(output, rows)`` sums the activated class channel over the frozen region;
    ``rows[m]`` says which sample's class and region output row m uses, so M perturbed
    copies of the batch are scored against the regions of the unperturbed input.
    """

    def __init__(self, classes: torch.Tensor, region: torch.Tensor, activation: str, prediction: str):
        self.classes = classes
        self.region = region  # (N, *S) bool
        self.activation = activation
        self.prediction = prediction

    def _rows(self, rows):
        if rows is None:
            return self.classes, self.region
        rows = torch.as_tensor(rows, device=self.classes.device)
        return self.classes[rows], self.region[rows]

    def _masked(self, values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        region = region.to(values.device)
        if tuple(region.shape) != tuple(values.shape):
            raise ValueError(f"the output has spatial shape {tuple(values.shape[1:])} but the target region was "
                             f"frozen with shape {tuple(region.shape[1:])}; score outputs of the same geometry")
        return torch.where(region, values, torch.zeros_like(values))

    def score(self, output: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(M,) sum over each row's region of its activated class channel."""
        classes, region = self._rows(rows)
        values = self._masked(_activated(output, classes, self.activation), region)
        return values.flatten(1).sum(dim=1)

    def probabilities(self, output: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(M, *S) class probabilities inside each row's region, zero outside.

        Methods defined on probabilities (KWC) use the target's activation when it is a
        sigmoid or softmax; with ``activation="logits"`` they use the model's own
        probability: softmax over classes for argmax models, sigmoid for sigmoid models.
        """
        classes, region = self._rows(rows)
        activation = self.activation
        if activation == LOGITS:
            activation = _model_probability(self.prediction)
        return self._masked(_activated(output, classes, activation), region)

    def subset(self, rows) -> "BoundSegmentationTarget":
        classes, region = self._rows(rows)
        return BoundSegmentationTarget(classes, region, self.activation, self.prediction)

    def describe(self, sample: int) -> str:
        return (f"class {int(self.classes[sample])}, {int(self.region[sample].sum())} voxels, "
                f"{self.activation}")


class SegmentationTarget:
    """What to explain in a segmentation output (N, K, *S): a class, a voxel region, an activation.

    class_index  int, N ints (one per sample), or None: the most-predicted non-background
                 class of each sample (by voxel count; channel 0 is background for argmax
                 models, sigmoid models have no background channel)
    region       "predicted": voxels predicted as the class (argmax == c for argmax models,
                     sigmoid(logit_c) > threshold for sigmoid models);
                 "all": every voxel;
                 "largest_component": the largest face-connected component of "predicted";
                 "threshold": {p_c > threshold} with p the activated output (the
                     ``activation`` when it is sigmoid / softmax, else the model's
                     probability: softmax for argmax models, sigmoid for sigmoid models);
                 a boolean mask (*S) or (N, *S) (torch or numpy): a user's ROI;
                 a voxel index: a tuple of ints, one per spatial axis.
    activation   "logits" (sum of class logits, Seg-Grad-CAM), "sigmoid" or "softmax"
                 (sum of probabilities)
    threshold    probability threshold of "threshold" regions and sigmoid predictions
    prediction   "argmax" (softmax models) or "sigmoid" (independent per-channel
                 probabilities); None infers it: "sigmoid" when ``activation="sigmoid"``
                 or the model has one output channel, "argmax" otherwise

    The region is computed once from the unperturbed prediction and frozen. An empty
    region is an error, except for targets cropped to the slices or windows of a volume
    (``for_slices`` / ``for_windows``): a slice without the class stays dark.
    """

    def __init__(self, class_index=None, region="predicted", activation: str = "logits", threshold: float = 0.5,
                 prediction: str | None = None):
        self.class_index = _check_class_index(class_index)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 <= threshold < 1:
            raise ValueError(f"threshold must be a probability in [0, 1), got {threshold!r}")
        if prediction is not None and prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be None (inferred), 'argmax' or 'sigmoid', got {prediction!r}")
        self.activation, self.threshold, self.prediction = activation, float(threshold), prediction
        self.region, self._mask, self._voxels = _parse_region(region)
        self.allow_empty = False

    def __repr__(self) -> str:
        region = self.region if self._mask is None else f"mask{tuple(self._mask.shape)}"
        return (f"SegmentationTarget(class_index={self.class_index!r}, region={region!r}, "
                f"activation={self.activation!r}, threshold={self.threshold})")

    def on_grid(self, mask_to_grid, voxel_to_grid, class_index=None) -> "SegmentationTarget":
        """The same target with its user region (a mask or a voxel) moved onto another grid.

        ``mask_to_grid(mask: numpy bool array) -> numpy bool array`` and
        ``voxel_to_grid(voxel: tuple) -> tuple`` map from the grid the region was given on
        (e.g. the input image's) to the grid the model sees; ``class_index`` replaces the
        class when given (e.g. a class name resolved to its index). Named regions
        ("predicted", "all", ...) need no mapping.
        """
        changes = {} if class_index is None else {"class_index": _check_class_index(class_index)}
        if self._mask is not None:
            changes["_mask"] = torch.as_tensor(np.asarray(mask_to_grid(self._mask.cpu().numpy())), dtype=torch.bool)
        if self._voxels is not None:
            changes["_voxels"] = tuple(int(v) for v in voxel_to_grid(self._voxels))
        return self._replace(**changes)

    def _replace(self, **changes) -> "SegmentationTarget":
        clone = copy.copy(self)
        for name, value in changes.items():
            setattr(clone, name, value)
        return clone

    # -- binding -----------------------------------------------------------------------
    def bind(self, output: torch.Tensor) -> BoundSegmentationTarget:
        """Freeze class and region against the unperturbed ``output`` (N, K, *S)."""
        if not isinstance(output, torch.Tensor) or output.dim() < 3:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"SegmentationTarget needs a segmentation output (N, K, *spatial); this model returns {shape}: "
                "for a classifier give a class index (or None) as the target"
            )
        output = output.detach()
        n, k = output.shape[:2]
        prediction = self.prediction or (SIGMOID if SIGMOID in (self.activation, activation_for_channels(k))
                                          else "argmax")
        if prediction == "argmax" and k == 1:
            raise ValueError("prediction='argmax' needs at least 2 output channels; this model has 1 "
                             "(a sigmoid model): use prediction='sigmoid' or leave it None")
        check_softmax_channels(self.activation, k)
        classes = self._classes(output, prediction)
        region = self._region(output, classes, prediction)
        self._check_not_empty(region, classes)
        return BoundSegmentationTarget(classes, region, self.activation, prediction)

    def _predicted(self, output: torch.Tensor, classes: torch.Tensor, prediction: str) -> torch.Tensor:
        if prediction == "argmax":
            return channel_argmax(output) == classes.reshape((-1,) + (1,) * (output.dim() - 2))
        return torch.sigmoid(_gather_class(output, classes)) > self.threshold

    def _classes(self, output: torch.Tensor, prediction: str) -> torch.Tensor:
        n, k = output.shape[:2]
        if self.class_index is not None:
            return class_indices(self.class_index, n, k, output.device)
        if prediction == "argmax":
            counts = torch.zeros(n, k, dtype=torch.long, device=output.device)
            labels = channel_argmax(output).reshape(n, -1)
            counts.scatter_add_(1, labels, torch.ones_like(labels))
            counts[:, 0] = -1  # channel 0 is background
        else:
            counts = (torch.sigmoid(output) > self.threshold).reshape(n, k, -1).sum(dim=2)
        voxels, classes = counts.max(dim=1)
        empty = (voxels <= 0).nonzero()
        if empty.numel() and not self.allow_empty:
            raise ValueError(
                f"no foreground class is predicted in sample {int(empty[0])} of this input, so there is no class "
                "to explain by default; give class_index (and a region, e.g. region='all')"
            )
        return classes

    def _region(self, output: torch.Tensor, classes: torch.Tensor, prediction: str) -> torch.Tensor:
        n, spatial = output.shape[0], tuple(output.shape[2:])
        if self._mask is not None:
            return _mask_for(self._mask, n, spatial, output.device)
        if self._voxels is not None:
            return _voxel_mask(self._voxels, n, spatial, output.device)
        if self.region == "all":
            return torch.ones((n,) + spatial, dtype=torch.bool, device=output.device)
        if self.region == "threshold":
            activation = self.activation
            if activation == LOGITS:
                activation = _model_probability(prediction)
            return _activated(output, classes, activation) > self.threshold
        predicted = self._predicted(output, classes, prediction)
        return largest_component(predicted) if self.region == "largest_component" else predicted

    def _check_not_empty(self, region: torch.Tensor, classes: torch.Tensor) -> None:
        if self.allow_empty:
            return
        empty = (~region.reshape(region.shape[0], -1).any(dim=1)).nonzero()
        if not empty.numel():
            return
        sample = int(empty[0])
        cls = int(classes[sample])
        where = f" (sample {sample})" if region.shape[0] > 1 else ""
        if self.region in ("predicted", "largest_component"):
            raise ValueError(f"class {cls} is predicted nowhere in this input{where}; pick another class or "
                             "give a region (region='all', a mask or a voxel)")
        if self.region == "threshold":
            raise ValueError(f"no voxel of class {cls} has probability > {self.threshold} in this input{where}; "
                             "lower the threshold or give a region")
        raise ValueError(f"the region is empty{where}: the mask has no voxel set, or the voxel lies outside "
                         "the input; give a non-empty region")

    # -- volumes -----------------------------------------------------------------------
    def for_slices(self, axis: int, start: int, stop: int) -> "SegmentationTarget":
        """The target for slices [start, stop) along numpy ``axis`` of a (Z, Y, X) volume (per-slice mode).

        A mask must have the volume's shape; a voxel index is in volume coordinates.
        Slices where the region or the class is absent give a zero map.
        """
        changes = {"allow_empty": True}
        if self.class_index is not None and not isinstance(self.class_index, int):
            changes["class_index"] = list(self.class_index)[start:stop]
        if self._mask is not None:
            if self._mask.dim() != 3:
                raise ValueError(f"in per-slice mode the region mask must have the volume's shape (Z, Y, X), "
                                 f"got {tuple(self._mask.shape)}")
            changes["_mask"] = self._mask.movedim(axis, 0)[start:stop]
        if self._voxels is not None:
            voxel = self._single_voxel(3)
            inside = tuple(v for i, v in enumerate(voxel) if i != axis)
            changes["_voxels"] = [inside if i == voxel[axis] else None for i in range(start, stop)]
        return self._replace(**changes)

    def for_windows(self, windows: list[tuple[slice, ...]]) -> "SegmentationTarget":
        """The target for a batch of windows (tuples of slices) of a volume (volumetric mode).

        A mask is cropped to each window (padded with False where a window overhangs a
        volume smaller than the patch); a voxel index moves into window coordinates.
        """
        if self.class_index is not None and not isinstance(self.class_index, int):
            raise ValueError("in volumetric mode give one class_index (an int) or None, not one per sample")
        changes = {"allow_empty": True}
        if self._mask is not None:
            if self._mask.dim() != len(windows[0]):
                raise ValueError(f"in volumetric mode the region mask must have the volume's shape, "
                                 f"got {tuple(self._mask.shape)}")
            changes["_mask"] = torch.stack([_crop(self._mask, window) for window in windows])
        if self._voxels is not None:
            voxel = self._single_voxel(len(windows[0]))
            changes["_voxels"] = [
                tuple(v - w.start for v, w in zip(voxel, window))
                if all(w.start <= v < w.stop for v, w in zip(voxel, window)) else None
                for window in windows
            ]
        return self._replace(**changes)

    def _single_voxel(self, dims: int) -> tuple[int, ...]:
        if not isinstance(self._voxels, tuple) or len(self._voxels) != dims:
            raise ValueError(f"a voxel region of a volume must be one index with {dims} coordinates, "
                             f"got {self._voxels!r}")
        return self._voxels


def _check_class_index(class_index):
    if class_index is None or (isinstance(class_index, Integral) and not isinstance(class_index, bool)):
        return None if class_index is None else int(class_index)
    if isinstance(class_index, (list, tuple, np.ndarray, torch.Tensor)):
        values = np.asarray(class_index.cpu() if isinstance(class_index, torch.Tensor) else class_index)
        if values.ndim == 1 and values.size and np.issubdtype(values.dtype, np.integer):
            return tuple(int(v) for v in values)
    raise TypeError(f"class_index must be None, an int or a sequence of N ints (one per sample), "
                    f"got {class_index!r}")


def _parse_region(region):
    """-> (name, mask, voxel) with exactly one meaningful."""
    if isinstance(region, str):
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, a boolean mask or a voxel index; got {region!r}")
        return region, None, None
    if isinstance(region, (np.ndarray, torch.Tensor)):
        mask = torch.from_numpy(np.ascontiguousarray(region)) if isinstance(region, np.ndarray) else region.detach()
        if mask.dtype != torch.bool:
            raise TypeError(f"a region mask must be boolean (e.g. labels == 3), got dtype {mask.dtype}; "
                            "a voxel index is a tuple of ints")
        return "mask", mask, None
    if isinstance(region, (tuple, list)) and region and all(
            isinstance(v, Integral) and not isinstance(v, bool) for v in region):
        return "voxel", None, tuple(int(v) for v in region)
    raise TypeError(f"region must be one of {REGIONS}, a boolean mask (torch or numpy) or a voxel index "
                    f"(tuple of ints); got {type(region).__name__}")


def _mask_for(mask: torch.Tensor, n: int, spatial: tuple[int, ...], device) -> torch.Tensor:
    """A user mask (*S), (1, *S) or (N, *S) as (N, *S) on ``device``."""
    mask = mask.to(device)
    if mask.dim() == len(spatial):
        mask = mask.unsqueeze(0)
    if mask.dim() != len(spatial) + 1 or tuple(mask.shape[1:]) != spatial or mask.shape[0] not in (1, n):
        raise ValueError(f"the region mask has shape {tuple(mask.shape)}; for this output it must be {spatial} "
                         f"or ({n}, {', '.join(map(str, spatial))}) (the output's spatial shape)")
    return mask.expand((n,) + spatial)


def _voxel_mask(voxels, n: int, spatial: tuple[int, ...], device) -> torch.Tensor:
    """One voxel (for every sample) or a list of N voxels / None as an (N, *S) mask."""
    per_sample = [voxels] * n if isinstance(voxels, tuple) else list(voxels)
    if len(per_sample) != n:
        raise ValueError(f"got {len(per_sample)} voxel regions for a batch of {n} samples")
    mask = torch.zeros((n,) + spatial, dtype=torch.bool, device=device)
    for sample, voxel in enumerate(per_sample):
        if voxel is None:
            continue
        if len(voxel) != len(spatial):
            raise ValueError(f"the voxel index {voxel} has {len(voxel)} coordinates; the output has "
                             f"{len(spatial)} spatial dims {spatial}")
        if all(0 <= v < s for v, s in zip(voxel, spatial)):
            mask[(sample,) + tuple(voxel)] = True
        elif not isinstance(voxels, list):
            raise ValueError(f"the voxel index {voxel} lies outside the output's spatial shape {spatial}")
    return mask


def _crop(mask: torch.Tensor, window: tuple[slice, ...]) -> torch.Tensor:
    """mask[window], False where the window runs past the mask (a volume smaller than the patch)."""
    inside = mask[tuple(slice(w.start, min(w.stop, n)) for w, n in zip(window, mask.shape))]
    cropped = torch.zeros(tuple(w.stop - w.start for w in window), dtype=torch.bool, device=mask.device)
    cropped[tuple(slice(0, size) for size in inside.shape)] = inside
    return cropped
