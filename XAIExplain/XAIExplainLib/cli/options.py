"""Check the command-line choices once, before any input is read.

Everything that does not depend on an input is validated here: method names
(with the list of valid ones), classes against the model card, the label
threshold, the device, ``--jobs``.  A mistake in a cohort command therefore
fails in a second with one clear line, not after the first hour of work.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..imaging.orientation import ORIENTATIONS
from .discovery import safe_name
from .errors import UserError, one_line

#: ``--axis`` names (``imaging.orientation``'s); the numpy axis they select depends on the image's direction.
AXIS_NAMES = ORIENTATIONS


@dataclass(frozen=True)
class ClassChoice:
    """A ``--target``: ``index`` None means the predicted class; ``suffix`` goes into file names."""

    index: int | None
    name: str
    suffix: str


def check_methods(methods: Sequence[str]) -> list[str]:
    """``--method`` values: the registry's one check (known names, each once), as a one-line error."""
    from ..engine.registry import MethodChoiceError, check_methods as registry_check

    try:
        return registry_check(methods)
    except MethodChoiceError as exc:
        raise UserError(f"--method {exc.method}" if exc.method else "--method", str(exc)) from None


def parse_method_options(pairs: Sequence[str] | None, methods: Sequence[str]) -> dict:
    """``--option NAME=VALUE`` pairs -> ``{name: value}``, each name an option of a chosen method
    (or a reading option, which every method takes). VALUE is read as JSON where it parses
    (``2000``, ``0.25``, ``true``, ``[8, 8, 4]``), else kept as text (``epsilon_gamma_box``)."""
    import json

    from ..engine import METHODS
    from ..engine.reading import READING_OPTIONS

    accepted = _accepted_options(methods)
    options: dict = {}
    for pair in pairs or ():
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise UserError(f"--option {pair}", "give NAME=VALUE, e.g. --option masks=2000")
        if name not in accepted:
            per_method = "; ".join(f"{m}: {', '.join(METHODS[m].options) or 'none'}" for m in methods)
            raise UserError(f"--option {pair}", f"'{name}' is not an option of the chosen method(s) "
                                                f"({per_method}; for every method: "
                                                f"{', '.join(READING_OPTIONS)})")
        if name in options:
            raise UserError(f"--option {pair}", f"'{name}' is given twice")
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text.strip()
    return options


def parse_metric_options(pairs: Sequence[str] | None, metrics: Sequence[str]) -> dict:
    """``--metric-option METRIC.NAME=VALUE`` pairs -> evaluate's ``metric_options`` ``{metric: {name: value}}``.

    METRIC must be one of the chosen ``--metric`` values; VALUE is read as JSON where it parses, as for
    ``--option``. Whether NAME is an option of that metric is the metric's own check (its error is
    passed on as a one-line usage error by the caller)."""
    import json

    options: dict = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        metric, dot, name = key.strip().partition(".")
        if not sep or not dot or not metric or not name or not text.strip():
            raise UserError(f"--metric-option {pair}", "give METRIC.NAME=VALUE, e.g. --metric-option irof.patch_size=16")
        if metric not in metrics:
            raise UserError(f"--metric-option {pair}", f"'{metric}' is not a chosen metric (add --metric {metric}; "
                                                       f"chosen: {', '.join(metrics)})")
        if name in options.get(metric, {}):
            raise UserError(f"--metric-option {pair}", f"'{metric}.{name}' is given twice")
        try:
            value = json.loads(text)
        except ValueError:
            value = text.strip()
        options.setdefault(metric, {})[name] = value
    return options


def options_for(methods: Sequence[str], options: dict) -> dict:
    """The options that ``methods`` (run together in one request) accept, reading options included."""
    accepted = _accepted_options(methods)
    return {name: value for name, value in options.items() if name in accepted}


def _accepted_options(methods: Sequence[str]) -> set[str]:
    from ..engine import METHODS
    from ..engine.reading import READING_OPTIONS

    return {name for method in methods for name in METHODS[method].options} | set(READING_OPTIONS)


def check_methods_for(methods: Sequence[str], model) -> None:
    """Refuse methods that cannot explain the loaded model (``MethodInfo.applicable``: CAM on a
    segmenter, KWC on a classifier, layer methods on TorchScript)."""
    from ..engine import METHODS

    card = model.card
    for name in methods:
        reason = METHODS[name].applicable(card.task, card.spatial_dims, model.scripted, model.module)
        if reason is not None:
            valid = [n for n, m in METHODS.items()
                     if m.applicable(card.task, card.spatial_dims, model.scripted, model.module) is None]
            raise UserError(f"--method {name}", f"does not apply to '{card.name}': {reason}; methods for this "
                                                f"model: {', '.join(sorted(valid))}")


