"""``xaiexplain explain``: check the command, then hand the cohort to :mod:`.cohort`.

Everything that does not depend on an input is checked here, before the first
input is read: methods, classes, the layer of every layer-based method, the
label threshold, the cluster, the output folder.  The per-input work
(:func:`explain_input`) is run by :func:`.explain_one.explain_one`, in this
process or on Dask workers.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .discovery import InputItem, discover
from .errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_SOME_FAILED, UserError, one_line
from .explain_one import CohortSpec
from .montage import render_overlay
from .options import (ClassChoice, check_device, check_jobs, check_layer, check_methods,
                      check_methods_for, load_model_or_fail, numpy_axis, options_for, output_ending,
                      parse_label_threshold, parse_method_options, resolve_targets)
from .outputs import (OutputNames, check_region_mask, prediction_record, threshold_label,
                      write_heatmap, write_prediction)
from .progress import Progress
from .reading import read_image
from .summary import InputRecord, RunSummary, model_source
from .writing import OutputFolder

PROG = "xaiexplain"


@dataclass
class ExplainJob:
    """Everything fixed for the whole run, checked before the first input is read."""

    model: Any
    methods: list[str]
    choices: list[ClassChoice]
    layer: str | None
    mode: str | None
    axis_name: str | None
    device: str
    fmt: str | None
    label_threshold: float | str | None
    overlay: bool
    region: sitk.Image | None
    region_source: str
    out: OutputFolder
    debug: bool = False
    memory_budget_mb: float | None = None
    method_options: dict = dataclasses.field(default_factory=dict)

    @property
    def card(self):
        return self.model.card


def run_explain(args: argparse.Namespace, stdout=None, stderr=None) -> int:
    """Run ``explain`` for parsed arguments; returns the exit status."""
    from .cohort import run_cohort
    from .signals import sigterm_as_interrupt

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    with sigterm_as_interrupt():
        spec, items, model = plan(args)
        progress = Progress(len(items), stream=stderr, enabled=not args.quiet)
        if len(items) == 1 and not progress.interactive:
            progress.enabled = False  # "[1/1] x: ok" lines add nothing; errors still print
        summary = run_cohort(spec, items, args.output_dir, model=model,
                             cluster=getattr(args, "cluster", None), jobs=args.jobs,
                             progress=progress, stderr=stderr, options=_options(args))
    return finish(summary, Path(args.output_dir), args.quiet, stdout, stderr)


def plan(args: argparse.Namespace,
         remote: bool = False) -> tuple[CohortSpec, list[InputItem], Any]:
    """Validate every option, load the model once to check them, discover the inputs.

    ``remote``: the inputs run on a Dask cluster, whose workers load the model
    themselves; the model loaded here (on the CPU) is then not returned.
    """
    from .cohort import fingerprint

    methods = check_methods(args.methods)
    method_options = parse_method_options(getattr(args, "options", None), methods)
    label_threshold = parse_label_threshold(args.label_threshold)
    check_jobs(args.jobs)
    budget = getattr(args, "memory_budget", None)
    if budget is not None and not budget > 0:
        raise UserError(f"--memory-budget {budget:g}", "must be a positive number of megabytes")
    cluster = getattr(args, "cluster", None)
    if cluster is not None:
        from .cluster import parse_cluster, require_dask

        parse_cluster(cluster)
        require_dask()
    remote = remote or cluster is not None
    # A scheduler elsewhere has its own devices: "cuda" is checked there, by the workers.
    device = args.device if cluster and "://" in cluster else check_device(args.device)
    items = discover(args.inputs)
    region_path = None
    if args.region is not None and args.region.strip().lower() != "predicted":
        region_path = Path(args.region)
    # A cluster's workers load the model themselves; here it only checks the options.
    model = load_model_or_fail(args.model, "cpu" if remote else device,
                               getattr(args, "trust_model", False))
    card = model.card
    check_methods_for(methods, model)
    check_layer(methods, model, args.layer)
    resolve_targets(args.targets, card)
    _check_mode(args.mode, card)
    if region_path is not None:
        if card.task != "segmentation":
            raise UserError(f"--region {args.region}", f"applies to segmentation models; "
                                                       f"'{card.name}' is a {card.task} model")
        read_image(region_path)
    spec = CohortSpec(model=str(args.model), methods=tuple(methods),
                      targets=tuple(args.targets) if args.targets else None, layer=args.layer,
                      mode=args.mode, axis=args.axis, device=args.device if remote else device,
                      fmt=args.format, label_threshold=label_threshold, overlay=args.overlay,
                      region=str(region_path) if region_path is not None else None,
                      trust=getattr(args, "trust_model", False), overwrite=args.overwrite,
                      debug=getattr(args, "debug", False), memory_budget_mb=budget,
                      method_options=tuple(sorted(method_options.items())))
    spec = dataclasses.replace(fingerprint(spec, model), source=model_source(model))
    return spec, items, (None if remote else model)


def build_job(spec: CohortSpec, output_dir: Path, model=None) -> ExplainJob:
    """The :class:`ExplainJob` of ``spec`` in this process (a worker loads the model here)."""
    from .cohort import check_same_model

    device = check_device(spec.device)
    if model is None:
        model = load_model_or_fail(spec.model, device, spec.trust)
        check_same_model(spec, model)
    region = read_image(Path(spec.region)) if spec.region else None
    return ExplainJob(model=model, methods=list(spec.methods),
                      choices=resolve_targets(spec.targets, model.card), layer=spec.layer,
                      mode=spec.mode, axis_name=spec.axis, device=device, fmt=spec.fmt,
                      label_threshold=spec.label_threshold, overlay=spec.overlay, region=region,
                      region_source=spec.region or "",
                      out=OutputFolder(output_dir, overwrite=spec.overwrite), debug=spec.debug,
                      memory_budget_mb=spec.memory_budget_mb, method_options=dict(spec.method_options))


def _check_mode(mode: str | None, card) -> None:
    from ..engine.modes import resolve_mode

    try:
        resolve_mode(mode, None, card.spatial_dims, model_name=f"model '{card.name}'")
    except ValueError as error:
        raise UserError(f"--mode {mode}", str(error)) from None


def explain_input(job: ExplainJob, item: InputItem, image: sitk.Image, record: InputRecord,
                  progress: Progress) -> None:
    """Explain one input for every class choice and method group, and write all its files.

    Methods run in groups that share their passes (the CAM family: one
    forward and one backward for all of them), every other method alone, so
    the summary can say what each method cost without giving up the sharing.
    """
    from ..engine.progress import progress_fraction
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
    failures: list[str] = []
    for number, (choice, group) in enumerate(steps):
        def report(*args, _offset=number):
            progress.step((_offset + progress_fraction(*args)) / len(steps), "+".join(group))

        try:
            result = explain_image(job.model, image, methods=list(group),
                                   target=_target(choice, job, image), layer=job.layer,
                                   mode=job.mode, axis=axis, device=job.device, progress=report,
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


def _write_method(job: ExplainJob, method: str, choice: ClassChoice, heat: sitk.Image,
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


def _target(choice: ClassChoice, job: ExplainJob, image: sitk.Image):
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


def overlay_titles(job: ExplainJob, stem: str, method: str, explained: int | None, prediction,
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


def explained_class(job: ExplainJob, explained: int | None, prediction, focus,
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


def overlay_focus(job: ExplainJob, heat: sitk.Image, prediction, explained: int | None,
                  axis: int | None, contour: sitk.Image | None):
    """``(focus voxel, caption, strip)``: where the picture cuts and why.

    A 2D classifier run per slice: the slice with the highest probability of the
    explained class (models.explained_class.evidence_slice), its probabilities as a
    strip; a segmenter: the map's peak inside the outlined region; else the map's peak.
    """
    from ..models.explained_class import evidence_slice
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
            label, why = "p(predicted)", "the highest probability of its own predicted class"
        else:
            per_slice = scores[:, explained]
            index = evidence_slice(scores, explained)
            label, why = f"p({names[explained]})", f"the highest p({names[explained]})"
        focus = focus_voxel(values, slice_axis=slice_axis, slice_index=index)
        caption = (f"{view} slice {index} of {len(scores)}: {why} = {per_slice[index]:.2f}; "
                   "views cross at the map's peak in that slice")
        return focus, caption, SliceStrip(per_slice, index, label)
    return focus_voxel(values), "views through the map's peak", None


def _slice_axis(job: ExplainJob, axis: int | None) -> int:
    return axis if axis is not None else (job.card.slice_axis or 0)


def _predicted_label(prediction: sitk.Image) -> int | None:
    """The most frequent non-background label of a segmenter's prediction (None: only background)."""
    counts = np.bincount(sitk.GetArrayViewFromImage(prediction).ravel().astype(np.int64))
    counts[0] = 0
    return int(np.argmax(counts)) if counts.sum() else None


