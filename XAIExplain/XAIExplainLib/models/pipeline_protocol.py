"""The seam between a model form and ``explain_image``: what a pipeline and its prepared input must offer.

Every model form (card, nnU-Net folder, MONAI bundle, HD-BET, TorchScript and state-dict files, a plain
module) brings a pipeline that turns the caller's image into the network's input and maps the network's
results back onto the image's grid. ``explain_image``, the command line and the Slicer logic call only
what is written down here, so a form that lacks a method or a keyword (a memory budget, say) is refused
when its :class:`~models.loaded.LoadedModel` is built, naming what is missing, instead of failing in the
middle of a run with ``prepare() got an unexpected keyword argument``.

Structural typing (PEP 544, "Protocols: Structural subtyping", Levkivskyi, Lehtosalo and Langa, 2017,
https://peps.python.org/pep-0544/): the forms do not inherit from these classes, they only match them.
"""
from __future__ import annotations

import inspect
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class PreparedImage(Protocol):
    """An image on the network's grid (``array``: float32 ``(C, *model grid)``) and the way back.

    Restored results are on the input's own grid: a ``SimpleITK.Image`` for an image input (a numpy
    array where the card pipeline was given one).
    """

    array: np.ndarray

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The model grid's spatial shape (``array.shape[1:]``)."""

    def restore_map(self, array: np.ndarray, clamp: bool = True) -> Any:
        """A map on the model grid -> float32 on the input grid, clamped to [0, 1] unless ``clamp=False``."""

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """``(K, *model grid)`` class probabilities -> ``(K, *input grid)``."""

    def restore_labels(self, probabilities: np.ndarray, activation: str = "softmax") -> Any:
        """A label map on the input grid decided from model-grid probabilities."""

    def region_to_model_grid(self, mask: np.ndarray) -> np.ndarray:
        """A boolean region on the input grid -> the same region on the model grid (never emptied)."""

    def voxel_to_model_grid(self, voxel) -> tuple[int, ...]:
        """A voxel index of the input grid -> the nearest voxel of the model grid."""


@runtime_checkable
class ModelPipeline(Protocol):
    """How a model form sees an image: ``prepare`` it (within a memory budget) and the engine's window options."""

    def prepare(self, image, slice_axis: int | None = None, spacing: Sequence[float] | None = None,
                memory_budget_mb: float | None = None) -> PreparedImage:
        """The image on the network's grid; refuses, before allocating it, a grid that the budget (or the
        memory available when there is none) cannot hold. ``slice_axis`` and ``spacing`` are refused by
        forms they do not apply to."""

    def volume_options(self) -> dict:
        """Keyword arguments of ``explain_volume`` / ``predict_volume`` in volume mode (patch, overlap, ...).

        A pipeline may also offer ``slice_options()``, the same for slices mode (see :func:`window_options`),
        ``network_channels`` where its network takes more channels than the image has (an nnU-Net cascade
        stage), and a ``device`` keyword of ``prepare`` where it runs a network itself (:func:`takes_device`)."""


def window_options(pipeline, mode: str) -> dict:
    """The engine's window options of ``pipeline`` in ``mode``: ``volume_options()`` in volume mode; in slices
    mode the optional ``slice_options()`` (a 2D network run on windows of every slice, as nnU-Net's ``2d``
    configuration), else none (whole slices)."""
    if mode == "volume":
        return dict(pipeline.volume_options())
    slice_options = getattr(pipeline, "slice_options", None)
    return dict(slice_options()) if callable(slice_options) else {}


def network_channels(loaded) -> int:
    """The channels ``loaded``'s network takes: the pipeline's ``network_channels`` where it adds some (an
    nnU-Net cascade stage appends the first stage's one-hot segmentation to the image), else the card's input
    channels. Anything that runs the bare network (a memory estimate, a probe for its layers) sizes its input
    by this, never by ``card.input.channels`` alone."""
    return int(getattr(loaded.pipeline, "network_channels", loaded.card.input.channels))


def takes_modality(pipeline) -> bool:
    """Whether ``pipeline.prepare`` takes a ``modality`` (a card with an input pipeline per modality)."""
    return "modality" in inspect.signature(pipeline.prepare).parameters


def takes_device(pipeline) -> bool:
    """Whether ``pipeline.prepare`` takes the run's ``device`` (it runs a network of its own)."""
    return "device" in inspect.signature(pipeline.prepare).parameters


#: Keyword parameters of ``prepare`` every pipeline accepts (by name: the callers pass them so).
PREPARE_KEYWORDS = ("slice_axis", "spacing", "memory_budget_mb")
#: Methods a prepared image has (``array`` and ``spatial_shape`` are values).
PREPARED_METHODS = ("restore_map", "restore_probabilities", "restore_labels", "region_to_model_grid",
                    "voxel_to_model_grid")


def check_pipeline(pipeline, where: str) -> None:
    """Refuse a pipeline that does not implement :class:`ModelPipeline` (names and ``prepare``'s keywords).

    ``isinstance`` with a runtime-checkable Protocol only sees that the names exist, so ``prepare``'s
    parameters are read too: each of :data:`PREPARE_KEYWORDS` must be accepted by name.
    """
    if not isinstance(pipeline, ModelPipeline):
        missing = [name for name in ("prepare", "volume_options") if not callable(getattr(pipeline, name, None))]
        raise TypeError(f"{where}: the pipeline {type(pipeline).__name__} lacks {', '.join(missing)}; a model "
                        "pipeline implements models.pipeline_protocol.ModelPipeline")
    parameters = inspect.signature(pipeline.prepare).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [name for name in PREPARE_KEYWORDS if name not in parameters and not takes_any]
    if missing:
        raise TypeError(f"{where}: {type(pipeline).__name__}.prepare takes no {', '.join(missing)} keyword; "
                        "a model pipeline implements models.pipeline_protocol.ModelPipeline")


def check_prepared(prepared, where: str) -> PreparedImage:
    """``prepared`` when it implements :class:`PreparedImage`, else a TypeError naming what it lacks."""
    missing = [name for name in PREPARED_METHODS if not callable(getattr(prepared, name, None))]
    if not isinstance(getattr(prepared, "array", None), np.ndarray):
        missing.insert(0, "array (a numpy array)")
    if missing:
        raise TypeError(f"{where}: the prepared input {type(prepared).__name__} lacks {', '.join(missing)}; it "
                        "implements models.pipeline_protocol.PreparedImage")
    return prepared
