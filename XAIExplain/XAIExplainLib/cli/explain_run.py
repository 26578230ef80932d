"""Explain one input with a run's :class:`~.run_plan.LoadedRun` and write all its files.

:func:`explain_input` is the per-input work that :func:`.explain_one.explain_one`
runs, in this process or on Dask workers: every class choice and method group
through :func:`models.explain_image`, then the heatmaps, label maps, overlay
pictures and the prediction, each named by :class:`.outputs.OutputNames`.
The command itself (``xaiexplain explain``) is :mod:`.explain_command`; the
settings and their checks are :mod:`.run_plan`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .discovery import InputItem
from .errors import UserError, one_line
from .montage import render_overlay
from .options import ClassChoice, numpy_axis, options_for, output_ending
from .outputs import (OutputNames, check_region_mask, prediction_record, threshold_label,
                      write_heatmap, write_prediction)
from .progress import Progress
from .run_plan import LoadedRun
from .summary import InputRecord


def explain_input(job: LoadedRun, item: InputItem, image: sitk.Image | list[sitk.Image], record: InputRecord,
                  progress: Progress) -> None:
    """Explain one input for every class choice and method group, and write all its files.

    Methods run in groups that share their passes (the CAM family: one
    forward and one backward for all of them), every other method alone, so
    the summary can say what each method cost without giving up the sharing.
    ``image`` is a list for an input of one file per input channel: they are
    stacked once, and every output lands on the first one's grid.
    """
    from ..engine.progress import progress_fraction
    from ..models import explain_image

    card = job.card
    image, model_input = _model_input(job, item, image)
    names = OutputNames(item.stem, output_ending(job.fmt, item.path))
    job.out.check_free(names.planned(job.methods, job.choices, card.task,
                                     job.label_threshold is not None, job.overlay))
    _check_dimensions(image, card, item.source)
    check_region_mask(job.region, image, job.region_source, item.source)
    axis = numpy_axis(image, job.axis_name)
    groups = method_groups(job.methods)
    steps = [(choice, group) for choice in job.choices for group in groups]
    prediction = None
    failures: list[str] = []
    for number, (choice, group) in enumerate(steps):
        def report(*args, _offset=number):
            progress.step((_offset + progress_fraction(*args)) / len(steps), "+".join(group))

        try:
            result = explain_image(job.model, model_input, methods=list(group),
                                   target=_target(choice, job, image), layer=job.layer,
                                   mode=job.mode, axis=axis, device=job.device, progress=report,
                                   modality=job.modality,
                                   **options_for(group, job.method_options),
                                   **({"memory_budget_mb": job.memory_budget_mb} if job.memory_budget_mb else {}))
        except (ValueError, TypeError, RuntimeError) as exc:
            # One method that cannot run does not sink the others: it is reported, they are written.
            if len(steps) == 1:
                raise
            label = "+".join(group) + (f" (target {choice.name})" if choice.suffix else "")
            failures.append(f"{label}: {one_line(exc)}")
            continue
        if prediction is None:
            prediction = result.prediction
            write_prediction(job.out, prediction, card, image, names.prediction(card.task))
            record.outputs.append(names.prediction(card.task))
            record.prediction = prediction_record(prediction, card, image)
            if getattr(result.prepared, "modality", None) is not None:
                record.prediction["modality"] = result.prepared.modality
                record.prediction["modality_from"] = result.prepared.modality_reason
            for stage in ("preprocess",):
                if stage in result.timings:
                    record.timings[stage] = float(result.timings[stage])
        suffix = f"_{choice.suffix}" if choice.suffix else ""
        record.timings["+".join(group) + suffix] = float(result.timings.get("explain", math.nan))
        explained = _explained_index(choice, result.target)
        if card.task == "classification":
            _record_explained(record, choice, explained, card)
        for method in group:
            _write_method(job, method, choice, result.maps[method], image, prediction, names,
                          record, axis, result.layers.get(method, result.layer), explained)
    if failures and len(failures) == len(steps):
        raise ValueError("; ".join(failures))
    if failures:
        record.status, record.error = "partial", f"{item.source}: not written: " + "; ".join(failures)


def _model_input(job: LoadedRun, item: InputItem, image) -> tuple[sitk.Image, sitk.Image]:
    """``(the image outputs land on, what the model is given)``: the same image, or for one file per
    channel the first file's image and all of them stacked by the model's rule (one place:
    :func:`models.channel_inputs.stack_for`)."""
    if not isinstance(image, list):
        return image, image
    from ..models.channel_inputs import stack_for

    names = job.card.input.channel_labels
    labels = [f"{path} ({name})" for path, name in zip(item.channel_paths, names)]
    return image[0], stack_for(job.model, image, labels)  # a refusal names both files (input_error adds the input)


def method_groups(methods: list[str]) -> list[tuple[str, ...]]:
    """CAM-family methods together (they share one pass), the attention methods together (one
    attention pass), every other method on its own.

    CAM needs a layer that feeds the global average pool, which may not be the others' layer,
    so it runs on its own too (and cannot sink the others when it cannot run).
    """
    from ..engine import METHODS

    together = [m for m in methods if METHODS[m].family == "cam" and not METHODS[m].needs_gap_head]
    attention = [m for m in methods if METHODS[m].family == "attention"]  # one attention pass for all
    alone = [(m,) for m in methods if m not in together and m not in attention]
    return [tuple(group) for group in (together, attention) if group] + alone


def _explained_index(choice: ClassChoice, engine_target) -> int | None:
    """The one class the maps explain (None: each slice its own predicted class)."""
    if isinstance(engine_target, (int, np.integer)) and not isinstance(engine_target, bool):
        return int(engine_target)
    return choice.index


def _record_explained(record: InputRecord, choice: ClassChoice, explained: int | None, card) -> None:
    """``explained_class`` in the summary: the class name, or "per-slice" (each slice its own)."""
    from ..models.explained_class import PER_SLICE

    name = PER_SLICE if explained is None else card.class_names[explained]
    previous = record.prediction.get("explained_class")
    if previous and name not in previous.split(";"):
        name = f"{previous};{name}"
    record.prediction["explained_class"] = name


def _write_method(job: LoadedRun, method: str, choice: ClassChoice, heat: sitk.Image,
                  image: sitk.Image, prediction, names: OutputNames, record: InputRecord,
                  axis: int | None, layer: str | None, explained: int | None = None) -> None:
    heat = write_heatmap(job.out, heat, image, names.heatmap(method, choice))
    record.outputs.append(names.heatmap(method, choice))
    if job.label_threshold is not None:
        label, used = threshold_label(heat, job.label_threshold)
        job.out.write_image(label, names.label(method, choice))
        record.outputs.append(names.label(method, choice))
        record.prediction.setdefault("label_threshold", {})[names.base(method, choice)] = used
    if job.overlay:
        from ..engine import METHODS

        contour = _contour(job, choice, prediction, image)
        focus, caption, strip = overlay_focus(job, heat, prediction, explained, axis, contour)
        title, subtitle = overlay_titles(job, names.stem, method, explained, prediction, focus,
                                         axis, layer)
        outline = _outline_label(job, choice, prediction) if contour is not None else ""
        if method == "rise" and strip is not None and job.method_options.get("score_baseline", "mean") == "mean":
            caption += "; RISE shown relative to each slice's mean masked score"
        window = _display_window(job.card)
        spiky = METHODS[method].family == "gradient"  # voxel-level input gradients
        job.out.write_with(lambda path: render_overlay(image, heat, path, title, subtitle, window,
                                                       contour, spiky, focus, caption, strip, outline),
                           names.overlay(method, choice))
        record.outputs.append(names.overlay(method, choice))


def _target(choice: ClassChoice, job: LoadedRun, image: sitk.Image):
    """What explain_image explains: a class index, None (its default: one class per volume for a
    per-slice classifier, models.explained_class), "per-slice", or a region on a segmenter."""
    from ..models.explained_class import is_per_slice

    if is_per_slice(choice.name) and choice.index is None:
        return choice.name
    if job.card.task == "segmentation" and job.region is not None:
        from ..engine import SegmentationTarget

        # Given on the input grid; explain_image moves it onto the model's grid.
        region = sitk.GetArrayFromImage(job.region) != 0
        return SegmentationTarget(choice.index, region=region)
    return choice.index


def _check_dimensions(image: sitk.Image, card, source: str) -> None:
    if image.GetDimension() == 2 and card.spatial_dims == 3:
        raise UserError(source, f"is a 2D image but '{card.name}' is a 3D model that needs a "
                                "volume")


def overlay_titles(job: LoadedRun, stem: str, method: str, explained: int | None, prediction,
                   focus, axis: int | None, layer: str | None) -> tuple[str, str]:
    """Title: input, method and class; subtitle: model, the layer used, device."""
    from ..engine import METHODS

    method_name = METHODS[method].label
    what = explained_class(job, explained, prediction, focus, axis)
    parts = [f"model {job.card.name}"]
    if METHODS[method].needs_layer and layer:
        parts.append(f"layer {layer}")
    parts.append(job.device)
    return f"{stem} · {method_name} · {what}", " · ".join(parts)


def explained_class(job: LoadedRun, explained: int | None, prediction, focus,
                    axis: int | None) -> str:
    """The class the picture explains, with its score on the pictured slice where the model gives one."""
    names = list(job.card.class_names)
    if isinstance(prediction, sitk.Image):
        if explained is not None:
            return f"class {names[explained]}"
        top = _predicted_label(prediction)
        if top is None:
            return "predicted class (none found)"
        return f"class {names[top] if top < len(names) else top} (predicted region)"
    scores = np.asarray(prediction, dtype=np.float64)
    where = ""
    if scores.ndim == 2:
        slice_axis = _slice_axis(job, axis)
        index = int(focus[slice_axis]) if focus is not None and len(focus) == 3 else 0
        scores = scores[min(index, len(scores) - 1)]
        where = f" on slice {index}"
    if explained is None:  # --target per-slice: the pictured slice's own predicted class
        chosen = int(np.argmax(scores))
        return f"per-slice predicted class, here {names[chosen]} (p = {scores[chosen]:.2f}{where})"
    return f"class {names[explained]} (p = {scores[explained]:.2f}{where})"


def overlay_focus(job: LoadedRun, heat: sitk.Image, prediction, explained: int | None,
                  axis: int | None, contour: sitk.Image | None):
    """``(focus voxel, caption, strip)``: where the picture cuts and why.

    A 2D classifier run per slice: the slice where the explained class is most probable
    together with its neighbouring slices (models.explained_class.evidence_slice), its
    probabilities as a strip; a segmenter: the map's peak inside the outlined region;
    else the map's peak.
    """
    from ..models.explained_class import slice_evidence
    from .montage import SliceStrip, focus_voxel

    values = sitk.GetArrayViewFromImage(heat)
    names = list(job.card.class_names)
    if isinstance(prediction, sitk.Image):
        region = sitk.GetArrayViewFromImage(contour) > 0 if contour is not None else None
        if region is not None and region.any():
            return focus_voxel(values, region=region), "views through the map's peak inside the outlined region", None
        return focus_voxel(values), "views through the map's peak (no region outlined)", None
    scores = np.asarray(prediction, dtype=np.float64)
    if scores.ndim == 2 and values.ndim == 3 and len(scores) > 1:
        slice_axis = _slice_axis(job, axis)
        view = {0: "axial", 1: "coronal", 2: "sagittal"}.get(slice_axis, "")
        if explained is None:
            per_slice = scores.max(axis=1)
            index = int(np.argmax(per_slice))
            label = "p(predicted)"
            why = f"the highest probability of its own predicted class = {per_slice[index]:.2f}"
        else:
            per_slice = scores[:, explained]
            evidence = slice_evidence(scores, explained)
            index = int(np.argmax(evidence))
            label = f"p({names[explained]})"
            why = (f"the highest p({names[explained]}) together with its neighbouring slices (mean "
                   f"{evidence[index]:.2f}, this slice {per_slice[index]:.2f})")
        focus = focus_voxel(values, slice_axis=slice_axis, slice_index=index)
        caption = f"{view} slice {index} of {len(scores)}: {why}; views cross at the map's peak in that slice"
        return focus, caption, SliceStrip(per_slice, index, label)
    return focus_voxel(values), "views through the map's peak", None


def _slice_axis(job: LoadedRun, axis: int | None) -> int:
    return axis if axis is not None else (job.card.slice_axis or 0)


def _predicted_label(prediction: sitk.Image) -> int | None:
    """The most frequent non-background label of a segmenter's prediction (None: only background)."""
    counts = np.bincount(sitk.GetArrayViewFromImage(prediction).ravel().astype(np.int64))
    counts[0] = 0
    return int(np.argmax(counts)) if counts.sum() else None