def _outline_label(job: ExplainJob, choice: ClassChoice, prediction) -> str:
    """What the overlay's outline is."""
    if job.region is not None:
        return f"region given with --region ({Path(job.region_source).name})"
    names = list(job.card.class_names)
    index = choice.index if choice.index is not None else _predicted_label(prediction)
    name = names[index] if index is not None and index < len(names) else "foreground"
    return f"the model's predicted {name} region"


def _contour(job: ExplainJob, choice: ClassChoice, prediction, image: sitk.Image):
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


def finish(summary: RunSummary, output_dir: Path, quiet: bool, stdout, stderr) -> int:
    """Report where the outputs are; the exit status says whether everything was written."""
    ok, total = len(summary.succeeded), len(summary.records)
    for problem in summary.problems:
        print(f"{PROG}: error: {problem}", file=stderr)
    if not quiet and ok:
        skipped = f" ({len(summary.skipped)} complete from an earlier run)" if summary.skipped else ""
        if summary.partial:
            skipped += f" ({len(summary.partial)} with method(s) that could not run: see above)"
        where = ("summary.json, summary.csv" if not summary.problems
                 else "summary.json and summary.csv NOT written")
        print(f"Explained {ok} of {total} input(s){skipped} in {summary.seconds:.1f} s on "
              f"{summary.device}; outputs in {output_dir}/ ({where})", file=stdout)
    if ok == total and not summary.problems and not summary.partial:
        return EXIT_OK
    if summary.partial:
        return EXIT_SOME_FAILED  # some methods were written, others could not run
    return EXIT_SOME_FAILED if ok else EXIT_BAD_INPUT


def _options(args: argparse.Namespace) -> dict[str, Any]:
    keep = ("model", "methods", "options", "targets", "region", "layer", "mode", "axis", "device", "format",
            "label_threshold", "overlay", "jobs", "cluster", "memory_budget", "output_dir", "overwrite")
    return {k: getattr(args, k) for k in keep if hasattr(args, k)}

