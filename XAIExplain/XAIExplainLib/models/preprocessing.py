"""Apply a card's preprocessing to an image, and undo it on the outputs.

``prepare`` resamples the image onto the model's grid (the card's spacing and
size, centred on the input, same orientation; a 2D model keeps the input's
slices untouched along its slice axis) and applies the intensity transform.
The returned :class:`PreparedInput` remembers both grids, so maps go back with
linear interpolation (clamped to [0, 1]) and label maps with an argmax of
linearly resampled probabilities, exactly onto the input's size, origin,
spacing and direction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..imaging import intensity as _intensity
from ..imaging.resample import Grid, as_volume, centered_grid, image_from_numpy, resample, resample_array
from .card import ModelCard
from .card_steps import PostprocessingSpec


@dataclass
class PreparedInput:
    """A volume on the model's grid plus what is needed to map results back.

    ``array`` is float32 ``(C, Z, Y, X)`` in numpy order on ``model_grid``.
    """

    array: np.ndarray
    model_grid: Grid
    input_grid: Grid
    was_2d: bool
    from_numpy: bool
    #: the card's output activation: what a probability channel outside the model grid holds
    activation: str = "softmax"
    #: the card's ``output.postprocessing`` of label maps (None: labels as decided)
    postprocessing: PostprocessingSpec | None = None
    #: the modality whose input pipeline ran (:mod:`models.modality`) and how it was decided
    modality: str | None = None
    modality_reason: str = ""

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self.model_grid.shape

    def restore_map(self, array: np.ndarray, clamp: bool = True):
        """A map on the model grid -> float32 on the input grid, clamped to [0, 1] by default.

        Linear interpolation cannot overshoot, but clamping also removes any
        rounding below 0; pass ``clamp=False`` for raw (unnormalised) maps.
        """
        out = self._to_input_grid(np.asarray(array, dtype=np.float32), 0.0)
        if clamp:
            np.clip(out, 0.0, 1.0, out=out)
        return self._finish(out)

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """``(K, Z, Y, X)`` class probabilities on the model grid -> same on the input grid.

        Outside the model grid the model saw nothing, so every voxel there is background: a
        softmax output's channel 0 (background) gets probability 1 and the others 0; a sigmoid
        output's channels are all foreground classes (a one-channel ``[background, X]`` model's
        channel is P(X)), so each gets 0.
        """
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if probabilities.ndim != 4 or probabilities.shape[1:] != self.model_grid.shape:
            shape = ", ".join(map(str, self.model_grid.shape))
            raise ValueError(f"expected probabilities of shape (K, {shape}), got "
                             f"{probabilities.shape}")
        background = None if self.activation == "sigmoid" else 0
        return np.stack([self._to_input_grid(channel, 1.0 if k == background else 0.0)
                         for k, channel in enumerate(probabilities)])

    def restore_labels(self, probabilities: np.ndarray, activation: str = "softmax",
                       threshold: float = 0.5):
        """Label map on the input grid from model-grid probabilities.

        Probabilities are resampled linearly and then decided (argmax for
        softmax outputs; ``p > threshold`` per class for sigmoid outputs, the
        highest such class winning), which gives smoother, more faithful
        boundaries than nearest-neighbour resampling of a coarse label map.
        """
        if self.postprocessing is not None:
            return self._finish(self._restore_decided(probabilities, activation, threshold))
        probs = self.restore_probabilities(probabilities)
        return self._finish(decide_labels(probs, activation, threshold).astype(np.uint8))

    def _restore_decided(self, probabilities: np.ndarray, activation: str, threshold: float) -> np.ndarray:
        """``output.postprocessing``: labels decided on the model grid, each foreground label reduced to its
        largest component when asked (:func:`keep_largest_component`), its mask brought to the input grid by
        linear interpolation and every voxel above 0 kept (pyliverlesionseg's order-1 zoom, then ``> 0``)."""
        probabilities = np.asarray(probabilities, dtype=np.float32)
        labels = decide_labels(probabilities, activation, threshold)
        out = np.zeros(self.input_grid.shape, dtype=np.uint8)
        for label in range(1, int(labels.max()) + 1):
            kept = labels == label
            if self.postprocessing.largest_component:
                kept = keep_largest_component(kept, self.postprocessing.erosion)
            restored = self._to_input_grid(kept.astype(np.float32), 0.0)
            out[restored > 0] = label
        return out

    def _to_input_grid(self, array: np.ndarray, fill: float) -> np.ndarray:
        """Linearly resample a model-grid array onto the input grid (a new array); values come
        back exactly when the model saw the input's own grid (a model without spacing or size)."""
        if self.model_grid == self.input_grid:
            return np.array(array, dtype=np.float32)
        return resample_array(array, self.model_grid, self.input_grid, fill)

    def region_to_model_grid(self, mask: np.ndarray) -> np.ndarray:
        """A boolean region on the input grid (z, y, x) -> the same region on the model grid.

        Nearest-neighbour resampling; a region thinner than a model voxel keeps the model
        voxel nearest to its centre, so a small ROI never vanishes.
        """
        shape = self.input_grid.shape
        mask = np.asarray(mask).astype(bool)
        if self.was_2d and mask.ndim == 2:
            mask = mask[None]
        if mask.shape != shape:
            raise ValueError(f"the target region mask has shape {mask.shape} but the image is "
                             f"{shape} (z, y, x); give the mask on the image's own grid")
        image = self.input_grid.image_from_array(mask.astype(np.uint8))
        out = sitk.GetArrayFromImage(resample(image, self.model_grid, "nearest", 0)).astype(bool)
        if not out.any():
            centre = np.argwhere(mask).mean(axis=0)
            out[self.voxel_to_model_grid(tuple(int(round(c)) for c in centre))] = True
        return out

    def voxel_to_model_grid(self, voxel) -> tuple[int, ...]:
        """A voxel index (z, y, x) of the input grid -> the nearest voxel of the model grid."""
        voxel = tuple(int(v) for v in voxel)
        if self.was_2d and len(voxel) == 2:
            voxel = (0,) + voxel
        ref = self.input_grid.reference()
        point = ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in reversed(voxel)])
        model_index = self.model_grid.reference().TransformPhysicalPointToIndex(point)
        zyx = tuple(int(i) for i in reversed(model_index))
        return tuple(min(max(i, 0), n - 1) for i, n in zip(zyx, self.model_grid.shape))

    def _finish(self, array: np.ndarray):
        """An array on the input grid as the caller gave the input: numpy or a SimpleITK image
        with the input's geometry, 2D for a 2D input."""
        if self.from_numpy:
            return array[0] if self.was_2d else array
        image = self.input_grid.image_from_array(array)
        return image[:, :, 0] if self.was_2d else image


