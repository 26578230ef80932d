"""Model cards: the ``card.json`` that says how to build, feed and read a model.

A card is the single source of truth for everything outside the weights: the
task, the number of spatial dimensions, how to preprocess an image (spacing,
grid size, intensity window), what the outputs mean (class names, colours,
activation) and which layer an explanation should use by default.  Validation
happens once, here, with messages that name the field, what was found and what
is accepted, so that a typo in a card never turns into a shape error deep in
the engine.

Conventions
-----------
* ``input.spacing`` and ``input.size`` / ``input.patch_size`` are given in the
  order of the model's spatial tensor axes: ``(H, W)`` for a 2D model (rows,
  columns of a slice) and ``(D, H, W)`` for a 3D model, i.e. numpy order, the
  reverse of SimpleITK's ``(x, y, z)``.
* ``input.divisible_by`` (3D models): the model grid grows (centred) until
  each size is a multiple of it, for networks that halve the grid n times.
* ``input.intensity.range`` (mode ``window``): the interval the window maps onto,
  ``[0, 1]`` unless given (pyliverlesionseg's CT networks take ``[-0.5, 0.5]``).
* ``input.orientation`` ``"LPS"``: the network learned anatomy on axis-aligned LPS
  volumes (x to the patient's left, y to the back, z up: SimpleITK's identity
  direction); images with another direction are refused with the way to reorient
  them, rather than fed with the anatomy mirrored or rotated.
* ``input.modality`` names the imaging modality the input pipeline is for (``"CT"``);
  ``input.variants`` gives, per other modality, the input fields that differ for it
  (``intensity``, ``resampling``, ``pad_value``): pyliverlesionseg's liver network takes CT and
  MR, each normalised and cropped its own way. :meth:`ModelCard.for_modality` is the card a
  chosen modality runs with (:mod:`models.modality` chooses).
* ``slice_axis`` (2D models only) is the numpy axis of a ``(Z, Y, X)`` volume
  along which the model runs slice by slice; 0 means axial slices.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..activation_names import OUTPUT_ACTIVATIONS
from .card_steps import (PostprocessingSpec, ResamplingSpec, WindowsSpec, parse_postprocessing, parse_resampling,
                         parse_windows)
from .errors import ModelCardError

TASKS = ("classification", "segmentation")
WEIGHT_FORMATS = ("state_dict", "torchscript", "pickle", "onnx", "exported_program")
ACTIVATIONS = OUTPUT_ACTIVATIONS  # activation_names (re-exported by engine.activations): the one vocabulary
INTENSITY_MODES = ("window", "zscore", "scale", "minmax", "region_median", "none")
#: The input fields a modality variant may set (the rest is the card's own input).
VARIANT_FIELDS = ("intensity", "resampling", "pad_value")
ORIENTATIONS = ("LPS",)
CARD_FILENAME = "card.json"


@dataclass(frozen=True)
class IntensitySpec:
    """How raw intensities (HU for CT) become network inputs.

    ``window``: clip to ``[low, high]`` and scale linearly to ``[0, 1]`` (or to ``range``).
    ``zscore``: subtract the volume's mean and divide by its standard deviation.
    ``scale``: ``(x - mean) / std`` with fixed values from the card.
    ``minmax``: clip to the volume's ``[min, min + upper_fraction x (max - min)]`` and scale
    linearly onto ``range`` (pyliverlesionseg's MR normalisation: fraction 0.8, range
    ``[-0.5, 0.5]``).
    ``region_median``: centre on the median of a region another model segments
    (``input.resampling.mask``) and scale so that the region's minimum and maximum fall inside
    ``range`` (pyliverlesionseg's MR normalisation for its lesion network: the liver's median
    onto 0, its farther extreme onto +-0.5).
    ``none``: feed the values unchanged.
    """

    mode: str = "none"
    window: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None
    range: tuple[float, float] | None = None
    upper_fraction: float | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"mode": self.mode}
        if self.window is not None:
            out["window"] = list(self.window)
        if self.range is not None:
            out["range"] = list(self.range)
        if self.mean is not None:
            out["mean"] = self.mean
        if self.std is not None:
            out["std"] = self.std
        if self.upper_fraction is not None:
            out["upper_fraction"] = self.upper_fraction
        return out


@dataclass(frozen=True)
class InputSpec:
    """The grid and intensities the model was trained on."""

    channels: int
    spacing: tuple[float, ...] | None
    size: tuple[int, ...] | None
    patch_size: tuple[int, ...] | None
    intensity: IntensitySpec
    pad_value: float | None
    divisible_by: tuple[int, ...] | None = None
    orientation: str | None = None
    resampling: ResamplingSpec = ResamplingSpec()
    #: One name per input channel ("T1", "T1ce", ...), in the network's channel order; None: unnamed.
    channel_names: tuple[str, ...] | None = None
    #: How volume windows are placed (``input.windows``, :mod:`.card_steps`).
    windows: WindowsSpec = WindowsSpec()
    #: The imaging modality these fields are for ("CT", "MR"); None: not declared.
    modality: str | None = None
    #: ``(modality, InputSpec)`` for every other modality the model takes (``input.variants``).
    variants: tuple[tuple[str, "InputSpec"], ...] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the model takes, its own first; empty when it declares none."""
        if self.modality is None:
            return ()
        return (self.modality,) + tuple(name for name, _ in self.variants)


    @property
    def channel_labels(self) -> tuple[str, ...]:
        """The channels' names, or ``channel 0``, ``channel 1``, ... for a model that names none:
        what a list of images is checked against, a dict keyed by and a panel labelled with."""
        if self.channel_names is not None:
            return self.channel_names
        return tuple(f"channel {i}" for i in range(self.channels))

    def to_dict(self) -> dict:
        out = {
            "channels": self.channels,
            "spacing": None if self.spacing is None else list(self.spacing),
            "size": None if self.size is None else list(self.size),
            "patch_size": None if self.patch_size is None else list(self.patch_size),
            "intensity": self.intensity.to_dict(),
            "pad_value": self.pad_value,
        }
        if self.divisible_by is not None:
            out["divisible_by"] = list(self.divisible_by)
        if self.orientation is not None:
            out["orientation"] = self.orientation
        if not self.resampling.is_default:
            out["resampling"] = self.resampling.to_dict()
        if self.channel_names is not None:
            out["channel_names"] = list(self.channel_names)
        if not self.windows.is_default:
            out["windows"] = self.windows.to_dict()
        if self.modality is not None:
            out["modality"] = self.modality
        if self.variants:
            out["variants"] = {name: spec.variant_fields() for name, spec in self.variants}
        return out

    def variant_fields(self) -> dict:
        """The fields a modality variant sets (:data:`VARIANT_FIELDS`), as the card writes them."""
        out = {"intensity": self.intensity.to_dict(), "pad_value": self.pad_value}
        if not self.resampling.is_default:
            out["resampling"] = self.resampling.to_dict()
        return out


