"""``explain_image``: image in, heatmaps and prediction out, on the image's own grid.

The one call the Slicer logic and the command line build on:

1. load the model (a name, folder or card path) unless a loaded model is given;
2. resample the image onto the model's grid and apply its intensity window
   (:mod:`models.preprocessing`);
3. predict and explain with the engine, per slice for 2D models and on the
   whole volume or sliding windows for 3D models;
4. map everything back: heatmaps as float32 images in [0, 1] and a
   segmenter's labels exactly on the input's size, origin, spacing and
   direction.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from .card import ModelCard
from .channel_inputs import model_image
from .loaded import LoadedModel
from ..engine.devices import resolve_device
from ..engine.interrupt import checkpoint
from .loading import load_model
from .explained_class import (PER_SLICE, class_of_interest, explains_one_class_per_volume, is_per_slice,
                              volume_class)
from .pipeline_protocol import PreparedImage, check_prepared, network_channels, window_options


@dataclass
class ExplainResult:
    """What :func:`explain_image` returns.

    maps        method name -> ``SimpleITK.Image`` float32 on the input grid
                (in [0, 1] unless ``normalize=False``)
    prediction  classifier: numpy probabilities, ``(n_slices, n_classes)`` for a
                2D model run per slice, ``(n_classes,)`` for a 3D model;
                segmenter: ``SimpleITK.Image`` label map (uint8) on the input grid
    card        the model card
    timings     seconds per stage (load, preprocess, predict, explain, postprocess, total)
    layer       the layer the layer-based methods used (None if none did); with CAM or CRM
                beside other layer methods and no layer given, the other methods' layer
    layers      method name -> the layer it used (layer-based methods only)
    target      the target the engine explained (after class names were resolved): for a 2D
                classifier run per slice, the one class of the whole volume
                (:mod:`models.explained_class`) unless ``target="per-slice"`` was asked
    prepared    the model-grid input, for metrics on the model's own grid
    """

    maps: dict[str, sitk.Image]
    prediction: Any
    card: ModelCard
    timings: dict[str, float] = field(default_factory=dict)
    layer: str | None = None
    target: Any = None
    prepared: PreparedImage | None = None
    layers: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names


def explain_image(model, image, methods: str | Sequence[str] = ("gradcam",), target=None,
                  layer: str | None = None, mode: str | None = None, axis: int | None = None,
                  device: str | torch.device | None = "auto", progress: Callable | None = None,
                  batch_size: int | None = None, overlap: float | None = None, normalize: bool = True,
                  trust: bool = False, modality: str | None = None, **options) -> ExplainResult:
    """Explain ``model`` on ``image`` with the model's preprocessing applied and undone.

    One pass per network gives the prediction and the maps (the outputs of the explaining
    forward are the prediction). A model with an ``ensemble`` (nnU-Net folds) runs each
    network the same way: the prediction averages their outputs, and each map is the mean
    of the per-network raw maps, normalised over the volume afterwards.

    Parameters
    ----------
    model:
        A :class:`LoadedModel`, or anything :func:`load_model` accepts (loaded with ``trust``).
    image:
        A ``SimpleITK.Image`` (2D or 3D) or a path SimpleITK can read. A model with several input
        channels takes one per channel: a list or tuple in the model's channel order, or a dict keyed
        by its channel names (``card.input.channel_labels``); they are put on the first image's grid
        (:mod:`models.channel_inputs`), where the maps and the prediction land.
    methods:
        A method name or a list of names from ``XAIExplainLib.METHODS``.
    target:
        None (a 2D classifier run per slice: ONE class for the whole volume, the
        card's ``class_of_interest`` else the class with the highest probability
        on any slice; otherwise the predicted class of the volume / window),
        ``"per-slice"`` (each slice its own predicted class), a class index, a
        class name from the card, one index per slice, or for a segmenter a
        ``SegmentationTarget`` (a region mask given on the input grid is
        resampled to the model grid).
    layer:
        The layer for layer-based methods; None uses the card's default.
    mode, axis:
        ``"slices"`` (2D models) or ``"volume"`` (3D models) and the slice
        axis (numpy order of the image array); None follows the card.
    device:
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    progress:
        ``progress(done, total)`` from the engine; raising from it cancels.
    overlap:
        Sliding-window overlap in volume mode; None uses the model's own (its pipeline's).
    modality:
        For a model with an input pipeline per modality (``liver-seg-3d``: ``"CT"``, ``"MR"``), the one to
        use; None decides from the image's DICOM header, else its intensities (:mod:`models.modality`).
        The result's ``prepared.modality`` says which ran.
    options:
        The methods' options. Per slice, RISE defaults to ``score_baseline="mean"``: each
        slice's map relative to that slice's mean masked score (``"none"``: the paper's map).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    clock = [started]

    def lap(name: str) -> None:
        checkpoint()  # cancel / heartbeat hook between the phases (engine/interrupt.py)
        now = time.perf_counter()
        timings[name] = now - clock[0]
        clock[0] = now

    loaded = _as_loaded(model, trust)
    lap("load")
    card = loaded.card
    image = model_image(loaded, image)
    method_list = _check_methods(loaded, methods)
    gap_methods = _gap_head_methods(method_list) if layer is None else []
    if gap_methods and len(gap_methods) < len(method_list):
        # CAM / CRM explain the GAP-fed layer, the others the card's default: one run per layer
        shared = dict(target=target, layer=None, mode=mode, axis=axis, device=device, progress=progress,
                      batch_size=batch_size, overlap=overlap, normalize=normalize, modality=modality, **options)
        result = explain_image(loaded, image, [m for m in method_list if m not in gap_methods], **shared)
        gap = explain_image(loaded, image, gap_methods, **shared)
        result.maps.update(gap.maps)
        result.maps = {name: result.maps[name] for name in method_list}
        result.layers.update(gap.layers)
        result.timings = {name: result.timings.get(name, 0.0) + gap.timings.get(name, 0.0)
                          for name in result.timings}
        return result
    mode, axis = _check_mode(card, mode, axis)
    per_slice = is_per_slice(target)
    if per_slice:
        if card.task != "classification":
            raise ValueError(f"target='{PER_SLICE}' applies to classifiers; '{card.name}' is a {card.task} model")
        target = None
    layer = _layer_for(loaded, method_list, layer)
    run_device = resolve_device(device)

    if mode == "slices" and "rise" in method_list:
        # each slice's RISE map relative to that slice's mean score (engine/methods/rise.py)
        options.setdefault("score_baseline", "mean")
    budget = options.pop("memory_budget_mb", None)
    if budget is not None:
        from ..engine.volume import check_memory_budget

        check_memory_budget(budget)
        options["memory_budget_mb"] = _engine_budget(budget, image, card.input.channels, len(method_list))
    batch_size = _check_windows(loaded, mode, run_device, budget, gradients=True, batch_size=batch_size)
    prepared = _prepare(loaded, image, axis, budget, run_device, modality)
    engine_target = _engine_target(card, _model_grid_target(card, target, prepared))
    lap("preprocess")
    known_logits = None  # outputs on the card's grid, when a step below needed them before the maps
    if engine_target is None and not per_slice and explains_one_class_per_volume(card, mode):
        engine_target = class_of_interest(card)
        if engine_target is None:  # the class with the highest probability on any slice needs a prediction
            _, known_logits = run_networks(loaded, prepared.array, mode, axis, run_device, batch_size, overlap)
            engine_target = volume_class(card, _prediction(loaded, known_logits, prepared))
        lap("class")
    maps, logits = _explain_networks(loaded, prepared.array, method_list, mode, axis, run_device, batch_size,
                                     overlap, progress, engine_target, layer, normalize, options, known_logits)
    lap("explain")
    out_maps = {name: prepared.restore_map(maps[name], clamp=normalize) for name in method_list}
    prediction = _prediction(loaded, logits, prepared)
    lap("postprocess")
    timings["total"] = time.perf_counter() - started
    from ..engine import METHODS

    layers = {name: layer for name in method_list if METHODS[name].needs_layer}
    return ExplainResult(out_maps, prediction, card, timings, layer, engine_target, prepared, layers)


def predict_image(model, image, mode: str | None = None, axis: int | None = None,
                  device: str | torch.device | None = "auto", batch_size: int | None = None,
                  overlap: float | None = None, trust: bool = False, memory_budget_mb: float | None = None,
                  modality: str | None = None):
    """The prediction part of :func:`explain_image` alone (no attribution); ``memory_budget_mb`` bounds the
    model grid and the window, and ``modality`` picks the input pipeline, as in :func:`explain_image`."""
    loaded = _as_loaded(model, trust)
    mode, axis = _check_mode(loaded.card, mode, axis)
    run_device = resolve_device(device)
    if memory_budget_mb is not None:
        from ..engine.volume import check_memory_budget

        check_memory_budget(memory_budget_mb)
    batch_size = _check_windows(loaded, mode, run_device, memory_budget_mb, gradients=False, batch_size=batch_size)
    prepared = _prepare(loaded, model_image(loaded, image), axis, memory_budget_mb, run_device, modality)
    _, logits = run_networks(loaded, prepared.array, mode, axis, run_device, batch_size, overlap)
    return _prediction(loaded, logits, prepared)


def run_networks(loaded: LoadedModel, array: np.ndarray, mode: str, axis: int | None, device: torch.device,
                 batch_size: int | None, overlap: float | None, progress: Callable | None = None,
                 methods: list[str] | None = None, normalize: bool = True, **engine):
    """``(maps or None, outputs)`` of every network of ``loaded`` on a model-grid array, one pass each.

    Outputs (logits) are averaged over the networks, as nnU-Net ensembles its folds; maps
    are the mean of the per-network raw maps, then normalised over the volume. Each
    network runs on ``device`` and goes back to where it was. A volume too small for the
    network is one line saying so (:mod:`.input_size`).
    """
    from ..engine import explain_volume, normalize_volume, predict_volume
    from .input_size import is_too_small, too_small_error

    kwargs = {"mode": mode, "axis": axis or 0, "batch_size": batch_size, "device": device}
    windows = window_options(loaded.pipeline, mode)
    if mode == "volume" or windows:
        kwargs.update(windows)
        if batch_size is not None:  # the caller's batch size wins over the pipeline's suggestion
            kwargs["batch_size"] = batch_size
        if overlap is not None:
            kwargs["overlap"] = overlap
    networks = loaded.modules
    single = len(networks) == 1
    map_sums: dict[str, np.ndarray] | None = None
    output_sum = None
    for index, network in enumerate(networks):
        part = _part_progress(progress, index, len(networks))
        previous = next((t.device for t in network.parameters()), device)
        try:
            network.to(device)
            if methods is None:
                outputs, maps = predict_volume(network, array, progress=part, **kwargs), None
            else:
                maps, outputs = explain_volume(network, array, methods, progress=part, return_outputs=True,
                                               normalize=normalize and single, **kwargs, **engine)
        except (RuntimeError, ValueError) as exc:
            if not is_too_small(exc):
                raise
            grid = array.shape[1:] if mode == "volume" else tuple(
                s for i, s in enumerate(array.shape[1:]) if i != (axis or 0))
            raise too_small_error(exc, loaded.card, grid) from exc
        finally:
            network.to(previous)
        output_sum = outputs if output_sum is None else output_sum + outputs
        if maps is not None:
            map_sums = maps if map_sums is None else {name: map_sums[name] + maps[name] for name in methods}
    outputs = output_sum / len(networks)
    if map_sums is None or single:
        return map_sums, outputs
    maps = {name: value / len(networks) for name, value in map_sums.items()}
    if normalize:
        from ..engine import METHODS

        maps = {name: normalize_volume(value, METHODS[name].signed) for name, value in maps.items()}
    return maps, outputs


def _explain_networks(loaded: LoadedModel, array: np.ndarray, methods: list[str], mode: str, axis: int | None,
                      device: torch.device, batch_size: int | None, overlap: float | None,
                      progress: Callable | None, target, layer, normalize: bool, options: dict,
                      logits: np.ndarray | None = None):
    """``(maps, outputs)`` of :func:`run_networks`, with a 2D classifier's layer maps free of the image edge.

    The layer-based methods of a classifier run per slice see each slice inside a margin of
    the model's background (the prepared volume's minimum per channel: the value the card's
    preprocessing pads with, after its intensity transform), as deep as the edge reaches into
    the explained layer (:mod:`engine.edge_margin`); their maps are cropped back to the slice
    before the volume is normalised. Only a model whose card declares ``input.pad_value`` (what lies
    outside its field of view) gets the margin: for any other the surround would be a guess, and on
    data without a background (a z-scored or synthetic volume) a guessed one can draw the evidence out
    of the slice. The prediction comes from the card's own grid (the margin
    dilutes a global average pool a little) and the maps explain its classes: one plain forward
    more than the maps' own pass, saved when the caller already has those outputs (``logits``).
    """
    from ..engine import METHODS, normalize_volume
    from ..engine.edge_margin import crop_index, edge_reach, pad_slices

    run = dict(mode=mode, axis=axis, device=device, batch_size=batch_size, overlap=overlap)
    framed = [name for name in methods if METHODS[name].needs_layer]
    margin = 0
    per_slice_target = target is None or isinstance(target, (int, np.integer, list, tuple, np.ndarray))
    declared = loaded.card.input.pad_value is not None  # the model says what lies outside its field of view
    if framed and mode == "slices" and loaded.card.task == "classification" and per_slice_target and declared:
        background = array.reshape(array.shape[0], -1).min(axis=1)
        slice_shape = tuple(n for i, n in enumerate(array.shape[1:]) if i != (axis or 0))
        margin = max(edge_reach(network, layer, background, slice_shape) for network in loaded.modules)
    if not margin:
        return run_networks(loaded, array, progress=progress, methods=methods, target=target, layer=layer,
                            normalize=normalize, **run, **options)
    rest = [name for name in methods if name not in framed]
    if target is None:  # each slice's class as the card's grid predicts it
        logits = run_networks(loaded, array, **run)[1] if logits is None else logits
        target = [int(k) for k in np.argmax(logits, axis=-1)]
    padded = pad_slices(torch.from_numpy(array), axis or 0, margin, background).numpy()
    raw, _ = run_networks(loaded, padded, progress=_part_progress(progress, 0, 2) if rest else progress,
                          methods=framed, target=target, layer=layer, normalize=False, **run,
                          **_options_of(framed, methods, options))
    maps = {}
    if rest:
        maps, logits = run_networks(loaded, array, progress=_part_progress(progress, 1, 2), methods=rest,
                                    target=target, layer=layer, normalize=normalize, **run,
                                    **_options_of(rest, methods, options))
    elif logits is None:
        logits = run_networks(loaded, array, **run)[1]
    crop = crop_index(axis or 0, margin, array.shape[1:])
    for name in framed:
        value = np.ascontiguousarray(raw[name][crop])
        maps[name] = normalize_volume(value, METHODS[name].signed) if normalize else value
    return {name: maps[name] for name in methods}, logits


def _options_of(part: list[str], methods: list[str], options: dict) -> dict:
    """``options`` for a run of ``part`` of ``methods``: without the method options only the other methods
    take (RISE's ``score_baseline`` must not reach a Grad-CAM pass); run options pass unchanged."""
    from ..engine import METHODS

    others = {name for method in methods if method not in part for name in METHODS[method].options}
    own = {name for method in part for name in METHODS[method].options}
    return {name: value for name, value in options.items() if name not in others or name in own}


def _prepare(loaded: LoadedModel, image: sitk.Image, axis: int | None, budget: float | None,
             device: torch.device | None = None, modality: str | None = None) -> PreparedImage:
    """The form's pipeline on ``image``, through the :class:`ModelPipeline` seam (the budget bounds its grid;
    a pipeline that runs a network itself, an nnU-Net cascade's first stage, is told the run's ``device``).

    A card fed only a region another model segments (``input.resampling.mask``: pyliverlesionseg's lesion
    network sees the liver that liver-seg-3d finds) gets that model's prediction first, on the same device and
    with the same modality. ``modality`` goes to a pipeline with an input pipeline per modality; any other
    refuses it (:func:`models.modality.choose_modality`).
    """
    from .modality import choose_modality
    from .pipeline_protocol import takes_device, takes_modality

    extra = {"device": device} if device is not None and takes_device(loaded.pipeline) else {}
    choice = None
    if takes_modality(loaded.pipeline):
        choice = choose_modality(loaded.card, image, modality)
        extra["modality"] = modality = choice.modality
    elif modality is not None:
        choose_modality(loaded.card, image, modality)  # the one message for a model without modalities
    mask = getattr(getattr(loaded.card.input, "resampling", None), "mask", None)
    if mask is not None:
        if mask.model == loaded.card.name:
            raise ValueError(f"model '{loaded.name}': input.resampling.mask names the model itself; it must name "
                             "the model that segments the region this one is fed")
        segmenter = load_model(mask.model)
        labels = predict_image(segmenter, image, device=device if device is not None else "cpu", modality=modality)
        index = segmenter.card.class_index(mask.label)
        value = segmenter.card.classes[index].value
        extra["region"] = sitk.GetArrayFromImage(labels) == (index if value is None else value)
    prepared = loaded.pipeline.prepare(image, slice_axis=axis, memory_budget_mb=budget, **extra)
    if choice is not None and choice.modality is not None:
        prepared.modality_reason = choice.reason
    return check_prepared(prepared, f"model '{loaded.name}'")


def _check_windows(loaded: LoadedModel, mode: str, device: torch.device, budget: float | None,
                   gradients: bool, batch_size: int | None = None) -> int | None:
    """A windowed model's patch (from its plans, config or card) against the budget or the free memory,
    before anything is allocated for it (:mod:`models.working_memory`).

    Returns the batch of windows to run: the caller's ``batch_size``, else (without a budget, which the
    engine sizes batches by itself) at most as many windows as the free memory holds, never more than the
    engine's default. liver-lesion-seg-3d's 32 windows of 86 x 172 x 180 took 21.6 GB at the default 16
    per batch on a CPU.
    """
    patch = window_options(loaded.pipeline, mode).get("patch_size")
    if mode != "volume" and patch is None:
        return batch_size
    from ..engine.volume import default_batch_size
    from .working_memory import check_window_memory

    where = f"model '{loaded.name}'" + (f" ({loaded.source})" if loaded.source is not None else "")
    fit = check_window_memory(loaded.module, network_channels(loaded), patch, where, budget, device, gradients)
    if batch_size is not None or budget is not None or fit is None:
        return batch_size
    return min(fit, default_batch_size(device))


def _engine_budget(budget_mb: float, image: sitk.Image, channels: int, n_methods: int) -> float:
    """What is left of a whole-run budget for the engine once the input-grid arrays are counted.

    ``explain_image`` holds the input as float32 per channel and every map restored to the
    input grid next to the engine's own arrays, so a budget covers them too.
    """
    voxels = image.GetNumberOfPixels()
    held = voxels * 4 * (channels + 2 * n_methods)
    left = budget_mb - held / 2**20
    if left <= 0:
        raise ValueError(f"memory_budget_mb={budget_mb:g} is too small: the image's own grid alone needs "
                         f"{held / 2**20:.0f} MB ({voxels} voxels as float32 input and {n_methods} map(s) "
                         "restored to it, each with a resampling copy); raise the budget or crop the image")
    return left


def _part_progress(progress: Callable | None, index: int, parts: int):
    """``progress(done, total)`` of one network, reported as a share of all networks' work."""
    if progress is None or parts == 1:
        return progress
    return lambda done, total: progress(index * total + done, parts * total)


# ---- helpers ---------------------------------------------------------------------------------

def _as_loaded(model, trust: bool) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike, ModelCard)):
        return load_model(model, trust=trust)
    if isinstance(model, torch.nn.Module):
        raise TypeError("explain_image needs a model with a card (it says how to preprocess the "
                        "image); got a bare torch.nn.Module. Use XAIExplainLib.explain_volume for a module "
                        "and an already preprocessed array, or write a card.json and load_model it")
    raise TypeError(f"model must be a LoadedModel, a model name, a folder or a card.json path, got "
                    f"{type(model).__name__}")