def keep_largest_component(mask: np.ndarray, erosion: int = 0) -> np.ndarray:
    """``mask`` eroded ``erosion`` times, its largest face-connected component, dilated back as often.

    pyliverlesionseg's liver post-processing (Tang et al. 2020): erosion and dilation with the
    3 x 3 x 3 structure without its corners (``generate_binary_structure(3, 2)``), so thin bridges
    to neighbouring organs break before the largest component is chosen. The component is the
    engine's (:func:`engine.targets.regions.largest_component`, the one rule of it). An empty
    mask stays empty.
    """
    import torch
    from scipy import ndimage

    from ..engine.targets.regions import largest_component

    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 2)
    core = ndimage.binary_erosion(mask, structure=structure, iterations=erosion) if erosion else mask
    if not core.any():
        return np.zeros_like(mask)
    kept = largest_component(torch.from_numpy(core)[None])[0].numpy()
    return ndimage.binary_dilation(kept, structure=structure, iterations=erosion) if erosion else kept


def decide_labels(probabilities: np.ndarray, activation: str, threshold: float = 0.5) -> np.ndarray:
    """Labels from ``(K, ...)`` probabilities: argmax, or thresholded sigmoid channels.

    With sigmoid outputs a single channel means foreground label 1; with K
    channels label k+1 is set where channel k exceeds the threshold.
    """
    if activation == "sigmoid":
        above = probabilities > threshold
        labels = np.zeros(probabilities.shape[1:], dtype=np.uint8)
        for k in range(probabilities.shape[0]):
            labels[above[k]] = k + 1
        return labels
    return np.argmax(probabilities, axis=0).astype(np.uint8)