@dataclass(frozen=True)
class ClassSpec:
    """One output class: its name, for display an RGB colour (0-255), and the value the model's label
    map writes for it where that is not its channel index (nnU-Net's region-based models write
    ``regions_class_order[k]`` for channel k, and have no background channel)."""

    name: str
    color: tuple[int, int, int] | None = None
    value: int | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.color is not None:
            out["color"] = list(self.color)
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class ArchitectureSpec:
    """An importable ``module:Class`` (a ``torch.nn.Module`` subclass) and its kwargs.

    ``Class`` is one attribute of the module (no dotted path: nothing from a file is
    resolved by walking attributes, see :func:`models.trust.resolve_class`).
    """

    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def module_name(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def class_name(self) -> str:
        return self.target.split(":", 1)[1]

    def to_dict(self) -> dict:
        return {"class": self.target, "kwargs": dict(self.kwargs)}


@dataclass(frozen=True)
class WeightsSpec:
    """The weights file, how it is serialised, and optionally its SHA-256."""

    file: Path
    format: str
    sha256: str | None = None

    def to_dict(self, base_dir: Path | None = None) -> dict:
        name = self.file
        if base_dir is not None:
            try:
                name = self.file.relative_to(base_dir)
            except ValueError:
                pass
        out: dict[str, Any] = {"file": name.as_posix(), "format": self.format}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out


@dataclass(frozen=True)
class TargetLayers:
    """The layer an explanation uses unless told otherwise, plus good alternatives."""

    default: str | None = None
    suggested: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"default": self.default, "suggested": list(self.suggested)}