def check_layer(methods: Sequence[str], model, layer: str | None) -> None:
    """``--layer`` must name a layer of the network when a chosen method uses one."""
    from ..engine import METHODS
    from ..engine.layers import resolve_one

    if layer is None or layer == "decoder" or model.scripted:
        return
    users = [m for m in methods if METHODS[m].needs_layer]
    if not users:
        return
    try:
        resolve_one(model.module, layer)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--layer {layer}", f"{one_line(exc)} (used by {', '.join(users)})") \
            from exc


def resolve_targets(values: Sequence[str] | None, card) -> list[ClassChoice]:
    """``--target`` values -> class choices; names are matched case-insensitively.

    ``predicted`` (the default) lets explain_image choose: one class for the whole volume of
    a per-slice classifier (models.explained_class); ``per-slice``: each slice its own class.
    """
    from ..models.explained_class import PER_SLICE, is_per_slice

    names = list(card.class_names)
    listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
    choices: list[ClassChoice] = []
    for value in values or ["predicted"]:
        text = str(value).strip()
        if text.lower() == "predicted":
            choice = ClassChoice(None, "predicted", "")
        elif is_per_slice(text):
            if card.task != "classification":
                raise UserError(f"--target {text}", f"applies to classifiers; '{card.name}' is a {card.task} model")
            choice = ClassChoice(None, PER_SLICE, "per_slice")
        else:
            try:
                index = card.class_index(int(text) if _is_int(text) else text)
            except ValueError:
                what = "class index out of range" if _is_int(text) else "unknown class"
                raise UserError(f"--target {text}", f"{what}; classes of '{card.name}': {listing}"
                                                    + ("" if _is_int(text) else " (or 'predicted')")) from None
            choice = ClassChoice(index, names[index], safe_name(names[index]))
        if choice not in choices:
            choices.append(choice)
    if len(choices) > 1 and any(c.index is None and c.name == "predicted" for c in choices):
        # Explicit classes get a suffix; give the predicted one a name too so files differ.
        choices = [c if c.name != "predicted" else ClassChoice(None, "predicted", "predicted")
                   for c in choices]
    return choices


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def parse_label_threshold(value: str | None) -> float | str | None:
    """``--label-threshold``: None, ``"otsu"`` or a number in [0, 1) (``imaging.thresholds``' rule)."""
    from ..imaging.thresholds import ACCEPTED, check_threshold

    if value is None:
        return None
    text = str(value).strip()
    try:
        return check_threshold(text if text.lower() == "otsu" else float(text))
    except (TypeError, ValueError):
        raise UserError(f"--label-threshold {value}", f"must be {ACCEPTED}") from None


def check_jobs(jobs: int) -> int:
    if jobs < 0:
        raise UserError(f"--jobs {jobs}", "must be 0 (read in turn) or a positive number of "
                                          "reader threads")
    return jobs


def check_device(device: str) -> str:
    """``--device``: ``engine.devices.resolve_device``'s rule (``auto``, ``cpu``, ``cuda``, ``cuda:N``);
    asking for a GPU that is not there is a one-line error, never a silent CPU run."""
    from ..engine.devices import resolve_device

    try:
        return str(resolve_device(device))
    except (TypeError, ValueError) as exc:
        raise UserError(f"--device {device}", one_line(exc)) from None


def load_model_or_fail(source: str, device: str, trust: bool):
    """The model for ``--model``; a missing model lists the available names."""
    from ..models import UntrustedModelError, list_models, load_model

    try:
        return load_model(source, device=device, trust=trust)
    except UntrustedModelError as exc:
        problem = one_line(exc)
        if "--trust-model" not in problem:
            problem += " (pass --trust-model)"
        raise UserError(f"--model {source}", problem) from exc
    except FileNotFoundError as exc:
        names = ", ".join(m.name for m in list_models()) or "none found"
        problem = one_line(exc)
        if "configured models" not in problem and "available models" not in problem:
            problem += f"; available models: {names}"
        raise UserError(f"--model {source}", problem) from exc
    except (ValueError, OSError, ImportError) as exc:
        raise UserError(f"--model {source}", one_line(exc)) from exc


def numpy_axis(image: sitk.Image, name: str | None) -> int | None:
    """The numpy axis (of the ``(z, y, x)`` array) closest to the anatomical ``--axis`` name.

    Physical axes are LPS: axial slices are stacked along S (physical z),
    coronal along P (y), sagittal along L (x).  The image axis whose direction
    column points most along that physical axis is the one to slice, so a
    sagittally acquired MRI is cut correctly too.
    """
    if name is None:
        return None
    if image.GetDimension() != 3:
        return 0
    from ..imaging.orientation import slice_axis_for_orientation

    return slice_axis_for_orientation(np.asarray(image.GetDirection(), dtype=float).reshape(3, 3), name)


def output_ending(fmt: str | None, input_path: Path) -> str:
    """``--format`` or, by default, the input's family: ``.nii.gz`` for NIfTI, else ``.nrrd``."""
    if fmt is not None:
        return ".nii.gz" if fmt == "nii.gz" else ".nrrd"
    name = input_path.name.lower()
    return ".nii.gz" if name.endswith((".nii", ".nii.gz")) else ".nrrd"