def _check_methods(loaded: LoadedModel, methods) -> list[str]:
    from ..engine.registry import check_applicable, check_methods

    method_list = check_methods(methods)
    card = loaded.card
    check_applicable(method_list, card.task, card.spatial_dims, loaded.scripted, f"model '{card.name}'",
                     loaded.module)
    return method_list


def _check_mode(card: ModelCard, mode, axis) -> tuple[str, int | None]:
    from ..engine.modes import resolve_mode

    return resolve_mode(mode, axis, card.spatial_dims, card.slice_axis or 0, f"'{card.name}'")


def _layer_for(loaded: LoadedModel, methods: list[str], layer):
    from ..engine import METHODS

    if loaded.scripted and layer is not None:
        raise ValueError(f"{loaded.source or loaded.name}: is a TorchScript model, which takes no hooks, "
                         f"so layer={layer!r} cannot be used; remove the layer and use an input-gradient "
                         "method (saliency, smoothgrad, integrated_gradients, occlusion)")
    if not any(METHODS[m].needs_layer for m in methods):
        return layer
    if layer is not None:
        return layer
    if _gap_head_methods(methods) == [m for m in methods if METHODS[m].needs_layer]:
        return gap_fed_layer(loaded)
    return loaded.card.target_layers.default


def _gap_head_methods(methods: list[str]) -> list[str]:
    from ..engine import METHODS

    return [m for m in methods if METHODS[m].needs_gap_head]