@dataclass(frozen=True)
class ModelCard:
    """A validated model card.  Build one with :func:`load_card` or :meth:`from_dict`."""

    name: str
    task: str
    spatial_dims: int
    input: InputSpec
    classes: tuple[ClassSpec, ...]
    weights: WeightsSpec
    architecture: ArchitectureSpec | None = None
    target_layers: TargetLayers = TargetLayers()
    slice_axis: int | None = None
    output_activation: str = "softmax"
    postprocessing: PostprocessingSpec | None = None
    description: str = ""
    version: str = ""
    path: Path | None = None
    folder: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self, value) -> int:
        """The index of a class given by index or by name (exact, else case-insensitive): the one
        rule the pipeline, the command line and the Slicer logic resolve class names with."""
        names = self.class_names
        listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
        if isinstance(value, bool) or not isinstance(value, (int, str)) and not hasattr(value, "__index__"):
            raise TypeError(f"a class is an index or a name, got {type(value).__name__}")
        if isinstance(value, str):
            if value in names:
                return names.index(value)
            lowered = [n.lower() for n in names]
            if value.strip().lower() in lowered:
                return lowered.index(value.strip().lower())
            raise ValueError(f"unknown class {value!r}; classes of '{self.name}': {listing}")
        index = int(value)
        if not 0 <= index < len(names):
            raise ValueError(f"class index {index} is out of range; classes of '{self.name}': {listing}")
        return index

    @property
    def base_dir(self) -> Path | None:
        """The folder relative weights paths are resolved against."""
        if self.folder is not None:
            return self.folder
        return None if self.path is None else self.path.parent

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None,
                  source: str | Path | None = None) -> "ModelCard":
        """Validate a parsed card.

        ``base_dir`` resolves a relative weights path; ``source`` (the card
        file) is named in every error message.
        """
        return _parse_card(data, None if base_dir is None else Path(base_dir),
                           None if source is None else Path(source))

    def to_dict(self) -> dict:
        """The card as JSON-ready data; weights paths relative to the card folder."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "task": self.task,
            "spatial_dims": self.spatial_dims,
        }
        if self.slice_axis is not None:
            out["slice_axis"] = self.slice_axis
        out["input"] = self.input.to_dict()
        out["output"] = {"activation": self.output_activation}
        if self.postprocessing is not None:
            out["output"]["postprocessing"] = self.postprocessing.to_dict()
        out["classes"] = [c.to_dict() for c in self.classes]
        if self.architecture is not None:
            out["architecture"] = self.architecture.to_dict()
        out["weights"] = self.weights.to_dict(self.base_dir)
        out["target_layers"] = self.target_layers.to_dict()
        out.update(dict(self.extra))
        return out

    def for_modality(self, modality: str) -> "ModelCard":
        """The card with the input fields of ``modality`` (one of :attr:`InputSpec.modalities`, exact)."""
        if modality == self.input.modality:
            return self
        for name, spec in self.input.variants:
            if name == modality:
                return dataclasses.replace(self, input=dataclasses.replace(spec, modality=name, variants=()))
        offered = ", ".join(self.input.modalities) or "none declared"
        raise ValueError(f"model '{self.name}' has no {modality!r} input pipeline (modalities: {offered})")

    def summary(self) -> str:
        dims = f"{self.spatial_dims}D" + (" per slice" if self.spatial_dims == 2 else "")
        return f"{self.name}: {self.task}, {dims}, classes {', '.join(self.class_names)}"


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card.json (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"model card not found: {path} (expected a card.json file "
                                "or a model folder that contains one)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelCardError(f"{path}: not a UTF-8 text file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg}") from exc
    card = _parse_card(data, path.parent, path)
    return card


def save_card(card: ModelCard, path: str | Path) -> Path:
    """Write ``card`` as pretty JSON; returns the written path."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    path.write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# Validation helpers: every message names the card, the field, the value and what is