def _outline_label(job: LoadedRun, choice: ClassChoice, prediction) -> str:
    """What the overlay's outline is."""
    if job.region is not None:
        return f"region given with --region ({Path(job.region_source).name})"
    names = list(job.card.class_names)
    index = choice.index if choice.index is not None else _predicted_label(prediction)
    name = names[index] if index is not None and index < len(names) else "foreground"
    return f"the model's predicted {name} region"


def _contour(job: LoadedRun, choice: ClassChoice, prediction, image: sitk.Image):
    """Outline drawn on the overlay: the user's region, or the segmenter's predicted class."""
    if job.region is not None:
        return job.region
    if not isinstance(prediction, sitk.Image):
        return None
    labels = sitk.GetArrayViewFromImage(prediction)
    if choice.index is not None:
        mask = labels == choice.index
    else:
        counts = np.bincount(labels.ravel().astype(np.int64))
        counts[0] = 0
        mask = labels == int(np.argmax(counts)) if counts.sum() else labels > 0
    contour = sitk.GetImageFromArray(mask.astype(np.uint8))
    contour.CopyInformation(image)
    return contour


def _display_window(card) -> tuple[float, float] | None:
    spec = card.input.intensity
    return tuple(spec.window) if spec.mode == "window" and spec.window else None


def input_error(item: InputItem, error: BaseException) -> str:
    """One line naming the input and the problem."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, (ValueError, OSError, TypeError)):
        return f"{item.source}: {one_line(error)}"
    return (f"{item.source}: unexpected {type(error).__name__}: {one_line(error)} "
            "(run with --debug for the traceback)")
