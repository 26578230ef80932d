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
