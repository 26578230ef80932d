"""The input description of a bare model file: keyword options and/or a sidecar JSON.

A TorchScript or state-dict file holds a network but not what it expects: the
task, spatial dims, spacing, intensity window, patch size, class names.  The
caller gives these as ``load_model`` options, or in a small sidecar JSON beside
the file (``model.pt`` -> ``model.json``; ``sidecar=`` names another), written
with the same fields as a card minus ``weights``::

    {"task": "segmentation", "spatial_dims": 3,
     "input": {"channels": 1, "spacing": [1.5, 1.5, 1.5],
               "intensity": {"mode": "window", "window": [-1000, 400]}},
     "classes": ["background", "lesion"],
     "architecture": {"class": "monai.networks.nets:UNet", "kwargs": {...}}}

Both together are merged into one card dict and validated by the card parser
(one place for field rules and their messages).  An option that contradicts
the sidecar is an error naming both values, never a silent override.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .card import ModelCard
from .errors import ModelCardError

#: option name -> the card field it sets (dotted path in the card JSON).
OPTION_FIELDS = {
    "name": "name",
    "description": "description",
    "task": "task",
    "spatial_dims": "spatial_dims",
    "slice_axis": "slice_axis",
    "channels": "input.channels",
    "channel_names": "input.channel_names",
    "spacing": "input.spacing",
    "size": "input.size",
    "patch_size": "input.patch_size",
    "pad_value": "input.pad_value",
    "intensity": "input.intensity",
    "classes": "classes",
    "activation": "output.activation",
    "architecture": "architecture.class",
    "architecture_kwargs": "architecture.kwargs",
    "layer": "target_layers.default",
}

#: shorthands that expand to ``input.intensity``.
_INTENSITY_SHORTHANDS = ("window", "normalization")


def sidecar_path(path: Path, sidecar: str | Path | None = None) -> Path | None:
    """The sidecar JSON of ``path``: ``sidecar`` if given, else ``<stem>.json`` when it exists."""
    if sidecar is not None:
        sidecar = Path(sidecar)
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path}: sidecar {sidecar} does not exist")
        return sidecar
    candidate = path.with_suffix(".json")
    return candidate if candidate.is_file() and candidate != path else None


def describe_file(path: Path, weights_format: str, options: Mapping[str, Any],
                  sidecar: str | Path | None = None) -> ModelCard:
    """A validated :class:`ModelCard` for the model file ``path`` from options and sidecar."""
    side = sidecar_path(path, sidecar)
    data = _read_sidecar(side, path) if side is not None else {}
    where = side or path
    for key, value in _option_fields(path, options).items():
        _merge(data, key, value, path, side)
    if "task" not in data or "spatial_dims" not in data or "classes" not in data:
        missing = [opt for opt in ("task", "spatial_dims", "classes") if opt not in data]
        raise ModelCardError(
            f"{path}: a bare model file does not say what it expects; give "
            f"{', '.join(missing)} as options (e.g. load_model(path, task='segmentation', "
            "spatial_dims=3, classes=['background', 'lesion'], spacing=..., window=...)) or in "
            f"a sidecar JSON {path.with_suffix('.json').name} beside it")
    data.setdefault("name", path.stem)
    data.setdefault("input", {}).setdefault("channels", 1)
    data["weights"] = {"file": str(path), "format": weights_format}
    return ModelCard.from_dict(data, base_dir=path.parent, source=where)


def describe_self_contained(path: Path, weights_format: str, what: str, options: Mapping[str, Any],
                            sidecar: str | Path | None = None) -> ModelCard:
    """:func:`describe_file` for a file that carries its own network (TorchScript, ONNX, ``.pt2``).

    Such a file has no architecture to name: ``architecture=`` options and a sidecar's
    ``architecture`` are refused, naming ``what`` the file is.
    """
    for option in ("architecture", "architecture_kwargs"):
        if options.get(option) is not None:
            raise ValueError(f"{path}: is {what}, which carries its own network; "
                             f"{option}= applies to state-dict files only. Remove it")
    card = describe_file(path, weights_format, options, sidecar)
    if card.architecture is not None:
        raise ValueError(f"{card.path}: names an architecture, but {path} is {what} that "
                         "carries its own network; remove the sidecar's 'architecture'")
    return card


def _read_sidecar(side: Path, path: Path) -> dict:
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{side}: the sidecar of {path.name} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelCardError(f"{side}: a sidecar must be a JSON object with card fields (task, "
                             f"spatial_dims, input, classes, ...), got {type(data).__name__}")
    if "weights" in data:
        raise ModelCardError(f"{side}: a sidecar describes the file beside it ({path.name}); "
                             "remove its 'weights' field (or write a card.json in a model folder)")
    return data


def _option_fields(path: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Options -> ``{dotted card field: value}``; unknown options are an error."""
    unknown = sorted(k for k in options if k not in OPTION_FIELDS and k not in _INTENSITY_SHORTHANDS)
    if unknown:
        known = ", ".join(sorted(set(OPTION_FIELDS) | set(_INTENSITY_SHORTHANDS)))
        raise TypeError(f"{path}: unknown option(s) {', '.join(unknown)}; a model file takes "
                        f"{known} (and sidecar=)")
    fields = {OPTION_FIELDS[k]: _plain(v) for k, v in options.items()
              if k in OPTION_FIELDS and v is not None}
    window, normalization = options.get("window"), options.get("normalization")
    if window is not None and normalization is not None:
        raise ValueError(f"{path}: give window= (clip and scale to [0, 1]) or normalization= "
                         "('zscore', 'none'), not both")
    if (window is not None or normalization is not None) and "input.intensity" in fields:
        raise ValueError(f"{path}: intensity= and window=/normalization= say the same thing; "
                         "give one of them")
    if window is not None:
        fields["input.intensity"] = {"mode": "window", "window": _plain(window)}
    elif normalization is not None:
        fields["input.intensity"] = {"mode": normalization}
    arch = fields.get("architecture.class")
    if isinstance(arch, Mapping):  # a whole {"class": ..., "kwargs": ...} block
        fields.pop("architecture.class")
        if "class" in arch:
            fields["architecture.class"] = arch["class"]
        if "kwargs" in arch:
            if "architecture.kwargs" in fields:
                raise ValueError(f"{path}: architecture kwargs given twice (in architecture= "
                                 "and architecture_kwargs=); give them once")
            fields["architecture.kwargs"] = arch["kwargs"]
    return fields


def _plain(value: Any) -> Any:
    """Tuples -> lists (JSON's types), so options compare equal to sidecar values."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _merge(data: dict, dotted: str, value: Any, path: Path, side: Path | None) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ModelCardError(f"{side}: field '{part}' must be a JSON object")
        node = child
    if leaf in node and node[leaf] != value:
        option = next(k for k, v in OPTION_FIELDS.items() if v == dotted) \
            if dotted in OPTION_FIELDS.values() else dotted
        raise ValueError(f"{path}: option {option}={value!r} contradicts its sidecar {side} "
                         f"({dotted} = {node[leaf]!r}); give the value in one place")
    node[leaf] = value
