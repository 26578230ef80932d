"""The choices a face offers for a model: one description, built by the logic, read by every face.

The Slicer panel (``XAIExplain.py``) and the web page (``xaiexplain serve``) both fill their
menus from :func:`model_choices` and the constants here, so they offer the same methods
(``MethodInfo.applicable`` decides, through the model catalogue), targets, layers, modes,
devices and label-map thresholds, in the same words. A face adds only its widgets.

Values are what :meth:`XAIExplainLogic.explainVolume` takes (after the face maps the two
target entries that need a scene object, ``"roi"`` and ``"point"``, to a segment or a
markups point); texts are what a person reads.
"""
from __future__ import annotations

from dataclasses import dataclass

#: the run button's text while idle and while a run computes (Slicer's words)
APPLY_TEXT, CANCEL_TEXT = "Apply", "Cancel"
#: the model menu's entry that opens a file or folder chooser
LOAD_ITEM = "Load model..."
#: (text, value) of the mode menu; "" is the model's own mode (per slice for 2D models, volumetric for 3D)
MODES = (("Model default", ""), ("Per slice: axial", "axial"), ("Per slice: coronal", "coronal"),
         ("Per slice: sagittal", "sagittal"), ("Volumetric (3D)", "volume"))
PREDICTED_ITEM = "Predicted class"
ROI_ITEM = "Segment as region (ROI)"
POINT_ITEM = "Point (markups)"
#: (text, value) of the label-map output; a number in [0, 1) is also accepted by the logic
LABEL_THRESHOLDS = (("No label map", ""), ("Otsu's threshold", "otsu"), ("Fixed threshold", "fixed"))
DEFAULT_FIXED_THRESHOLD = 0.5
#: the input volume selector's label for a model with one input channel
INPUT_LABEL = "Input volume:"
MODALITY_AUTO_ITEM = "Auto (DICOM header, else intensities)"


@dataclass(frozen=True)
class MethodChoice:
    """One row of the method list: checkable when ``enabled``; ``reason`` says why not."""

    value: str
    text: str
    enabled: bool
    reason: str


@dataclass(frozen=True)
class ModelChoices:
    """Everything a face offers once a model is chosen."""

    model: str
    description: str                 # task, classes, expected input (one line)
    task: str
    spatial_dims: int
    methods: tuple                   # MethodChoice, in the engine's order
    targets: tuple                   # (text, value): predicted, each class, ROI / point where they apply
    layers: tuple                    # layer names, suggested ones first
    default_layer: str
    modes: tuple = MODES
    label_thresholds: tuple = LABEL_THRESHOLDS
    inputs: tuple = (INPUT_LABEL,)   # one volume selector's label per input channel, in channel order
    modalities: tuple = ()           # (text, value) of the Modality menu; empty: the model has one pipeline

    def enabled_methods(self) -> list:
        return [choice.value for choice in self.methods if choice.enabled]


#: the targets that need a scene object, their menu texts and why a model cannot take them
SCENE_TARGETS = {"roi": ROI_ITEM, "point": POINT_ITEM}
_REFUSED_TARGETS = {"roi": "a segment as target (ROI) applies to segmentation models only",
                    "point": "a point as target needs a segmentation model or a 2D model run per slice"}


def target_kinds(task: str, per_slice: bool) -> tuple:
    """The scene-object targets a model explains: the one rule for the menus and the logic's check.

    A segment (``"roi"``) is a region of a segmenter's output, so only a segmenter takes one; a
    point (``"point"``) is the predicted region under it for a segmenter, and the slice through it
    for a 2D model run per slice; a 3D classifier has neither a region nor a slice to explain.
    """
    kinds = ["roi"] if task == "segmentation" else []
    if task == "segmentation" or per_slice:
        kinds.append("point")
    return tuple(kinds)


def check_target_kind(kind: str, task: str, per_slice: bool) -> None:
    """ValueError saying why, when the model cannot take a ``kind`` target (:func:`target_kinds`)."""
    if kind not in target_kinds(task, per_slice):
        raise ValueError(_REFUSED_TARGETS[kind])


def target_choices(task: str, spatial_dims: int, classes) -> tuple:
    """(text, value) of the target menu: the prediction, each class, then :func:`target_kinds`
    (a 2D model always runs per slice)."""
    items = [(PREDICTED_ITEM, "")] + [(str(name), str(name)) for name in classes]
    return tuple(items + [(SCENE_TARGETS[kind], kind) for kind in target_kinds(task, spatial_dims == 2)])


def input_labels(channels) -> tuple:
    """The volume selectors' labels: one selector for a one-channel model, else one per channel named after
    it ("T1 volume:", "FLAIR volume:"), in the order ``explainVolume`` takes the volumes."""
    channels = list(channels)
    if len(channels) <= 1:
        return (INPUT_LABEL,)
    return tuple(f"{name} volume:" for name in channels)


def modality_choices(modalities) -> tuple:
    """(text, value) of the Modality menu: Auto, then each modality, for a model with an input pipeline per
    modality (pyliverlesionseg's CT and MR); empty for any other (nothing to choose)."""
    modalities = list(modalities or ())
    if len(modalities) < 2:
        return ()
    return ((MODALITY_AUTO_ITEM, ""),) + tuple((name, name) for name in modalities)


def model_choices(logic, model) -> ModelChoices:
    """The description of ``model`` (a name, a path or a loaded model) a face shows and offers.

    Raises what loading or describing the model raises (the face shows it as one line).
    """
    from .recent_models import describe

    info = logic.describeModel(model)
    methods = tuple(MethodChoice(name, label, bool(enabled), reason or "")
                    for name, label, enabled, reason in logic.methodsForModel(model))
    return ModelChoices(model=str(info["name"]), description=describe(info), task=info["task"],
                        spatial_dims=int(info["spatialDims"]), methods=methods,
                        targets=target_choices(info["task"], info["spatialDims"], info["classes"]),
                        layers=tuple(logic.layersForModel(model)), default_layer=info["defaultLayer"] or "",
                        inputs=input_labels(info.get("channels") or ()),
                        modalities=modality_choices(info.get("modalities")))


def device_choices(logic) -> tuple:
    """(value, text) of the device menu: Auto, CPU and each GPU with its name and free memory."""
    return tuple(tuple(pair) for pair in logic.deviceChoices())


def label_threshold_argument(choice: str, fixed: float = DEFAULT_FIXED_THRESHOLD):
    """The logic's ``labelThreshold`` for a label-map menu value: None, "otsu" or the fixed number."""
    if choice in ("", None):
        return None
    if choice == "otsu":
        return "otsu"
    if choice == "fixed":
        return float(fixed)
    raise ValueError(f"label map must be one of {[value for _, value in LABEL_THRESHOLDS]}, got {choice!r}")