def gap_fed_layer(loaded: LoadedModel) -> str | None:
    """The card's layer that feeds the global average pool (CAM, CRM): the deepest of the card's
    layers in the network's module order; None (the engine's last spatial layer) when the card
    names none. CAM and CRM check numerically that it does feed the pool and the Linear head."""
    card_layers = [name for name in (loaded.card.target_layers.default, *loaded.card.target_layers.suggested)
                   if isinstance(name, str) and name]
    order = {name: index for index, (name, _) in enumerate(loaded.module.named_modules())}
    known = [name for name in card_layers if name in order]
    return max(known, key=order.__getitem__) if known else None


def _class_index(card: ModelCard, value):
    """Class names -> indices (``ModelCard.class_index``); indices are checked by the engine."""
    return card.class_index(value) if isinstance(value, str) else value


def _model_grid_target(card: ModelCard, target, prepared):
    """Class names -> indices; a segmentation ROI on the input grid -> the model grid."""
    from ..engine import SegmentationTarget

    if isinstance(target, SegmentationTarget):
        return target.on_grid(prepared.region_to_model_grid, prepared.voxel_to_model_grid,
                              class_index=_class_index(card, target.class_index))
    if isinstance(target, (list, tuple)):
        return [_class_index(card, t) for t in target]
    return _class_index(card, target)


