"""The one rule for which class a volume's heatmaps explain, and where its evidence is strongest.

A 2D classifier run per slice used to explain, on each slice, that slice's own
predicted class: one heatmap volume then mixed "nodule" maps and "no_nodule"
maps, and normalising over the whole volume (one scale for every slice) compared them as
if they were one quantity. A volume now explains ONE class unless the caller
asks for :data:`PER_SLICE`: the card's ``class_of_interest`` when it names one
(``"nodule"`` for a nodule detector), else the class with the highest
probability on any slice. ``explain_image`` applies this rule, so the command
line, the Slicer logic and the web page all get it from here.

:func:`evidence_slice` says where a picture of that class should cut: the slice where
the class is most probable on that slice and its neighbours together (the mean
probability over the slice and the slices either side of it). Why not the single most
probable slice: a slice classifier decides each slice from 2D evidence alone, and its
false positives are mostly single slices (on lung1, slice 30 reaches p(nodule) = 0.9997
with p = 0.36 on slice 31), while the structure a class names is a 3D object seen on
consecutive slices (the expert nodule on slices 32-34, p = 0.99, 1.00, 0.97). Reading a
2D decision together with its through-plane context is what reduces false positives of
slice-wise detectors (Setio et al., IEEE TMI 2016, multi-view false-positive reduction).
The rule uses the prediction only, so every method's picture of one run cuts the same
slice, and it does not depend on how a method scales its map (Grad-CAM's maps are
class-discriminative, Selvaraju et al., ICCV 2017, so the slice with the surest decision
is the one whose map shows what the model looks for).
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: ``target`` value (API, ``--target``, the Slicer logic) that keeps one class per slice:
#: each slice explains its own predicted class.
PER_SLICE = "per-slice"

#: The optional card field naming the class a volume is explained for by default.
CARD_FIELD = "class_of_interest"


def is_per_slice(target: Any) -> bool:
    """True for the :data:`PER_SLICE` target (case and ``_`` / ``-`` spelling ignored)."""
    return isinstance(target, str) and target.strip().lower().replace("_", "-") == PER_SLICE


def class_of_interest(card) -> int | None:
    """The card's ``class_of_interest`` as a class index, or None when the card names none."""
    value = (card.extra or {}).get(CARD_FIELD)
    if value is None:
        return None
    try:
        return card.class_index(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"model card '{card.name}': field '{CARD_FIELD}' {error}") from None


def explains_one_class_per_volume(card, mode: str | None) -> bool:
    """Whether the rule applies: a classifier run slice by slice (a 3D classifier predicts one class anyway)."""
    return card.task == "classification" and mode == "slices"


def volume_class(card, probabilities) -> int:
    """The class a per-slice classifier's volume explains: the card's class of interest, else the
    class with the highest probability on any slice (``probabilities``: (n_slices, n_classes))."""
    interest = class_of_interest(card)
    if interest is not None:
        return interest
    scores = np.asarray(probabilities, dtype=np.float64)
    scores = scores.reshape(-1, scores.shape[-1])
    if scores.size == 0:
        raise ValueError("no slice probabilities to choose the explained class from")
    return int(np.unravel_index(int(np.argmax(scores)), scores.shape)[1])


def slice_evidence(probabilities, class_index: int) -> np.ndarray:
    """Per slice, the mean probability of the class over the slice and its neighbours (the slices
    either side that exist): the score :func:`evidence_slice` ranks slices by."""
    scores = np.asarray(probabilities, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"per-slice probabilities must be (n_slices, n_classes), got shape {scores.shape}")
    if not 0 <= int(class_index) < scores.shape[1]:
        raise ValueError(f"class index {class_index} is outside the {scores.shape[1]} classes")
    column = scores[:, int(class_index)]
    padded = np.concatenate([[0.0], column, [0.0]])
    counts = np.concatenate([[0.0], np.ones_like(column), [0.0]])
    window = padded[:-2] + padded[1:-1] + padded[2:]
    return window / (counts[:-2] + counts[1:-1] + counts[2:])


def evidence_slice(probabilities, class_index: int) -> int:
    """The slice where the explained class is most probable together with its neighbours (the first of
    equals); see the module docstring for why."""
    return int(np.argmax(slice_evidence(probabilities, class_index)))
