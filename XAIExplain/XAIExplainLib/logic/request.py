"""One explanation run's choices, checked once: the frozen :class:`ExplainRequest`.

``explainVolume`` and ``startExplainVolume`` take the arguments written once in
:func:`explain_arguments`; :func:`build_request` binds them, checks every one before anything
runs, copies the input out of the scene (on the main thread) and returns a frozen request that
the compute phase (worker thread) and the publish phase (:mod:`.publish`) only read.

Importing this module needs neither torch nor Slicer.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from .. import mrml
from ..imaging.orientation import ORIENTATIONS, slice_axis_for_orientation
from ..imaging.thresholds import check_threshold
from ..mrml.display import DEFAULT_DISPLAY_THRESHOLD, DEFAULT_OPACITY
from . import point_target
from .choices import check_target_kind

#: engine.modes.MODES (the logic imports without torch, the engine loads it) and the anatomical
#: ORIENTATIONS, which become a voxel axis of the input; Testing/project checks them against the engine.
ENGINE_MODES = ("slices", "volume")
MODES = ENGINE_MODES + ORIENTATIONS
LABEL_OUTPUTS = ("labelmap", "segmentation")


def explain_arguments(inputVolumeNode, model, methods=("gradcam",), target=None, layer=None, mode=None,
                      axis=None, device="auto", labelThreshold=None, progress=None, *, classNames=None,
                      labelOutput="labelmap", predictionSegmentation=True, opacity=DEFAULT_OPACITY,
                      displayThreshold=DEFAULT_DISPLAY_THRESHOLD, colorLegend=True, keepExisting=False,
                      engineOptions=None, pointVoxelOnly=False, modality=None):
    """The arguments of ``explainVolume`` / ``startExplainVolume``, written once (their manual is
    ``XAIExplainLogic.explainVolume``'s docstring). Never called: its signature is bound."""


ARGUMENTS = inspect.signature(explain_arguments)


def method_signature(returns) -> inspect.Signature:
    """``(self, <ARGUMENTS>) -> returns``: the signature the logic's two entry points show."""
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return ARGUMENTS.replace(parameters=[self, *ARGUMENTS.parameters.values()], return_annotation=returns)


@dataclass(frozen=True)
class ExplainRequest:
    """Everything a run needs, checked; read by the worker thread and by publishing, changed by neither."""

    node: Any  # the input volume node (the first channel's; read on the main thread only)
    node_name: str
    image: Any  # SimpleITK copy of the input, taken on the main thread (all channels: one vector image)
    model: Any  # the LoadedModel
    model_name: str
    task: str
    class_names: tuple
    methods: tuple
    target: Any  # engine target: None or a class index
    target_label: str  # "" until the result names it (predicted class, point class)
    target_key: str  # what the run explains, for finding the outputs of an earlier run
    roi: Any  # (z, y, x) bool mask of a segment target, or None
    point: Any  # voxel index of a point target, or None
    point_voxel_only: bool
    layer: str | None
    mode: str
    axis: int | None
    mode_key: str
    device: str
    label_threshold: float | str | None
    label_output: str
    engine_options: Mapping
    progress: Callable | None
    prediction_segmentation: bool
    opacity: float
    display_threshold: float
    color_legend: bool
    keep_existing: bool
    modality: str | None = None  # the input pipeline asked for (None: the image decides, models.modality)

    @property
    def layer_label(self) -> str:
        return self.layer or ""


def build_request(scene, models, *args, **kwargs) -> ExplainRequest:
    """Bind ``explain_arguments``, check each one (nothing is created on an error) and copy the input."""
    try:
        bound = ARGUMENTS.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"explainVolume: {error}") from None
    bound.apply_defaults()
    a = bound.arguments
    nodes = input_nodes(a["inputVolumeNode"])
    for node in nodes:
        mrml.check_scalar_volume(node)
        if scene.GetNodeByID(node.GetID()) is not node:
            raise ValueError(f"Volume '{node.GetName()}' is not in the scene being worked on")
    node = nodes[0]
    progress = a["progress"]
    if progress is not None and not callable(progress):
        raise TypeError("progress must be callable as progress(fraction, message)")
    from ..engine.registry import check_methods

    methods = tuple(check_methods(a["methods"]))
    for what in ("opacity", "displayThreshold"):
        value = a[what]
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{what} must be in [0, 1], got {value}")
    label_threshold = None if a["labelThreshold"] is None else check_threshold(a["labelThreshold"])
    if a["labelOutput"] not in LABEL_OUTPUTS:
        raise ValueError(f"labelOutput must be one of {LABEL_OUTPUTS}, got {a['labelOutput']!r}")
    from ..engine.devices import resolve_device

    device = str(resolve_device(a["device"]))
    engine_options = a["engineOptions"]
    if engine_options is not None and not isinstance(engine_options, dict):
        raise TypeError(f"engineOptions must be a dict of method options, got {type(engine_options).__name__}")
    loaded = models.get(a["model"], class_names=a["classNames"])
    card = loaded.card
    image = channel_image(loaded, nodes)
    available = {row[0]: row for row in models.methods_for(loaded)}
    for name in methods:
        if not available[name][2]:
            raise ValueError(f"method '{name}' cannot explain this model: {available[name][3]}")
    mode, axis = resolve_logic_mode(node, a["mode"], a["axis"], loaded)
    modality = a["modality"]
    if modality is not None and str(modality).strip().lower() not in ("", "auto"):
        from ..models.modality import choose_modality

        modality = choose_modality(card, image, modality).modality
    else:
        modality = None
    target = a["target"]
    point = None
    kind = scene_target_kind(target)
    if kind is not None:
        check_target_kind(kind, card.task, mode == "slices")
    if kind == "point":
        point = point_target.point_voxel(target, node)
        engine_target, target_label, roi = None, "", None
    else:
        engine_target, target_label, roi = resolve_target(node, target, card)
    layer = a["layer"]
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) or None, got {type(layer).__name__}")
    if layer is not None:
        models.check_layer(loaded, layer)
    from ..engine import METHODS

    if layer is None and any(METHODS[name].needs_layer for name in methods):
        layer = models.default_layer(loaded)
    return ExplainRequest(
        node=node, node_name=node.GetName(), image=image, model=loaded,
        model_name=card.name, task=card.task, class_names=tuple(card.class_names), methods=methods,
        target=engine_target, target_label=target_label, target_key=target_key(target), roi=roi, point=point,
        point_voxel_only=bool(a["pointVoxelOnly"]), layer=layer, mode=mode, axis=axis,
        mode_key=a["mode"] if a["mode"] is not None else "default", device=device,
        label_threshold=label_threshold, label_output=a["labelOutput"],
        engine_options=MappingProxyType(dict(engine_options or {})), progress=progress,
        prediction_segmentation=bool(a["predictionSegmentation"]), opacity=a["opacity"],
        display_threshold=a["displayThreshold"], color_legend=bool(a["colorLegend"]),
        keep_existing=bool(a["keepExisting"]), modality=modality)


