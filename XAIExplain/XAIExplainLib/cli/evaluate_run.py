"""``xaiexplain evaluate``: how well does each method's heatmap find a reference mask?

Metrics that compare a map with a mask (Dice sweep, pointing games, relative
foreground, specificity and sensitivity) run on the input's own grid, where
the mask was drawn, with the voxel spacing in millimetres.  Metrics that
re-run the model on perturbed inputs (prediction preserved, deletion and
insertion, the sanity check) need the model's input: the image as the card
preprocesses it and the map resampled onto that grid; a per-slice model gets
one row per slice and the CSV reports their mean.  A per-slice model's map-versus-mask
metrics are also scored slice by slice on the slices the mask is present on
(``<metric>_slice_mean`` beside the volume's number, the values per slice in the JSON),
for the class the maps explain (one class per volume, models.explained_class).  Results go to
``<stem>_evaluation.csv`` (a row per method and class) and ``.json``, and a
table is printed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np
import SimpleITK as sitk

from .discovery import discover
from .errors import EXIT_OK, UserError, one_line
from .options import (check_device, check_methods, check_methods_for, load_model_or_fail,
                      parse_metric_options, resolve_targets)
from .outputs import on_input_grid
from .reading import read_item, read_mask
from .writing import OutputFolder


def run_evaluate(args: argparse.Namespace, stdout=None) -> int:
    """Run ``evaluate`` for parsed arguments; returns the exit status."""
    from ..evaluation import METRICS

    stdout = stdout or sys.stdout
    metrics = _check_metrics(args.metrics, METRICS)
    metric_options = parse_metric_options(getattr(args, "metric_options", None), metrics)
    methods = check_methods(args.methods)
    device = check_device(args.device)
    items = discover(args.inputs)
    if len(items) != 1:
        raise UserError(args.inputs[0], f"names {len(items)} volumes; evaluate takes one (run it "
                                        "once per volume)")
    item = items[0]
    csv_name, json_name = f"{item.stem}_evaluation.csv", f"{item.stem}_evaluation.json"
    out = OutputFolder(args.output_dir, overwrite=args.overwrite,
                       protected=[item.path, args.mask])
    out.prepare()
    try:
        return _evaluate(args, out, item, csv_name, json_name, metrics, metric_options, methods, device,
                         stdout)
    except BaseException:
        out.discard_if_unused()  # an error leaves no empty output folder behind
        raise


def _evaluate(args, out: OutputFolder, item, csv_name: str, json_name: str, metrics, metric_options, methods,
              device, stdout) -> int:
    """The evaluation proper, once the output folder is known to be writable."""
    from ..evaluation import MAP_ONLY_METRICS
    from ..models import explain_image

    out.check_free([csv_name, json_name])
    model = load_model_or_fail(args.model, device, getattr(args, "trust_model", False))
    check_methods_for(methods, model)
    choices = resolve_targets(args.targets, model.card)
    image = read_item(item)
    mask = read_mask(args.mask, image, item.source)

    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for choice in choices:
        try:
            result = explain_image(model, image, methods=methods, target=choice.index,
                                   layer=args.layer, device=device)
        except (ValueError, TypeError, OSError) as exc:
            raise UserError(item.source, one_line(exc)) from exc
        explained = result.target if isinstance(result.target, (int, np.integer)) else choice.index
        target_name = choice.name if explained is None else model.card.class_names[int(explained)]
        for method in methods:
            heat = on_input_grid(result.maps[method], image, "heatmap")
            map_metrics = [m for m in metrics if m in MAP_ONLY_METRICS]
            map_options = {m: o for m, o in metric_options.items() if m in map_metrics}
            values = score_on_input_grid(heat, mask, map_metrics, map_options)
            if model.card.spatial_dims == 2 and heat.GetDimension() == 3:
                axis = model.card.slice_axis or 0
                values.update(score_per_slice(heat, mask, map_metrics, axis, map_options))
            model_metrics = [m for m in metrics if m not in MAP_ONLY_METRICS]
            if model_metrics:
                values.update(score_on_model_grid(model, result.prepared, heat, choice.index,
                                                  method, args.layer, model_metrics,
                                                  {m: o for m, o in metric_options.items() if m in model_metrics}))
            rows.append({"input": item.source, "method": method, "target": target_name,
                         **values})
    out.write_text(_csv(rows), csv_name)
    out.write_text(json.dumps({"input": item.source, "mask": str(args.mask),
                               "model": model.card.name, "device": device,
                               "seconds": round(time.monotonic() - started, 3),
                               "rows": rows}, indent=2, default=_json_default) + "\n", json_name)
    if not args.quiet:
        stdout.write(_table(rows))
        stdout.write(f"Wrote {out.path / csv_name} and {json_name}\n")
    return EXIT_OK


def _check_metrics(requested, known) -> list[str]:
    if not requested:
        from ..evaluation import MAP_ONLY_METRICS

        return list(MAP_ONLY_METRICS)
    chosen = list(dict.fromkeys(requested))
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise UserError(f"--metric {unknown[0]}", f"unknown metric; available metrics: "
                                                  f"{', '.join(known)}")
    return chosen


def score_on_input_grid(heat: sitk.Image, mask: sitk.Image, metrics: list[str],
                        metric_options: dict | None = None) -> dict[str, Any]:
    """Map-versus-mask metrics on the input grid (spacing in mm for the pointing game)."""
    import torch

    from ..evaluation import evaluate

    if not metrics:
        return {}
    maps = torch.from_numpy(sitk.GetArrayFromImage(heat).astype(np.float32))[None]
    truth = torch.from_numpy(sitk.GetArrayFromImage(mask) != 0)[None]
    spacing = tuple(reversed(heat.GetSpacing()))
    try:
        columns = evaluate(None, None, maps, mask=truth, metrics=metrics, spacing=spacing,
                           metric_options=metric_options or None)
    except ValueError as exc:
        raise UserError("--metric", one_line(exc)) from exc
    except TypeError as exc:  # a --metric-option the metric does not take
        raise UserError("--metric-option", one_line(exc)) from exc
    return {name: values[0] for name, values in columns.items()}


def score_per_slice(heat: sitk.Image, mask: sitk.Image, metrics: list[str], axis: int,
                    metric_options: dict | None = None) -> dict[str, Any]:
    """A per-slice model's localisation metrics on each slice the mask is present on, and their mean.

    Each slice's map is a 2D explanation of its own; scoring the volume as one map asks
    whether the single highest voxel of all slices lies in the mask, which says little
    about a model that only ever saw one slice. Keys: ``mask_slices`` (the slice indices,
    numpy axis ``axis`` of the image array), ``<key>_mask_slices`` (one value per such slice)
    and ``<key>_slice_mean``.
    """
    import torch

    from ..evaluation import evaluate

    if not metrics:
        return {}
    heat_array = np.moveaxis(sitk.GetArrayFromImage(heat).astype(np.float32), axis, 0)
    mask_array = np.moveaxis(sitk.GetArrayFromImage(mask) != 0, axis, 0)
    present = [int(i) for i in np.flatnonzero(mask_array.reshape(len(mask_array), -1).any(axis=1))]
    if not present:
        return {"mask_slices": []}
    spacing = [float(v) for v in reversed(heat.GetSpacing())]
    del spacing[axis]
    try:
        columns = evaluate(None, None, torch.from_numpy(heat_array[present]),
                           mask=torch.from_numpy(mask_array[present]), metrics=metrics, spacing=tuple(spacing),
                           metric_options=metric_options or None)
    except ValueError as exc:
        raise UserError("--metric", one_line(exc)) from exc
    except TypeError as exc:  # a --metric-option the metric does not take
        raise UserError("--metric-option", one_line(exc)) from exc
    values: dict[str, Any] = {"mask_slices": present}
    for name, column in columns.items():
        if name.endswith("_threshold"):
            continue
        values[f"{name}_mask_slices"] = [float(v) for v in column]
        finite = [v for v in column if math.isfinite(v)]
        values[f"{name}_slice_mean"] = float(np.mean(finite)) if finite else math.nan
    return values


def score_on_model_grid(model, prepared, heat: sitk.Image, class_index, method: str, layer,
                        metrics: list[str], metric_options: dict | None = None) -> dict[str, Any]:
    """Metrics that re-run the model on its own input (``prepared``), the map resampled to it.

    A per-slice model scores every slice; the mean over slices is returned
    (and the per-slice values under ``<metric>_per_slice``).
    """
    import torch

    from ..evaluation import evaluate

    grid = prepared.model_grid
    # A 2D input was lifted to a one-slice volume by the preprocessing; lift the map alike.
    volume_heat = heat if heat.GetDimension() == 3 else sitk.JoinSeries([heat])
    on_model = sitk.Resample(volume_heat, grid.reference(), sitk.Transform(), sitk.sitkLinear, 0.0,
                             sitk.sitkFloat32)
    maps = np.clip(sitk.GetArrayFromImage(on_model), 0.0, 1.0)
    x = prepared.array  # (C, Z, Y, X)
    card = model.card
    if card.spatial_dims == 2:
        axis = card.slice_axis
        x = np.moveaxis(x, axis + 1, 0)  # (N, C, H, W)
        maps = np.moveaxis(maps, axis, 0)
    else:
        x, maps = x[None], maps[None]
    device = model.device
    activation = card.output_activation
    try:
        columns = evaluate(model.module, torch.from_numpy(np.ascontiguousarray(x)).to(device),
                           torch.from_numpy(np.ascontiguousarray(maps)).to(device),
                           target=class_index, metrics=metrics, activation=activation,
                           method=method, layer=layer or card.target_layers.default,
                           metric_options=metric_options or None)
    except ValueError as exc:
        raise UserError("--metric", one_line(exc)) from exc
    except TypeError as exc:  # a --metric-option the metric does not take
        raise UserError("--metric-option", one_line(exc)) from exc
    values: dict[str, Any] = {}
    for name, column in columns.items():
        finite = [v for v in column if math.isfinite(v)]
        values[name] = float(np.mean(finite)) if finite else math.nan
        if len(column) > 1:
            values[f"{name}_per_slice"] = column
    return values


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    columns: list[str] = []
    for row in rows:
        columns.extend(k for k, v in row.items() if k not in columns and not isinstance(v, list))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()
                         if not isinstance(v, list)})
    return buffer.getvalue()


def _table(rows: list[dict[str, Any]]) -> str:
    """A compact text table: one line per method and class, the headline metrics."""
    if not rows:
        return ""
    keys = [k for k in rows[0] if k not in ("input", "method", "target")
            and not isinstance(rows[0][k], list) and not k.endswith("_threshold")]
    header = ["method", "target", *keys]
    lines = [header] + [[r["method"], r["target"], *(_fmt(r.get(k)) for k in keys)] for r in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() + "\n"
                   for line in lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