# accepted.

_KNOWN_TOP = {"name", "version", "description", "task", "spatial_dims", "slice_axis", "input",
              "output", "classes", "architecture", "weights", "target_layers", "format_version"}


class _Reader:
    def __init__(self, source: Path | None):
        self.source = source

    def fail(self, field_name: str, message: str) -> ModelCardError:
        where = f"{self.source}: " if self.source is not None else "model card: "
        return ModelCardError(f"{where}field '{field_name}' {message}")

    def require(self, data: Mapping, key: str, prefix: str = "") -> Any:
        name = prefix + key
        if key not in data or data[key] is None:
            raise self.fail(name, "is missing")
        return data[key]

    def mapping(self, value: Any, name: str) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(name, f"must be a JSON object, got {_show(value)}")
        return value

    def string(self, value: Any, name: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {_show(value)}")
        if choices is not None and value not in choices:
            raise self.fail(name, f"must be one of {', '.join(repr(c) for c in choices)}, "
                                  f"got {value!r}")
        return value

    def integer(self, value: Any, name: str, minimum: int | None = None,
                choices: tuple[int, ...] | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {_show(value)}")
        if choices is not None and value not in choices:
            raise self.fail(name, f"must be one of {', '.join(map(str, choices))}, got {value}")
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value: Any, name: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, f"must be a finite number, got {_show(value)}")
        if positive and value <= 0:
            raise self.fail(name, f"must be > 0, got {value}")
        return float(value)

    def vector(self, value: Any, name: str, length: int, kind: str) -> tuple:
        what = "positive numbers" if kind == "float" else "positive integers"
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise self.fail(name, f"must be a list of {length} {what} (one per spatial axis of "
                                  f"the model input), got {_show(value)}")
        if kind == "float":
            return tuple(self.number(v, f"{name}[{i}]", positive=True) for i, v in enumerate(value))
        return tuple(self.integer(v, f"{name}[{i}]", minimum=1) for i, v in enumerate(value))


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (set, bytes)) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _parse_card(data: Any, base_dir: Path | None, source: Path | None) -> ModelCard:
    r = _Reader(source)
    if not isinstance(data, Mapping):
        where = f"{source}: " if source is not None else "model card: "
        raise ModelCardError(f"{where}a card must be a JSON object, got {_show(data)}")

    name = r.string(r.require(data, "name"), "name")
    task = r.string(r.require(data, "task"), "task", TASKS)
    dims = r.integer(r.require(data, "spatial_dims"), "spatial_dims", choices=(2, 3))

    slice_axis = data.get("slice_axis")
    if dims == 2:
        slice_axis = 0 if slice_axis is None else r.integer(slice_axis, "slice_axis",
                                                             choices=(0, 1, 2))
    elif slice_axis is not None:
        raise r.fail("slice_axis", f"only applies to 2D models (spatial_dims 2); remove it for "
                                   f"a 3D model, got {_show(slice_axis)}")

    input_spec = _parse_input(r, r.mapping(r.require(data, "input"), "input"), dims)
    output = r.mapping(data.get("output", {}), "output")
    default_act = "softmax"
    activation = r.string(output.get("activation", default_act), "output.activation", ACTIVATIONS)
    postprocessing = parse_postprocessing(r, output.get("postprocessing"), task)
    classes = _parse_classes(r, r.require(data, "classes"), task)
    weights = _parse_weights(r, r.require(data, "weights"), base_dir)

    architecture = None
    if data.get("architecture") is not None:
        architecture = _parse_architecture(r, r.mapping(data["architecture"], "architecture"))
    elif weights.format == "state_dict":
        raise r.fail("architecture", "is missing: a state_dict holds only tensors, so the card "
                                     "must name the network class as {\"class\": "
                                     "\"package.module:ClassName\", \"kwargs\": {...}}")

    target_layers = _parse_target_layers(r, data.get("target_layers"))
    extra = {k: v for k, v in data.items() if k not in _KNOWN_TOP}
    return ModelCard(
        name=name, task=task, spatial_dims=dims, input=input_spec, classes=classes,
        weights=weights, architecture=architecture, target_layers=target_layers,
        slice_axis=slice_axis, output_activation=activation, postprocessing=postprocessing,
        description=str(data.get("description", "")), version=str(data.get("version", "")),
        path=source, folder=base_dir, extra=extra,
    )