def input_nodes(value) -> list:
    """``inputVolumeNode`` as a list: one volume node, or a list / tuple of them in the model's channel order."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("No input volume: select one scalar volume per input channel")
        return list(value)
    return [value]


def channel_image(loaded, nodes: list):
    """The input copied out of the scene as the one image the model takes: a node's volume, or one volume per
    input channel stacked on the first one's grid (:mod:`models.channel_inputs`, whose refusals name the
    volumes); outputs land on the first volume's grid."""
    from ..models.channel_inputs import check_one_image, stack_for

    names = loaded.card.input.channel_labels
    images = [mrml.volume_to_sitk(node) for node in nodes]
    if len(nodes) == 1:
        check_one_image(loaded, images[0])
        return images[0]
    if len(nodes) != len(names):
        raise ValueError(f"model '{loaded.card.name}' takes {len(names)} input volume(s) ({', '.join(names)}); "
                         f"got {len(nodes)}: {', '.join(node.GetName() for node in nodes)}")
    labels = [f"volume '{node.GetName()}' ({name})" for node, name in zip(nodes, names)]
    return stack_for(loaded, images, labels)


def resolve_logic_mode(node, mode, axis, loaded):
    """Anatomical names become the voxel axis nearest to them; the rest is ``resolve_mode``'s."""
    from ..engine.modes import resolve_mode

    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be None or one of {MODES}, got {mode!r}")
    if mode in ORIENTATIONS:
        mode, axis = "slices", slice_axis_for_orientation(mrml.node_ijk_to_ras(node), mode)
    card = loaded.card
    default_axis = card.slice_axis if card.slice_axis is not None else 0
    if loaded.kind == "module" and card.spatial_dims == 2:
        # no card to say along which axis: a plain 2D module runs on axial slices
        default_axis = slice_axis_for_orientation(mrml.node_ijk_to_ras(node), "axial")
    return resolve_mode(mode, axis, card.spatial_dims, default_axis, f"'{card.name}'")


def scene_target_kind(target) -> str | None:
    """``"point"`` (a markups point, or ``(markupsNode, pointIndex)``), ``"roi"``
    (``(segmentationNode, segmentId)``) or None (the prediction, a class index or name)."""
    if point_target.is_point_target(target):
        return "point"
    if isinstance(target, tuple) and len(target) == 2 and hasattr(target[0], "IsA"):
        return "roi"
    return None


def target_key(target) -> str:
    """What a run explains, as text: a re-run with the same key updates the earlier outputs."""
    kind = scene_target_kind(target)
    if kind == "point":
        node, index = target if isinstance(target, tuple) else (target, 0)
        return f"point:{node.GetID()}:{index}"
    if kind == "roi":
        return f"roi:{target[0].GetID()}:{target[1]}"
    return "predicted" if target is None else str(target)


def resolve_target(node, target, card):
    """``(engine target, label for node names, ROI mask or None)`` of a target that is no point;
    whether the model takes an ROI is :func:`choices.check_target_kind`'s to say."""
    if target is None:
        return None, "", None
    if scene_target_kind(target) == "roi":
        segmentation, segment_id = target
        if not segmentation.IsA("vtkMRMLSegmentationNode"):
            raise TypeError(f"an ROI target is (segmentationNode, segmentId); got a {segmentation.GetClassName()}")
        mask = mrml.segment_mask(segmentation, segment_id, node)
        if not mask.any():
            raise ValueError(f"segment '{segment_id}' does not overlap the input volume")
        name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
        return None, f"ROI {name}", mask
    if isinstance(target, bool):
        raise TypeError("target must be None, a class index, a class name or (segmentationNode, segmentId)")
    if isinstance(target, (int, np.integer, str)):
        index = card.class_index(target)
        return index, card.class_names[index], None
    raise TypeError("target must be None, a class index, a class name or (segmentationNode, segmentId); "
                    f"got {type(target).__name__}")