def _engine_target(card: ModelCard, target):
    """Segmenters explain the predicted region of a class (Seg-Grad-CAM) unless told otherwise.

    The target counts the card's classes (``num_classes``), so a class index or name means the
    same on every output form: a sigmoid output listed as ``[background, X, ...]`` has one
    channel fewer than classes, and the engine's target maps class c to its channel (and the
    background of a single channel to its complement).
    """
    from ..engine import SegmentationTarget

    if card.task != "segmentation":
        return target
    prediction = "sigmoid" if card.output_activation == "sigmoid" else None
    if isinstance(target, SegmentationTarget):
        changes = {"num_classes": target.num_classes or card.num_classes}
        if target.prediction is None:
            changes["prediction"] = prediction
        return target._replace(**changes)
    if isinstance(target, (list, tuple)):
        raise ValueError("a segmentation model takes one class (index or name) or a "
                         "SegmentationTarget, not a list")
    return SegmentationTarget(target, region="predicted", prediction=prediction, num_classes=card.num_classes)


def _prediction(loaded: LoadedModel, logits: np.ndarray, prepared: PreparedImage):
    card = loaded.card
    if card.task == "classification":
        return loaded.activate(logits, axis=-1).astype(np.float32)
    probabilities = loaded.activate(logits[None], axis=1)[0]
    return prepared.restore_labels(probabilities, card.output_activation)