def _parse_input(r: _Reader, data: Mapping, dims: int) -> InputSpec:
    channels = r.integer(r.require(data, "channels", "input."), "input.channels", minimum=1)
    spacing = data.get("spacing")
    if spacing is not None:
        spacing = r.vector(spacing, "input.spacing", dims, "float")
    size = data.get("size")
    if size is not None:
        size = r.vector(size, "input.size", dims, "int")
    patch = data.get("patch_size")
    if patch is not None:
        patch = r.vector(patch, "input.patch_size", dims, "int")
    pad_value = data.get("pad_value")
    if pad_value is not None:
        pad_value = r.number(pad_value, "input.pad_value")
    divisible = data.get("divisible_by")
    if divisible is not None:
        if not isinstance(divisible, (list, tuple)):
            divisible = [divisible] * dims
        divisible = r.vector(divisible, "input.divisible_by", dims, "int")
    intensity = _parse_intensity(r, data.get("intensity", {"mode": "none"}))
    orientation = data.get("orientation")
    if orientation is not None:
        if dims != 3:
            raise r.fail("input.orientation", f"only applies to 3D models, got {_show(orientation)}")
        orientation = r.string(orientation, "input.orientation", ORIENTATIONS)
    resampling = parse_resampling(r, data.get("resampling"), dims, spacing)
    if intensity.mode == "region_median" and (resampling.mask is None or not resampling.intensity_first):
        raise r.fail("input.intensity.mode", "'region_median' centres on a region another model segments, on the "
                                             "image's own grid: it needs input.resampling.mask (the model and class "
                                             "of that region) and input.resampling.intensity 'before'")
    channel_names = data.get("channel_names")
    if channel_names is not None:
        channel_names = _channel_names(r, channel_names, channels)
    modality = data.get("modality")
    if modality is not None:
        modality = _modality_name(r, modality, "input.modality")
    spec = InputSpec(channels=channels, spacing=spacing, size=size, patch_size=patch,
                     intensity=intensity, pad_value=pad_value, divisible_by=divisible,
                     orientation=orientation, resampling=resampling, channel_names=channel_names,
                     modality=modality, windows=parse_windows(r, data.get("windows"), dims, patch))
    if data.get("variants") is None:
        return spec
    return dataclasses.replace(spec, variants=_parse_variants(r, data, dims, modality))


def _modality_name(r: _Reader, value: Any, name: str) -> str:
    text = r.string(value, name).strip()
    if not text or not text.replace("-", "").replace("_", "").isalnum():
        raise r.fail(name, f"must be a modality name such as 'CT' or 'MR' (letters, digits, - and _), got "
                           f"{_show(value)}")
    return text


def _parse_variants(r: _Reader, data: Mapping, dims: int, modality: str | None) -> tuple:
    """``input.variants``: per other modality, the fields of :data:`VARIANT_FIELDS` it sets; each variant is
    the card's input with those fields replaced, validated as a whole."""
    if modality is None:
        raise r.fail("input.variants", "needs input.modality: the modality the card's own input fields are for")
    variants = r.mapping(data["variants"], "input.variants")
    out = []
    for name, fields in variants.items():
        where = f"input.variants.{name}"
        name = _modality_name(r, name, where)
        if name.lower() == modality.lower() or name.lower() in [n.lower() for n, _ in out]:
            raise r.fail(where, f"repeats the modality {name!r}; each modality has one input pipeline")
        fields = r.mapping(fields, where)
        unknown = sorted(set(fields) - set(VARIANT_FIELDS))
        if unknown:
            raise r.fail(where, f"has unknown key(s) {unknown}; a variant sets {', '.join(VARIANT_FIELDS)} (the rest "
                                "is the card's own input)")
        merged = {key: value for key, value in data.items() if key not in ("variants", "modality")}
        merged.update(fields)
        try:
            spec = _parse_input(_Reader(None), merged, dims)
        except ModelCardError as exc:
            raise r.fail(where, f"makes an invalid input: {str(exc).removeprefix('model card: ')}") from exc
        out.append((name, dataclasses.replace(spec, modality=name)))
    return tuple(out)


