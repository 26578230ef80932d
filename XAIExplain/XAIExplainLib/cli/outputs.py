"""Name and write the files of one input: heatmaps, label maps, prediction, overlays.

Names are ``<stem>_<method>[_<class>].<ext>`` (the class only when the user
chose one), so a folder of results sorts by input and method.  Every image is
put exactly on the input's grid before writing: the engine returns maps on
that grid up to floating-point noise, and the copy of origin, spacing and
direction makes the files bit-identical in geometry to the input.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import UserError
from .options import ClassChoice
from .reading import grid_mismatch
from .writing import OutputFolder


@dataclass(frozen=True)
class OutputNames:
    """The file names one input produces."""

    stem: str
    ending: str

    def base(self, method: str, choice: ClassChoice) -> str:
        return f"{self.stem}_{method}" + (f"_{choice.suffix}" if choice.suffix else "")

    def heatmap(self, method: str, choice: ClassChoice) -> str:
        return self.base(method, choice) + self.ending

    def label(self, method: str, choice: ClassChoice) -> str:
        return self.base(method, choice) + "_label" + self.ending

    def overlay(self, method: str, choice: ClassChoice) -> str:
        return self.base(method, choice) + ".png"

    def prediction(self, task: str) -> str:
        return f"{self.stem}_prediction" + (".csv" if task == "classification" else self.ending)

    def planned(self, methods: Sequence[str], choices: Sequence[ClassChoice], task: str,
                labels: bool, overlays: bool) -> list[str]:
        names = [self.prediction(task)]
        for choice in choices:
            for method in methods:
                names.append(self.heatmap(method, choice))
                if labels:
                    names.append(self.label(method, choice))
                if overlays:
                    names.append(self.overlay(method, choice))
        return names


def on_input_grid(result: sitk.Image, image: sitk.Image, what: str) -> sitk.Image:
    """``result`` with the input's exact geometry; refuses a result on another grid."""
    problem = grid_mismatch(result, image)
    if problem:
        raise RuntimeError(f"the {what} is not on the input's grid ({problem}); this is a bug "
                           "in the engine, please report it")
    result = sitk.Image(result)
    result.CopyInformation(image)
    return result


def write_heatmap(out: OutputFolder, heat: sitk.Image, image: sitk.Image, name: str) -> sitk.Image:
    heat = on_input_grid(sitk.Cast(heat, sitk.sitkFloat32), image, "heatmap")
    out.write_image(heat, name)
    return heat


def threshold_label(heat: sitk.Image, threshold: float | str) -> tuple[sitk.Image, float]:
    """Label map (uint8, 1 where heat > t) and the threshold t used (Otsu's when asked)."""
    from ..imaging.thresholds import threshold_map

    mask, value = threshold_map(sitk.GetArrayViewFromImage(heat), threshold)
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(heat)
    return label, value


def prediction_record(prediction: Any, card, image: sitk.Image) -> dict[str, Any]:
    """The prediction as summary fields: class scores, or voxel counts and volumes per class."""
    names = list(card.class_names)
    if isinstance(prediction, sitk.Image):
        labels = sitk.GetArrayViewFromImage(prediction)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(names))
        present = [names[i] if i < len(names) else str(i) for i in range(len(counts))
                   if counts[i] and i > 0]
        return {"task": "segmentation", "classes_present": ";".join(present),
                "voxels": {_label(names, i): int(c) for i, c in enumerate(counts)},
                "volume_ml": {_label(names, i): round(float(c) * voxel_ml, 3)
                              for i, c in enumerate(counts) if i > 0}}
    scores = np.asarray(prediction, dtype=np.float64)
    per_slice = scores.ndim == 2
    mean = scores.mean(axis=0) if per_slice else scores.reshape(-1)
    record: dict[str, Any] = {"task": "classification",
                              "predicted_class": _label(names, int(np.argmax(mean))),
                              "score": {_label(names, i): float(v) for i, v in enumerate(mean)}}
    if per_slice:
        winners = np.bincount(np.argmax(scores, axis=1), minlength=len(mean))
        record["slices"] = {_label(names, i): int(n) for i, n in enumerate(winners)}
    return record


def write_prediction(out: OutputFolder, prediction: Any, card, image: sitk.Image,
                     name: str) -> None:
    """Class scores as CSV (one row per slice for per-slice models), or the label image."""
    if isinstance(prediction, sitk.Image):
        labels = on_input_grid(sitk.Cast(prediction, sitk.sitkUInt8), image, "predicted label map")
        out.write_image(labels, name)
        return
    scores = np.asarray(prediction, dtype=np.float64)
    names = [_label(card.class_names, i) for i in range(scores.shape[-1])]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if scores.ndim == 2:
        writer.writerow(["slice", *names, "predicted"])
        for index, row in enumerate(scores):
            writer.writerow([index, *(f"{v:.6f}" for v in row), names[int(np.argmax(row))]])
    else:
        writer.writerow([*names, "predicted"])
        row = scores.reshape(-1)
        writer.writerow([*(f"{v:.6f}" for v in row), names[int(np.argmax(row))]])
    out.write_text(buffer.getvalue(), name)


def _label(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"class{index}"


def check_region_mask(mask: sitk.Image | None, image: sitk.Image, mask_source: str,
                      input_source: str) -> None:
    if mask is None:
        return
    problem = grid_mismatch(mask, image)
    if problem:
        raise UserError(mask_source, f"does not match the grid of {input_source}: {problem}")
