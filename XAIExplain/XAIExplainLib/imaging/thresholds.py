"""Thresholding a heatmap into a mask: the one rule for the accepted thresholds and the one Otsu.

The command line (``--label-threshold``), the Slicer logic and widget (``labelThreshold``), the
MRML bridge (label maps, segmentations) and the evaluation metrics (Dice at Otsu's threshold,
specificity) all threshold through this module, so a label map and ``dice_otsu`` cut one map at
the same place.

A threshold is a number in [0, 1) or ``"otsu"``: the engine's heatmaps are normalised to
[0, 1] and the mask is ``map > t``, so t = 1 would always give an empty mask and t < 0 the whole
volume. Otsu's threshold is N. Otsu, "A threshold selection method from gray-level histograms",
IEEE Trans. Systems, Man, and Cybernetics 9(1), 1979 (https://doi.org/10.1109/TSMC.1979.4310076),
on a 256-bin histogram of the min-max normalised values; where several cuts tie (empty bins
between two modes, as in a binary map) the middle of the tied run is taken, so a 0/1 map is cut
at 0.5 rather than just above 0.

numpy only, so that the MRML bridge and the logic import it before torch is installed.
"""
from __future__ import annotations

import numbers

import numpy as np

#: Histogram bins of Otsu's threshold (the same for label maps and metrics).
OTSU_BINS = 256
#: What ``labelThreshold`` / ``--label-threshold`` accept, for messages.
ACCEPTED = "a number in [0, 1) (heatmaps are normalised to [0, 1]; the mask is map > t) or 'otsu'"


def check_threshold(threshold) -> float | str:
    """``"otsu"`` or the threshold as a float in [0, 1); anything else is a one-line error."""
    if isinstance(threshold, str):
        if threshold.strip().lower() != "otsu":
            raise ValueError(f"label threshold must be {ACCEPTED}, got {threshold!r}")
        return "otsu"
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"label threshold must be {ACCEPTED}, got {type(threshold).__name__}")
    value = float(threshold)
    if not (np.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"label threshold must be {ACCEPTED}, got {threshold!r}")
    return value


def otsu_cut(histograms) -> np.ndarray:
    """Otsu's cut of each row of ``histograms`` (N, bins) of values in [0, 1], in [0, 1].

    The cut after bin k maximises the between-class variance; tied cuts give the middle of
    their run (see the module docstring). A histogram with everything in one bin has no split:
    every cut ties and 0.5 is returned.
    """
    hist = np.atleast_2d(np.asarray(histograms, dtype=np.float64))
    n, bins = hist.shape
    prob = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1e-300)
    centres = (np.arange(bins, dtype=np.float64) + 0.5) / bins
    w0 = prob.cumsum(axis=1)[:, :-1]  # class 0 holds bins 0..k
    mu = (prob * centres).cumsum(axis=1)
    mu_total, mu = mu[:, -1:], mu[:, :-1]
    denom = w0 * (1.0 - w0)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where(denom > 0, (mu_total * w0 - mu) ** 2 / np.where(denom > 0, denom, 1.0), 0.0)
    is_best = between == between.max(axis=1, keepdims=True)
    steps = np.broadcast_to(np.arange(bins - 1), (n, bins - 1))
    first = np.where(is_best, steps, bins).min(axis=1)
    after = (~is_best) & (steps > first[:, None])
    end = np.where(after, steps, bins - 1).min(axis=1) - 1
    return ((first + 1.0) / bins + (end + 1.0) / bins) / 2.0


def normalised_histogram(values, bins: int = OTSU_BINS) -> np.ndarray:
    """Counts of ``bins`` equal bins of the min-max normalised finite values (Otsu's input)."""
    finite = _finite(values)
    low, high = float(finite.min()), float(finite.max())
    scaled = (finite - low) / (high - low) if high > low else np.zeros_like(finite)
    index = np.clip((scaled * bins).astype(np.int64), 0, bins - 1)
    return np.bincount(index, minlength=bins)


def otsu_threshold(values) -> float:
    """Otsu's threshold of the finite values, in the values' own units.

    A constant map (e.g. Grad-CAM of a class the model sees nowhere) has no split: its value
    is returned, so the mask is empty rather than the run failing. A map without finite
    values is a ValueError.
    """
    finite = _finite(values)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return high
    cut = float(otsu_cut(normalised_histogram(finite))[0])
    return low + cut * (high - low)


def resolve_threshold(values, threshold) -> float:
    """The numeric threshold for ``values``: ``threshold`` itself, or Otsu's when it is ``"otsu"``."""
    checked = check_threshold(threshold)
    return otsu_threshold(values) if checked == "otsu" else checked


def threshold_map(values, threshold) -> tuple:
    """``(mask, t)``: uint8 mask of voxels with ``value > t`` and the threshold used."""
    t = resolve_threshold(values, threshold)
    return (np.asarray(values) > t).astype(np.uint8), t


def _finite(values) -> np.ndarray:
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValueError("Otsu threshold needs a map with finite values")
    return finite