def _channel_names(r: _Reader, value: Any, channels: int) -> tuple[str, ...]:
    """``input.channel_names``: one distinct, non-empty name per input channel, in channel order."""
    if not isinstance(value, (list, tuple)) or len(value) != channels:
        raise r.fail("input.channel_names", f"must be a list of {channels} names (one per input channel, "
                                            f"input.channels), got {_show(value)}")
    names = tuple(r.string(v, f"input.channel_names[{i}]").strip() for i, v in enumerate(value))
    if len(set(names)) != len(names):
        raise r.fail("input.channel_names", f"must name each channel once, got {list(names)}")
    return names


def _parse_intensity(r: _Reader, data: Any) -> IntensitySpec:
    data = r.mapping(data, "input.intensity")
    mode = r.string(data.get("mode", "none"), "input.intensity.mode", INTENSITY_MODES)
    if mode == "window":
        window = data.get("window")
        if (not isinstance(window, (list, tuple)) or len(window) != 2):
            raise r.fail("input.intensity.window", "must be [low, high] (two numbers, low < high) "
                                                   f"for mode 'window', got {_show(window)}")
        low = r.number(window[0], "input.intensity.window[0]")
        high = r.number(window[1], "input.intensity.window[1]")
        if not low < high:
            raise r.fail("input.intensity.window", f"must have low < high, got [{low}, {high}]")
        out_range = _parse_range(r, data.get("range"))
        return IntensitySpec(mode="window", window=(low, high), range=out_range)
    if mode == "minmax":
        fraction = r.number(r.require(data, "upper_fraction", "input.intensity."), "input.intensity.upper_fraction",
                            positive=True)
        if fraction > 1:
            raise r.fail("input.intensity.upper_fraction", f"must be in (0, 1] (the share of the volume's range "
                                                           f"kept above its minimum), got {fraction}")
        return IntensitySpec(mode="minmax", upper_fraction=fraction, range=_parse_range(r, data.get("range")))
    if mode == "region_median":
        return IntensitySpec(mode="region_median", range=_parse_range(r, data.get("range")))
    if mode == "scale":
        mean = r.number(r.require(data, "mean", "input.intensity."), "input.intensity.mean")
        std = r.number(r.require(data, "std", "input.intensity."), "input.intensity.std",
                       positive=True)
        return IntensitySpec(mode="scale", mean=mean, std=std)
    return IntensitySpec(mode=mode)


def _parse_range(r: _Reader, out_range: Any) -> tuple[float, float] | None:
    """``input.intensity.range``: what a window or min-max normalisation maps onto (None: [0, 1])."""
    if out_range is None:
        return None
    if not isinstance(out_range, (list, tuple)) or len(out_range) != 2:
        raise r.fail("input.intensity.range", "must be [low, high] (two numbers, low < high): "
                                              f"what the intensities map onto, got {_show(out_range)}")
    out_range = (r.number(out_range[0], "input.intensity.range[0]"),
                 r.number(out_range[1], "input.intensity.range[1]"))
    if not out_range[0] < out_range[1]:
        raise r.fail("input.intensity.range", f"must have low < high, got {list(out_range)}")
    return out_range


