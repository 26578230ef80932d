"""Intensity transforms that turn scanner values into network inputs.

CT networks are trained on a fixed Hounsfield window, MRI networks on
per-volume z-scores; both are cheap numpy operations that return float32 and
never modify their input.
"""
from __future__ import annotations

import numpy as np


def window(array: np.ndarray, low: float, high: float, to: tuple[float, float] | None = None) -> np.ndarray:
    """Clip to ``[low, high]`` and scale linearly to ``[0, 1]``, or onto ``to = (a, b)``."""
    if not high > low:
        raise ValueError(f"window needs low < high, got low={low}, high={high}")
    out = (np.asarray(array, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    np.clip(out, 0.0, 1.0, out=out)
    if to is not None:
        a, b = (float(v) for v in to)
        if not b > a:
            raise ValueError(f"window needs an output range a < b, got {to!r}")
        out *= np.float32(b - a)
        out += np.float32(a)
    return out


def minmax(array: np.ndarray, upper_fraction: float, to: tuple[float, float] | None = None) -> np.ndarray:
    """Clip to ``[min, min + upper_fraction * (max - min)]`` of the volume itself and scale linearly
    to ``[0, 1]`` or onto ``to = (a, b)``.

    pyliverlesionseg's MR normalisation (Tang et al. 2020): fraction 0.8 onto ``[-0.5, 0.5]``, so the
    brightest fifth of the range (fat, vessels with contrast) saturates. A constant volume maps to
    the low end.
    """
    array = np.asarray(array)
    if not 0 < upper_fraction <= 1:
        raise ValueError(f"upper_fraction must be in (0, 1], got {upper_fraction!r}")
    low = float(array.min())
    high = low + upper_fraction * (float(array.max()) - low)
    if high == low:
        out = np.zeros(array.shape, dtype=np.float32)
        a = 0.0 if to is None else float(to[0])
        return out + np.float32(a)
    return window(array, low, high, to)


def region_median(array: np.ndarray, region: np.ndarray, to: tuple[float, float] = (-0.5, 0.5)) -> np.ndarray:
    """Centre on the median of ``region`` and scale so that the region's minimum and maximum both fall
    inside ``to = (a, b)``, the median on its middle (not clipped: values beyond the region may fall
    outside).

    pyliverlesionseg's MR normalisation for its lesion network (Tang et al. 2020): the liver's median
    onto 0, its farther extreme onto +-0.5, i.e. ``(x - median) * min(0.5 / |min - median|,
    0.5 / |max - median|)``; an extreme equal to the median sets no bound.
    """
    array = np.asarray(array)
    region = np.asarray(region, dtype=bool)
    if region.shape != array.shape:
        raise ValueError(f"the normalisation region has shape {region.shape} but the image {array.shape}")
    values = array[region].astype(np.float64)
    if values.size == 0:
        raise ValueError("the region that sets the normalisation is empty")
    median = float(np.median(values))
    a, b = (float(v) for v in to)
    half = (b - a) / 2.0
    spreads = [d for d in (abs(float(values.min()) - median), abs(float(values.max()) - median)) if d > 0]
    if not spreads:
        raise ValueError(f"the region that sets the normalisation has one intensity ({median:g}) everywhere; "
                         "there is no range to scale by (a blank or saturated image?)")
    ratio = min(half / d for d in spreads)
    return ((array.astype(np.float64) - median) * ratio + (a + half)).astype(np.float32)


def scale(array: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(x - mean) / std`` with fixed statistics (those of the training set)."""
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    return (np.asarray(array, dtype=np.float32) - np.float32(mean)) / np.float32(std)


def zscore(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-volume standardisation; statistics over ``mask`` when given.

    A constant volume maps to zeros rather than dividing by zero.
    """
    array = np.asarray(array, dtype=np.float32)
    values = array if mask is None else array[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        raise ValueError("zscore mask selects no voxels")
    mean = float(values.mean())
    std = float(values.std())
    if std == 0.0:
        return np.zeros_like(array)
    return (array - np.float32(mean)) / np.float32(std)
