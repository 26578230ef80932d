"""Otsu's threshold of a map's values (SimpleITK, 256 bins): the label-map rule of the command line
and the Slicer logic. (The Dice-sweep metric's Otsu, on min-max normalised maps with ties split,
is evaluation.localisation.otsu_threshold.)"""
from __future__ import annotations

import numpy as np


def otsu_threshold(values) -> float:
    """Otsu's threshold of the finite values.

    A constant map (e.g. Grad-CAM of a class the model sees nowhere) has no split: its value
    is returned, so the mask is empty rather than the run failing. A map without finite
    values is a ValueError.
    """
    import SimpleITK as sitk

    finite = np.asarray(values, dtype=np.float32)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValueError("Otsu threshold needs a map with finite values")
    if float(finite.max()) <= float(finite.min()):
        return float(finite.max())
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(256)
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.Execute(sitk.GetImageFromArray(finite.reshape(1, 1, -1)))
    return float(otsu.GetThreshold())