def _parse_classes(r: _Reader, data: Any, task: str) -> tuple[ClassSpec, ...]:
    if not isinstance(data, (list, tuple)) or len(data) < 1:
        raise r.fail("classes", f"must be a non-empty list of class names or "
                                f"{{\"name\": ..., \"color\": [r, g, b]}} objects, got {_show(data)}")
    classes = []
    for i, item in enumerate(data):
        name = f"classes[{i}]"
        if isinstance(item, str):
            classes.append(ClassSpec(r.string(item, name)))
            continue
        item = r.mapping(item, name)
        cname = r.string(r.require(item, "name", name + "."), name + ".name")
        color = item.get("color")
        if color is not None:
            if (not isinstance(color, (list, tuple)) or len(color) != 3
                    or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255
                           for c in color)):
                raise r.fail(name + ".color", f"must be [r, g, b] with integers 0..255, "
                                              f"got {_show(color)}")
            color = tuple(color)
        value = item.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535):
            raise r.fail(name + ".value", f"must be the label value (an integer 0..65535) the label map writes "
                                          f"for this class, got {_show(value)}")
        classes.append(ClassSpec(cname, color, value))
    names = [c.name for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise r.fail("classes", f"has duplicate names {duplicates}; class names must be unique")
    if task == "segmentation" and len(classes) < 2:
        raise r.fail("classes", "must list at least 2 classes for segmentation (background "
                                f"first, then the structures), got {len(classes)}")
    return tuple(classes)


def _parse_weights(r: _Reader, data: Any, base_dir: Path | None) -> WeightsSpec:
    if isinstance(data, str):
        data = {"file": data}
    data = r.mapping(data, "weights")
    file_name = r.string(r.require(data, "file", "weights."), "weights.file")
    path = Path(file_name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    fmt = data.get("format")
    fmt = _guess_format(path) if fmt is None else r.string(fmt, "weights.format", WEIGHT_FORMATS)
    sha = data.get("sha256")
    if sha is not None:
        sha = r.string(sha, "weights.sha256").lower()
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise r.fail("weights.sha256", f"must be 64 hexadecimal digits, got {sha!r}")
    return WeightsSpec(file=path, format=fmt, sha256=sha)


def _guess_format(path: Path) -> str:
    """ONNX and torch.export programs by ending, TorchScript when the file is a TorchScript
    archive; anything else is a state_dict."""
    from .weights_io import is_torchscript_archive

    if path.suffix.lower() in (".onnx", ".pt2"):
        return "onnx" if path.suffix.lower() == ".onnx" else "exported_program"
    if path.suffix.lower() != ".safetensors" and is_torchscript_archive(path):
        return "torchscript"
    return "state_dict"


def _parse_architecture(r: _Reader, data: Mapping) -> ArchitectureSpec:
    target = r.string(r.require(data, "class", "architecture."), "architecture.class")
    module, sep, cls = target.partition(":")
    if not sep or not module or not all(p.isidentifier() for p in module.split(".")) \
            or not cls.isidentifier():
        raise r.fail("architecture.class", "must look like 'package.module:ClassName' "
                                           f"(e.g. 'monai.networks.nets:UNet'), got {target!r}")
    kwargs = r.mapping(data.get("kwargs", {}), "architecture.kwargs")
    return ArchitectureSpec(target=target, kwargs=dict(kwargs))


def _parse_target_layers(r: _Reader, data: Any) -> TargetLayers:
    if data is None:
        return TargetLayers()
    if isinstance(data, str):
        return TargetLayers(default=data, suggested=(data,))
    data = r.mapping(data, "target_layers")
    default = data.get("default")
    if default is not None:
        default = r.string(default, "target_layers.default")
    suggested = data.get("suggested", [])
    if not isinstance(suggested, (list, tuple)):
        raise r.fail("target_layers.suggested", f"must be a list of layer names, got "
                                                f"{_show(suggested)}")
    suggested = tuple(r.string(s, f"target_layers.suggested[{i}]") for i, s in enumerate(suggested))
    return TargetLayers(default=default, suggested=suggested)


def trial_input_shape(card: ModelCard, module: Any = None) -> tuple[int, ...]:
    """The spatial shape of the one trial input a model is probed with (the load-time dry run,
    the layer list): the smallest input the network says it takes (a ``minimum_input_size``
    attribute, numpy order: a large fixed segment would make loading cost a full forward pass),
    else its patch size, else its input size, else 64 x 64 (2D) or 32^3 (3D)."""
    smallest = getattr(module, "minimum_input_size", None)
    if smallest is not None:
        return tuple(int(n) for n in smallest)
    if card.input.patch_size is not None:
        return tuple(card.input.patch_size)
    if card.input.size is not None:
        return tuple(card.input.size)
    return (64, 64) if card.spatial_dims == 2 else (32, 32, 32)
