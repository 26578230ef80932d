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

import numpy as np
import SimpleITK as sitk

from .discovery import InputItem
from .errors import UserError, one_line
from .montage import peak_index, render_overlay
from .options import ClassChoice, numpy_axis, options_for, output_ending
from .outputs import (OutputNames, check_region_mask, prediction_record, threshold_label,
                      write_heatmap, write_prediction)
from .progress import Progress
from .run_plan import LoadedRun
from .summary import InputRecord


def explain_input(job: LoadedRun, item: InputItem, image: sitk.Image, record: InputRecord,
                  progress: Progress) -> None:
    """Explain one input for every class choice and method group, and write all its files.

    Methods run in groups that share their passes (the CAM family: one
    forward and one backward for all of them), every other method alone, so
    the summary can say what each method cost without giving up the sharing.
    """
    from ..models import explain_image

    card = job.card
    names = OutputNames(item.stem, output_ending(job.fmt, item.path))
    job.out.check_free(names.planned(job.methods, job.choices, card.task,
                                     job.label_threshold is not None, job.overlay))
    _check_dimensions(image, card, item.source)
    check_region_mask(job.region, image, job.region_source, item.source)
    axis = numpy_axis(image, job.axis_name)
    groups = method_groups(job.methods)
    steps = [(choice, group) for choice in job.choices for group in groups]
    prediction = None
    for number, (choice, group) in enumerate(steps):
        def report(*args, _offset=number):
            progress.step((_offset + _fraction(*args)) / len(steps), "+".join(group))

        result = explain_image(job.model, image, methods=list(group),
                               target=_target(choice, job, image), layer=job.layer,
                               mode=job.mode, axis=axis, device=job.device, progress=report,
                               **options_for(group, job.method_options),
                               **({"memory_budget_mb": job.memory_budget_mb} if job.memory_budget_mb else {}))
        if prediction is None:
            prediction = result.prediction
            write_prediction(job.out, prediction, card, image, names.prediction(card.task))
            record.outputs.append(names.prediction(card.task))
            record.prediction = prediction_record(prediction, card, image)
            for stage in ("preprocess",):
                if stage in result.timings:
                    record.timings[stage] = float(result.timings[stage])
        suffix = f"_{choice.suffix}" if choice.suffix else ""
        record.timings["+".join(group) + suffix] = float(result.timings.get("explain", math.nan))
        for method in group:
            _write_method(job, method, choice, result.maps[method], image, prediction, names,
                          record, axis, result.layer)


def method_groups(methods: list[str]) -> list[tuple[str, ...]]:
    """CAM-family methods together (they share one pass), every other method on its own."""
    from ..engine import METHODS

    shared = tuple(m for m in methods if METHODS[m].family == "cam")
    alone = [(m,) for m in methods if METHODS[m].family != "cam"]
    return ([shared] if shared else []) + alone


def _write_method(job: LoadedRun, method: str, choice: ClassChoice, heat: sitk.Image,
                  image: sitk.Image, prediction, names: OutputNames, record: InputRecord,
                  axis: int | None, layer: str | None) -> None:
    heat = write_heatmap(job.out, heat, image, names.heatmap(method, choice))
    record.outputs.append(names.heatmap(method, choice))
    if job.label_threshold is not None:
        label, used = threshold_label(heat, job.label_threshold)
        job.out.write_image(label, names.label(method, choice))
        record.outputs.append(names.label(method, choice))
        record.prediction.setdefault("label_threshold", {})[names.base(method, choice)] = used
    if job.overlay:
        title, subtitle = overlay_titles(job, names.stem, method, choice, heat, prediction,
                                         axis, layer)
        from ..engine import METHODS

        contour = _contour(job, choice, prediction, image)
        window = _display_window(job.card)
        spiky = METHODS[method].family == "gradient"  # voxel-level input gradients
        job.out.write_with(lambda path: render_overlay(image, heat, path, title, subtitle, window,
                                                       contour, spiky),
                           names.overlay(method, choice))
        record.outputs.append(names.overlay(method, choice))


def _target(choice: ClassChoice, job: LoadedRun, image: sitk.Image):
    """What explain_image explains: a class index (None = predicted) or a region on a segmenter."""
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


def _fraction(*args) -> float:
    """Progress as a fraction, from ``(fraction)`` or ``(done, total[, message])`` calls."""
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(numbers) >= 2 and numbers[1]:
        return float(numbers[0]) / float(numbers[1])
    return float(numbers[0]) if numbers else 0.0


def overlay_titles(job: LoadedRun, stem: str, method: str, choice: ClassChoice,
                   heat: sitk.Image, prediction, axis: int | None,
                   layer: str | None) -> tuple[str, str]:
    """Title: input, method and class; subtitle: model, the layer used, device."""
    from ..engine import METHODS

    method_name = METHODS[method].label
    what = explained_class(job, choice, heat, prediction, axis)
    parts = [f"model {job.card.name}"]
    if METHODS[method].needs_layer and layer:
        parts.append(f"layer {layer}")
    parts.append(job.device)
    return f"{stem} · {method_name} · {what}", " · ".join(parts)


def explained_class(job: LoadedRun, choice: ClassChoice, heat: sitk.Image, prediction,
                    axis: int | None) -> str:
    """The class the picture explains, with its score where the model gives one."""
    names = list(job.card.class_names)
    if isinstance(prediction, sitk.Image):
        if choice.index is not None:
            return f"class {choice.name}"
        counts = np.bincount(sitk.GetArrayViewFromImage(prediction).ravel().astype(np.int64))
        counts[0] = 0
        if counts.sum() == 0:
            return "predicted class (none found)"
        top = int(np.argmax(counts))
        return f"class {names[top] if top < len(names) else top} (predicted region)"
    scores = np.asarray(prediction, dtype=np.float64)
    where = ""
    if scores.ndim == 2:
        peak = peak_index(sitk.GetArrayViewFromImage(heat))
        slice_axis = axis if axis is not None else (job.card.slice_axis or 0)
        index = peak[slice_axis] if len(peak) == 3 else 0
        scores = scores[min(index, len(scores) - 1)]
        where = f" on slice {index}"
    chosen = int(np.argmax(scores)) if choice.index is None else choice.index
    label = "predicted " if choice.index is None else ""
    return f"{label}class {names[chosen]} (p = {scores[chosen]:.2f}{where})"


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