def model_grid_for(card: ModelCard, grid: Grid, slice_axis: int | None = None) -> Grid:
    """The grid the model sees for an input on ``grid`` (see the module docstring).

    ``slice_axis`` overrides the card's slice axis of a 2D model.
    """
    spacing = card.input.spacing
    if card.spatial_dims == 2:
        slice_axis = card.slice_axis if slice_axis is None else slice_axis
        axes = [a for a in range(3) if a != slice_axis]
        new_spacing: list[float | None] = [None] * 3
        new_shape: list[int | None] = [None] * 3
        new_shape[slice_axis] = grid.shape[slice_axis]
        for i, axis in enumerate(axes):
            if spacing is not None:
                new_spacing[axis] = spacing[i]
            if card.input.size is not None:
                new_shape[axis] = card.input.size[i]
            elif spacing is None:
                new_shape[axis] = grid.shape[axis]
        return centered_grid(grid, new_spacing, new_shape)
    new_spacing = list(spacing) if spacing is not None else [None] * 3
    if card.input.size is not None:
        return centered_grid(grid, new_spacing, list(card.input.size))
    model = centered_grid(grid, new_spacing, None if spacing is not None else list(grid.shape))
    patch = card.input.patch_size
    if patch is not None and any(n < p for n, p in zip(model.shape, patch)):
        shape = [max(n, p) for n, p in zip(model.shape, patch)]
        model = centered_grid(grid, list(model.spacing_zyx), shape)
    step = card.input.divisible_by
    if step is not None and any(n % k for n, k in zip(model.shape, step)):
        # Networks that halve the grid several times (HD-BET: 4 times) need each size a
        # multiple of 2^levels: grow the centred grid to the next multiple.
        shape = [-(-n // k) * k for n, k in zip(model.shape, step)]
        model = centered_grid(grid, list(model.spacing_zyx), shape)
    return model


class CardPipeline:
    """How a card model sees an image: the card's resampling and intensity transform, undone by
    :class:`PreparedInput`. Other model forms (nnU-Net, MONAI bundles) bring their own pipeline
    with the same two methods."""

    def __init__(self, card: ModelCard):
        self.card = card

    def prepare(self, image, slice_axis: int | None = None, spacing: Sequence[float] | None = None,
                memory_budget_mb: float | None = None, region: np.ndarray | None = None,
                modality: str | None = None) -> PreparedInput:
        """``modality`` picks one of the card's input pipelines (CT, MR); None decides from the image
        (:func:`models.modality.choose_modality`)."""
        from .modality import choose_modality

        choice = choose_modality(self.card, image, modality)
        card = self.card if choice.modality is None else self.card.for_modality(choice.modality)
        prepared = prepare(card, image, spacing, slice_axis, memory_budget_mb, region)
        prepared.modality, prepared.modality_reason = choice.modality, choice.reason
        return prepared

    def volume_options(self) -> dict:
        """Keyword arguments of ``explain_volume`` / ``predict_volume`` in volume mode: the engine's sliding
        windows, or the card's ``input.windows`` tiles (their ``DeepVoxNet.predict``), padded beyond the
        volume as a zoom card's segment is (``segment_pad``; else the volume's minimum)."""
        patch = self.card.input.patch_size
        options = {"patch_size": list(patch), "overlap": 0.25} if patch is not None else {"overlap": 0.25}
        windows = self.card.input.windows
        if windows.tiles:
            from ..engine.windows import Tiling

            resampling = self.card.input.resampling
            options["tiling"] = Tiling(steps="tiles", tile=windows.output_segment, source_axes=windows.source_axes,
                                       reversed_axes=windows.reversed_axes,
                                       pad_value=resampling.segment_pad if resampling.method == "zoom" else None)
        return options


#: Float32 copies of the model grid a run holds at least: the resampled input, its intensity-
#: transformed array and the resampler's working copy, per channel, plus one map.
GRID_COPIES = 3


def check_grid_memory(card: ModelCard, input_grid: Grid, model_grid: Grid,
                      memory_budget_mb: float | None = None) -> None:
    """Refuse, before resampling, a model grid larger than the budget (or the free memory) allows.

    A tiny file with a large spacing resampled to a fine model spacing can ask for
    hundreds of millions of voxels; the numbers say why and what to change.
    """
    check_model_grid_bytes(f"model '{card.name}'", card.input.channels, input_grid.shape, input_grid.spacing_zyx,
                           model_grid.shape, model_grid.spacing_zyx, memory_budget_mb)


def check_model_grid_bytes(model: str, channels: int, input_shape: Sequence[int], input_spacing: Sequence[float],
                           model_shape: Sequence[int], model_spacing: Sequence[float],
                           memory_budget_mb: float | None = None) -> None:
    """The rule of :func:`check_grid_memory` for any form: shapes and spacings in numpy (z, y, x) order.

    ``model`` names the model in the message (``"model 'name'"``). Every form's pipeline calls it
    before it resamples (the card's here, nnU-Net's before its preprocessor runs).
    """
    from ..imaging.reading import available_memory_bytes, format_bytes

    voxels = int(np.prod([int(n) for n in model_shape], dtype=np.int64))
    need = voxels * 4 * (GRID_COPIES * channels + 1)
    if memory_budget_mb is not None:
        limit, what = memory_budget_mb * 2**20, f"the memory budget of {memory_budget_mb:g} MB"
    else:
        limit, what = available_memory_bytes(), "the memory available"
        if limit is None:
            return
        what = f"{what} ({format_bytes(limit)})"
    if need > limit:
        shape = " x ".join(str(int(n)) for n in reversed(tuple(model_shape)))
        source = " x ".join(str(int(n)) for n in reversed(tuple(input_shape)))
        spacing = " x ".join(f"{float(v):g}" for v in reversed(tuple(model_spacing)))
        in_spacing = " x ".join(f"{float(v):g}" for v in reversed(tuple(input_spacing)))
        raise ValueError(
            f"{model} would resample this {source} image (spacing {in_spacing} mm) to a "
            f"{shape} grid at {spacing} mm: {voxels} voxels, at least {format_bytes(need)} for the "
            f"run, more than {what}. Crop the image to the region of interest, check its spacing "
            "(a wrong header?), or raise the budget")


def check_orientation(card: ModelCard, grid: Grid) -> None:
    """Refuse an image whose axes are not the ones a card's ``input.orientation`` requires.

    The model grid keeps the input's direction, so a network that learned anatomy on LPS
    volumes would see a mirrored or rotated body on, e.g., a RAS-stored NIfTI.
    """
    if card.input.orientation != "LPS":
        return
    direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    if not np.allclose(direction, np.eye(3), atol=1e-3):
        rows = "; ".join(" ".join(f"{v:g}" for v in row) for row in np.round(direction, 3))
        raise ValueError(f"model '{card.name}' was trained on axis-aligned LPS volumes (identity direction) but "
                         f"this image has direction [{rows}]; reorient it first, e.g. "
                         "SimpleITK.DICOMOrient(image, 'LPS'), or in Slicer with the Orient Scalar Volume module")


def prepare(card: ModelCard, image, spacing: Sequence[float] | None = None,
            slice_axis: int | None = None, memory_budget_mb: float | None = None,
            region: np.ndarray | None = None) -> PreparedInput:
    """Resample and normalise ``image`` as ``card`` prescribes.

    ``image`` is a ``SimpleITK.Image`` (2D or 3D, scalar or with one component
    per channel) or a numpy array ``(Z, Y, X)`` / ``(Y, X)``, or
    ``(C, Z, Y, X)`` for multi-channel models, with ``spacing`` in the same
    numpy axis order (defaults to 1 mm).  ``slice_axis`` overrides the card's
    slice axis of a 2D model (numpy axis of the volume). ``region`` (boolean, on the image's
    grid) is the region a card with ``input.resampling.mask`` is fed: the mask model's class.
    """
    from_numpy = not isinstance(image, sitk.Image)
    channels = _split_channels(card, image, spacing) if from_numpy else _sitk_channels(card, image)
    volumes, was_2d = [], False
    for channel in channels:
        volume, was_2d = as_volume(channel)
        volumes.append(volume)
    if was_2d and card.spatial_dims == 3:
        raise ValueError(f"model '{card.name}' is a 3D model and needs a volume; got a 2D image")
    axis = card.slice_axis if slice_axis is None else slice_axis
    if card.spatial_dims == 2 and axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2 (numpy order z, y, x), got {axis!r}")
    if was_2d and axis != 0:
        raise ValueError(f"model '{card.name}' would run along slice axis {axis}; a 2D image only "
                         "has one slice (axis 0)")
    input_grid = Grid.from_image(volumes[0])
    check_orientation(card, input_grid)
    if region is not None and card.input.resampling.mask is None:
        raise ValueError(f"model '{card.name}' is fed the whole image (its card has no input.resampling.mask); "
                         "remove the region")
    if card.input.resampling.method == "zoom":
        return _prepare_zoomed(card, volumes, input_grid, was_2d, from_numpy, memory_budget_mb, region)
    model_grid = model_grid_for(card, input_grid, axis if card.spatial_dims == 2 else None)
    check_grid_memory(card, input_grid, model_grid, memory_budget_mb)
    arrays = []
    for volume in volumes:
        volume = sitk.Cast(volume, sitk.sitkFloat32)
        pad = card.input.pad_value
        if pad is None:
            pad = float(sitk.GetArrayViewFromImage(volume).min())
        same = Grid.from_image(volume) == model_grid
        on_grid = volume if same else resample(volume, model_grid, "linear", pad, antialias=True)
        arrays.append(apply_intensity(card, sitk.GetArrayFromImage(on_grid)))
    return PreparedInput(np.stack(arrays).astype(np.float32), model_grid, input_grid, was_2d,
                         from_numpy, card.output_activation, card.postprocessing)


def _prepare_zoomed(card: ModelCard, volumes: list[sitk.Image], input_grid: Grid, was_2d: bool, from_numpy: bool,
                    memory_budget_mb: float | None, region: np.ndarray | None) -> PreparedInput:
    """``input.resampling.method = "zoom"``: their zooms and median filter on the whole image, the
    intensity transform on the zoomed volume, then the segment (:mod:`models.zoom_preparation`)."""
    from . import zoom_preparation as zp

    spec = card.input.resampling
    if spec.mask is not None and region is None:
        raise ValueError(f"model '{card.name}' is fed only the {spec.mask.label} that '{spec.mask.model}' segments: "
                         f"give its region (region=, a boolean array on the image's grid), or run the model with "
                         "predict_image / explain_image, which segment it first")
    full_grid = input_grid
    if spec.crop is not None:
        volumes = zp.crop_to_abdomen(card, volumes)
        input_grid = Grid.from_image(volumes[0])
    finest, zoomed = zp.zoom_grids(card, input_grid)
    check_grid_memory(card, input_grid, finest, memory_budget_mb)
    arrays = []
    for volume in volumes:
        array = sitk.GetArrayFromImage(volume)
        if spec.intensity_first:
            arrays.append(zp.zoomed_array(card, apply_intensity(card, array, region), input_grid))
        else:
            arrays.append(apply_intensity(card, zp.zoomed_array(card, array, input_grid)))
    if spec.mask is None:
        size = zp.segment_size(card, zoomed.shape)
        offsets = tuple(zp.centred_offset(n, s, rev) for n, s, rev in zip(zoomed.shape, size, zp.REVERSED_AXES))
    else:
        inside = zp.mask_region(card, region, input_grid)
        low, high = spec_range(card)
        arrays = [zp.beyond_box(np.clip(np.where(inside, a, spec.mask.outside), low, high), inside, spec.segment_pad)
                  for a in arrays]
        offsets, size = zp.box_segment(card, inside)
    model_grid = zp.segment_grid(zoomed, offsets, size)
    array = np.stack([zp.cut_segment(a, offsets, size, spec.segment_pad) for a in arrays]).astype(np.float32)
    return PreparedInput(array, model_grid, full_grid, was_2d, from_numpy, card.output_activation,
                         card.postprocessing)


def spec_range(card: ModelCard) -> tuple[float, float]:
    """What the card's intensity transform maps onto (``[0, 1]`` unless ``input.intensity.range`` says)."""
    return tuple(card.input.intensity.range or (0.0, 1.0))


def apply_intensity(card: ModelCard, array: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """The card's ``input.intensity`` transform on an array (float32); ``region`` (boolean, same grid) is the
    region mode ``region_median`` takes its statistics from."""
    spec = card.input.intensity
    if spec.mode == "region_median":
        return _region_median(card, array, region)
    if spec.mode == "window":
        return _intensity.window(array, *spec.window, to=spec.range)
    if spec.mode == "scale":
        return _intensity.scale(array, spec.mean, spec.std)
    if spec.mode == "zscore":
        return _intensity.zscore(array)
    if spec.mode == "minmax":
        return _intensity.minmax(array, spec.upper_fraction, to=spec.range)
    return np.asarray(array, dtype=np.float32)


def _region_median(card: ModelCard, array: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    if region is None:
        mask = card.input.resampling.mask
        raise ValueError(f"model '{card.name}' normalises by the median of the {mask.label} that '{mask.model}' "
                         "segments (intensity mode 'region_median'); give its region (region=)")
    try:
        return _intensity.region_median(array, region, to=spec_range(card))
    except ValueError as exc:
        raise ValueError(f"model '{card.name}': {exc}") from exc


def _sitk_channels(card: ModelCard, image: sitk.Image) -> list[sitk.Image]:
    n = image.GetNumberOfComponentsPerPixel()
    if n != card.input.channels:
        raise ValueError(f"model '{card.name}' expects {card.input.channels} channel(s) "
                         f"(card field input.channels) but the image has {n} component(s) per voxel")
    if n == 1:
        return [image]
    return [sitk.VectorIndexSelectionCast(image, i) for i in range(n)]


def _split_channels(card: ModelCard, array, spacing) -> list[sitk.Image]:
    try:
        array = np.asarray(array)
    except Exception as exc:  # noqa: BLE001 - any failure means "not array-like"
        raise TypeError("image must be a SimpleITK.Image or a numpy array, got "
                        f"{type(array).__name__}") from exc
    if array.dtype == object or array.ndim not in (2, 3, 4):
        raise TypeError("image must be a SimpleITK.Image or a numpy array of shape (Y, X), "
                        f"(Z, Y, X) or (C, Z, Y, X); got {type(array).__name__} with shape "
                        f"{getattr(array, 'shape', None)}")
    channels = card.input.channels
    if array.ndim == 4:
        if array.shape[0] != channels:
            raise ValueError(f"model '{card.name}' expects {channels} channel(s) (card field "
                             f"input.channels) but the array has {array.shape[0]} (shape "
                             f"{array.shape}, channels first)")
        return [image_from_numpy(a, spacing) for a in array]
    if channels != 1:
        raise ValueError(f"model '{card.name}' expects {channels} channels; pass a (C, Z, Y, X) "
                         f"array, got shape {array.shape}")
    return [image_from_numpy(array, spacing)]
