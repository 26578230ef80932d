"""Which of a card's input pipelines an image runs through: CT or MR.

pyliverlesionseg's liver network (Tang et al., Eur J Nucl Med Mol Imaging 47, 2020) was trained on
CT and MR, and their prediction code prepares each its own way (the CT windowed at +-200 HU and cut
from the hip to the liver dome; the MR scaled by its own range and cut below the lungs). Their code
takes the modality from the DICOM header, and asks for it with a NIfTI file. Here the order is:

1. the modality the caller names (``modality=`` of the API, ``--modality`` of the command line,
   the Slicer panel's and the web page's choice);
2. the image's DICOM Modality tag (``0008|0060``; kept by :mod:`imaging.reading` for a series);
3. a card with one modality needs no choice;
4. the intensities, by the one property a CT has and an MR has not: Hounsfield units put air at
   -1000, so a CT holds values at or below :data:`CT_AIR_HU`, and an MR (magnitude) image holds
   none below 0. An image with neither (the lowest value between the two) is refused with the way
   to name the modality, never guessed.

The choice is returned with the reason, so a result can say how its modality was decided.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..imaging.reading import DICOM_MODALITY_KEY
from .card import ModelCard
#: A CT in Hounsfield units holds air (-1000 HU); its lowest value is at most this.
CT_AIR_HU = -500.0
#: DICOM's names of what the card calls MR and CT.
_SYNONYMS = {"MRI": "MR", "MR": "MR", "CT": "CT"}


@dataclass(frozen=True)
class ModalityChoice:
    """The modality an image runs with, and how it was decided."""

    modality: str | None
    reason: str


def choose_modality(card: ModelCard, image: sitk.Image | None, requested: str | None = None) -> ModalityChoice:
    """The modality of ``card`` that ``image`` runs with (see the module notes); raises ``ValueError``
    with what to do when the caller's or the header's modality is not one the model takes, or when
    the intensities cannot tell."""
    offered = card.input.modalities
    if requested is not None and str(requested).strip().lower() not in ("", "auto"):
        if not offered:
            raise ValueError(f"model '{card.name}' declares no modality (one input pipeline for every image); "
                             f"remove the modality {requested!r}")
        return ModalityChoice(_match(card, requested, "the modality asked for"), "asked for")
    if not offered:
        return ModalityChoice(None, "the model declares none")
    header = _header_modality(image)
    if header is not None:
        return ModalityChoice(_match(card, header, "the image's DICOM Modality"), "the image's DICOM header")
    if len(offered) == 1:
        return ModalityChoice(offered[0], "the model's only one")
    return ModalityChoice(_from_intensities(card, image), "the image's intensities")


def _match(card: ModelCard, name: str, what: str) -> str:
    wanted = _SYNONYMS.get(str(name).strip().upper(), str(name).strip().upper())
    for modality in card.input.modalities:
        if _SYNONYMS.get(modality.upper(), modality.upper()) == wanted:
            return modality
    raise ValueError(f"model '{card.name}' takes {' or '.join(card.input.modalities)} images; {what} is "
                     f"{str(name).strip()!r}: give an image of a modality it takes, or name one of those")


def _header_modality(image) -> str | None:
    if isinstance(image, sitk.Image) and image.HasMetaDataKey(DICOM_MODALITY_KEY):
        value = image.GetMetaData(DICOM_MODALITY_KEY).strip()
        return value or None
    return None


def _from_intensities(card: ModelCard, image) -> str:
    array = sitk.GetArrayViewFromImage(image) if isinstance(image, sitk.Image) else np.asarray(image)
    lowest = float(np.min(array)) if array.size else 0.0
    if lowest <= CT_AIR_HU and "CT" in _normalised(card):
        return _match(card, "CT", "the modality the intensities show")
    if lowest >= 0.0 and "MR" in _normalised(card):
        return _match(card, "MR", "the modality the intensities show")
    raise ValueError(f"model '{card.name}' takes {' or '.join(card.input.modalities)} images, and this image's "
                     f"intensities do not tell which it is (lowest value {lowest:g}: a CT in Hounsfield units "
                     f"reaches {CT_AIR_HU:g} or below in air, an MR image has no negative values); name the "
                     "modality (modality= in Python, --modality on the command line, the Modality choice in the "
                     "panel)")


def _normalised(card: ModelCard) -> set[str]:
    return {_SYNONYMS.get(m.upper(), m.upper()) for m in card.input.modalities}
