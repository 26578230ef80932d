"""Explaining and predicting whole volumes: per slice (2D models) or volumetric (3D models).

Per-slice mode batches slices along numpy axis 0, 1 or 2; given a 2D ``patch_size`` it runs the 2D
model on sliding windows of every slice instead (nnU-Net's ``2d`` configuration: windows one voxel
thick along the slicing axis, which the model sees squeezed away). Volumetric mode runs the whole
volume, or sliding windows with overlap blended by Gaussian weights (placed as a
``windows.Tiling`` says; a "tiles" tiling writes its windows' output segments over each other
instead, maps with the same rule), optionally with mirrored copies of every window averaged in. Maps stay on the
model's device until the end and are normalised over the whole volume (an empty slice
stays dark), never slice by slice.
"""
from __future__ import annotations

import itertools
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.autograd.profiler import record_function

from .api import as_network, explain_batch, model_device_dtype
from .capture import eval_mode
from .devices import is_out_of_memory, resolve_device
from .interrupt import checkpoint, part_progress
from .memory_estimate import activation_bytes
from .modes import resolve_mode
from .normalize import volume_minmax
from .request import upsample
from .reading import reading_output
from .registry import check_methods, get_method
from .targets import resolve_target
from .validation import check_finite, check_model, non_finite_problem
from .windows import Tiling, gaussian_weights, nearest_fill, tile_placements, window_grid

_DEFAULT_CPU_BATCH = 16
_DEFAULT_CUDA_BATCH = 64

#: Profiler scopes of the window loop (``torch.profiler`` shows them; ``bench/peers/end_to_end.py``
#: reads them for its breakdown): copying windows out of the volume, the model's passes, blending,
#: and normalising the maps and handing them out as numpy arrays.
STACK_SCOPE, PASS_SCOPE, BLEND_SCOPE = "xai windows: stack", "xai windows: passes", "xai windows: blend"
FINISH_SCOPE = "xai volume: normalise and copy out"


def _as_channels_first(volume) -> torch.Tensor:
    """(Z, Y, X) or (C, Z, Y, X) numpy/tensor -> float tensor (C, Z, Y, X)."""
    if isinstance(volume, np.ndarray):
        if volume.dtype.kind in "ui" and volume.dtype.itemsize >= 2 and volume.dtype not in (np.int16, np.int32,
                                                                                           np.int64):
            volume = volume.astype(np.float32)  # uint16/32/64: torch has few kernels for them
        tensor = torch.from_numpy(np.ascontiguousarray(volume))
    elif isinstance(volume, torch.Tensor):
        tensor = volume.detach()
    else:
        raise TypeError(f"volume must be a numpy array or torch tensor (Z, Y, X) or (C, Z, Y, X), "
                        f"got {type(volume).__name__}")
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4:
        raise ValueError(f"volume must have shape (Z, Y, X) or (C, Z, Y, X), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.dtype in
                                          (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                                           torch.uint16, torch.uint32, torch.uint64)):
        raise TypeError(f"volume must be numeric, got dtype {tensor.dtype}")
    problem = non_finite_problem(tensor)
    if problem:
        raise ValueError(f"the volume {problem} (e.g. numpy.nan_to_num)")
    return tensor.float() if not tensor.is_floating_point() else tensor


def default_batch_size(device: torch.device | str) -> int:
    """Slices or windows per forward when the caller gives none and no budget sizes them."""
    return _DEFAULT_CUDA_BATCH if torch.device(device).type == "cuda" else _DEFAULT_CPU_BATCH


def batch_size_for_budget(model: nn.Module, sample: torch.Tensor, fixed_bytes: int, budget_mb: float,
                          limit: int) -> int:
    """Largest batch whose estimated working memory fits ``budget_mb`` next to ``fixed_bytes``.

    Per sample: activations and their gradients (2 x every module output) plus the input
    and its gradient. An estimate, deliberately on the safe side.
    """
    per_sample = 2 * activation_bytes(model, sample) + 3 * sample.numel() * sample.element_size()
    budget = budget_mb * 2**20
    if fixed_bytes + per_sample > budget:
        need = (fixed_bytes + per_sample) / 2**20
        raise ValueError(
            f"memory_budget_mb={budget_mb:g} is too small: this volume needs at least {need:.0f} MB "
            f"({fixed_bytes / 2**20:.0f} MB for the volume and maps, {per_sample / 2**20:.0f} MB per "
            f"{'slice' if sample.dim() == 4 else 'window'}); raise the budget or crop the volume"
        )
    return int(max(1, min(limit, (budget - fixed_bytes) // per_sample)))


def check_memory_budget(memory_budget_mb) -> None:
    """A budget is a positive number of megabytes (not a string, not a bool)."""
    if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) \
            or not memory_budget_mb > 0:
        raise TypeError(f"memory_budget_mb must be a positive number of megabytes (e.g. 2000), got "
                        f"{memory_budget_mb!r}")


def _check_progress(progress) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be None or a function progress(done, total), got {progress!r}")


def _resolve_device(model: nn.Module, device) -> torch.device:
    """The model's own device when none is given, else the checked requested one."""
    return model_device_dtype(model, torch.empty(0))[0] if device is None else resolve_device(device)


class _Batches:
    """Runs ``work(start, stop)`` over [0, total) in batches; on CUDA OOM halves the batch and retries."""

    def __init__(self, total: int, batch_size: int | None, device: torch.device, progress: Callable | None):
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self.size = batch_size or default_batch_size(device)
        self.total, self.device, self.progress = total, device, progress

    def run(self, work: Callable[[int, int], None]) -> None:
        start = 0
        while start < self.total:
            checkpoint()  # cancel / heartbeat hook (engine/interrupt.py)
            stop = min(start + self.size, self.total)
            try:
                with part_progress(self._within(start, stop)):
                    work(start, stop)
            except RuntimeError as error:
                if self.device.type != "cuda" or not is_out_of_memory(error) or self.size == 1:
                    raise
                torch.cuda.empty_cache()
                self.size = max(1, self.size // 2)
                continue
            start = stop
            if self.progress is not None:
                self.progress(start, self.total)


    def _within(self, start: int, stop: int):
        """Progress inside batch [start, stop) from a method's ``checkpoint(done, total)`` (RISE)."""
        if self.progress is None:
            return None
        progress, total = self.progress, self.total
        return lambda fraction: progress(start + (stop - start) * fraction, total)


class _PerPartTarget:
    """None or one class index used across a volume's slices or windows.

    A classifier gets that class (or its prediction) as usual; a segmenter gets the
    predicted region of the class in each slice or window, and a part where the class
    is predicted nowhere gives a dark map instead of stopping the whole volume.
    """

    def __init__(self, spec):
        self.spec = spec

    def bind(self, output: torch.Tensor):
        if output.dim() > 2:
            from .targets import SegmentationTarget
            return SegmentationTarget(self.spec)._replace(allow_empty=True).bind(output)
        return resolve_target(self.spec, output)


def _slice_target(target, start: int, stop: int, axis: int):
    """The part of a per-slice target for slices [start, stop)."""
    if target is None or isinstance(target, (int, np.integer)):
        return _PerPartTarget(target)
    if hasattr(target, "for_slices"):
        return target.for_slices(axis, start, stop)
    if isinstance(target, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(target, str):
        return target[start:stop]
    return target


def _window_target(target, windows: list[tuple[slice, ...]]):
    """The target for a batch of windows: targets tied to voxels (a mask region) crop themselves."""
    if target is None or isinstance(target, (int, np.integer)):
        return _PerPartTarget(target)
    if hasattr(target, "for_windows"):
        return target.for_windows(windows)
    return target


def _slices_of(volume: torch.Tensor, axis: int, start: int, stop: int) -> torch.Tensor:
    """Slices [start, stop) along spatial ``axis`` of (C, Z, Y, X) as a batch (B, C, H, W)."""
    moved = volume.movedim(axis + 1, 1)  # (C, n, H, W)
    return moved[:, start:stop].transpose(0, 1)


def _finish(maps: dict, methods: list[str], normalize: bool, single: bool):
    out = {}
    for name, value in maps.items():
        if normalize:  # the maps are this call's own buffers: normalise them in place
            value = volume_minmax(value, get_method(name).signed)
        out[name] = value.float().cpu().numpy()
    return out[methods[0]] if single else out


def explain_volume(model: nn.Module, volume, methods="gradcam", mode: str = "slices", axis: int = 0,
                   batch_size: int | None = None, patch_size=None, overlap: float = 0.25, window_weights=None,
                   target=None,
                   layer=None, normalize: bool = True, progress: Callable | None = None, device=None,
                   memory_budget_mb: float | None = None, return_outputs: bool = False,
                   tiling: Tiling | None = None, mirror_axes: Sequence[int] = (), **options):
    """Attribution maps over a whole volume, already preprocessed for the model.

    volume      numpy or tensor (Z, Y, X) or (C, Z, Y, X)
    methods     a method name (returns one float32 numpy map of the volume's spatial shape)
                or a list (returns a dict name -> map); CAM-family maps share passes
    mode        "slices": a 2D model on slices along numpy ``axis`` (0, 1 or 2), batched (with a
                2D ``patch_size``: on sliding windows of each slice, blended like volume windows);
                "volume": a 3D model on the whole volume, or on sliding windows of
                ``patch_size`` with ``overlap`` blended with Gaussian weights (or
                ``window_weights``: one positive weight per voxel of a window, e.g. the
                importance map of a MONAI bundle's inferer)
    target      None (each slice/window's predicted class), an int, one class per slice,
                or a segmentation target
    batch_size  slices or windows per forward; None chooses, and a CUDA out-of-memory
                error halves it and retries
    memory_budget_mb  with batch_size=None, the batch is sized so the estimated working
                memory (volume, maps, activations and gradients) stays within this budget
    progress    progress(done, total) after each batch; raising from it cancels cleanly
    normalize   min-max over the whole volume; False gives raw maps
    return_outputs  also return the model's outputs (logits, laid out as ``predict_volume``
                returns them) from the same forward passes as the maps: ``(maps, outputs)``.
                One pass gives the prediction and the explanation.
    tiling      volume mode: window placement, Gaussian and padding (``windows.Tiling``;
                None: the default tiling; ``steps="tiles"``: windows whose output segments tile
                the volume, each window's map and output written over its segment, the last
                window winning, ``overlap`` not used)
    mirror_axes volume mode: spatial axes (0 = first spatial axis) to mirror each window
                along; every combination of them is explained too, its maps (and outputs)
                mirrored back and averaged with the plain window's (test-time augmentation);
                per-slice windows: the slice's own axes (0, 1)
    """
    model, layer = as_network(model, layer)  # a LoadedModel: its network at the card's layer
    check_model(model)
    single = isinstance(methods, str)
    method_list = check_methods(methods)
    mode, axis = resolve_mode(mode, axis)
    patch_size, slab, mirror_axes = _slice_windows(mode, axis, patch_size, mirror_axes)
    tiling, flips = _check_windows(mode, tiling, mirror_axes, slab)
    _check_progress(progress)
    if memory_budget_mb is not None:
        check_memory_budget(memory_budget_mb)
    device = _resolve_device(model, device)
    data = _as_channels_first(volume)
    spatial = tuple(data.shape[1:])
    if memory_budget_mb is not None and batch_size is None:
        batch_size = _budget_batch(model, data, len(method_list), mode, axis, patch_size, memory_budget_mb,
                                   device, slab)
    outputs = [] if return_outputs else None
    if mode == "slices" and slab is None:
        maps = _explain_slices(model, data, method_list, axis, target, layer, batch_size, device, progress,
                               options, outputs)
    else:
        # Every voxel is written (the blended windows), so no zero fill.
        maps = {name: torch.empty(spatial, device=device) for name in method_list}
        _explain_windows(model, data, method_list, maps, patch_size, overlap, target, layer, batch_size,
                         device, progress, options, outputs, tiling, flips, window_weights, slab)
    with record_function(FINISH_SCOPE):
        result = _finish(maps, method_list, normalize, single)
        if return_outputs:
            return result, outputs[0].float().cpu().numpy()
    return result


def _explain_slices(model, data, methods, axis, target, layer, batch_size, device, progress, options,
                    outputs: list | None = None) -> dict:
    """Maps of a 2D model over the slices along ``axis``, as views of (Z, Y, X) tensors.

    One-layer CAM maps stay at the layer's resolution batch by batch and are resized
    once per volume at the end: no full-size temporary per batch and no copy (on CPU,
    fresh full-size buffers every batch cost more in page faults than the maps' maths).
    ``outputs`` (a list) receives the model's outputs over the volume, as ``predict_volume``.
    """
    spatial = tuple(data.shape[1:])
    slice_shape = spatial[:axis] + spatial[axis + 1:]
    full, low, batch_outputs = {}, {}, []

    def work(start, stop):
        batch = _slices_of(data, axis, start, stop).to(device)
        result, info = explain_batch(model, batch, methods, target=_slice_target(target, start, stop, axis),
                                    layer=layer, normalize=False, layer_resolution=True, return_info=True,
                                    with_output=outputs is not None, **options)
        if outputs is not None:
            batch_outputs.append(info["output"])
        for name, value in result.items():
            if tuple(value.shape[1:]) == slice_shape:
                if name not in full:  # every slice is written, so no zero fill
                    full[name] = torch.empty((spatial[axis],) + slice_shape, device=device)
                full[name][start:stop] = value
            else:
                low.setdefault(name, []).append(value)

    _Batches(spatial[axis], batch_size, device, progress).run(work)
    for name, parts in low.items():
        full[name] = upsample(torch.cat(parts), slice_shape)
    if outputs is not None:
        outputs.append(_slice_outputs(batch_outputs, axis))
    return {name: full[name].movedim(0, axis) for name in methods}


def _slice_outputs(parts: list[torch.Tensor], axis: int) -> torch.Tensor:
    """Per-slice outputs -> (n_slices, K) for a classifier, (K, *volume spatial) for a segmenter."""
    out = torch.cat(parts)
    if out.dim() > 2:  # segmenter: (n, K, H, W) -> (K, *spatial)
        out = out.transpose(0, 1).movedim(1, axis + 1)
    return out


def _budget_batch(model, data, n_maps, mode, axis, patch_size, budget_mb, device, slab=None) -> int:
    fixed = (data.numel() + n_maps * data[0].numel()) * 4
    if mode == "slices" and slab is None:
        sample, limit = _slices_of(data, axis, 0, 1), data.shape[axis + 1]
    else:
        patch = _patch_shape(patch_size, tuple(data.shape[1:]))
        # a full window (the engine pads a volume smaller than the patch), without copying the data
        sample, limit = data.new_zeros((1, data.shape[0]) + patch), 64
        if slab is not None:
            sample = sample.squeeze(slab + 2)
        fixed *= 3  # padded copy, blended sums and weights
    dtype = model_device_dtype(model, data)[1]
    return batch_size_for_budget(model, sample.to(device, dtype), fixed, budget_mb, limit)


def _patch_shape(patch_size, spatial: tuple[int, ...]) -> tuple[int, ...]:
    if patch_size is None:
        return spatial
    patch = (patch_size,) * len(spatial) if isinstance(patch_size, int) else tuple(patch_size)
    if len(patch) != len(spatial) or any(not isinstance(p, int) or p < 1 for p in patch):
        raise ValueError(f"patch_size must be a positive int or {len(spatial)} positive ints, got {patch_size!r}")
    return patch


def _slice_windows(mode: str, axis: int | None, patch_size, mirror_axes):
    """Per-slice windows: ``(patch, slab, mirror axes)`` as volume windows one voxel thick along ``axis``.

    In slices mode a 2D ``patch_size`` becomes the 3D patch with 1 at ``axis`` (``slab``, the axis the
    model never sees) and mirror axes given on the slice (0, 1) become the volume's spatial axes. Any
    other call passes through with ``slab`` None.
    """
    if mode != "slices" or patch_size is None:
        return patch_size, None, mirror_axes
    patch = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
    if len(patch) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch):
        raise ValueError(f"in slices mode patch_size is the 2D window of a slice: a positive int or 2 positive "
                         f"ints, got {patch_size!r}")
    in_slice = [a for a in range(3) if a != axis]
    axes = tuple(mirror_axes or ())
    if any(isinstance(a, bool) or a not in (0, 1) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"mirror_axes of per-slice windows must be distinct axes of the slice, 0 and/or 1, got "
                         f"{mirror_axes!r}")
    return patch[:axis] + (1,) + patch[axis:], axis, tuple(in_slice[a] for a in axes)


def _check_windows(mode: str, tiling, mirror_axes, slab: int | None = None) -> tuple[Tiling, list[tuple[int, ...]]]:
    """The tiling (default when None) and every combination of the mirror axes (none: [])."""
    if tiling is None:
        tiling = Tiling()
    if not isinstance(tiling, Tiling):
        raise TypeError(f"tiling must be a windows.Tiling or None, got {type(tiling).__name__}")
    axes = tuple(mirror_axes or ())
    if axes and mode != "volume" and slab is None:
        raise ValueError("mirror_axes applies to volume mode (3D models on windows) and to per-slice windows "
                         "(slices mode with a patch_size); whole slices are not mirrored")
    if any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"mirror_axes must be distinct spatial axes out of 0, 1, 2, got {mirror_axes!r}")
    return tiling, [c for n in range(1, len(axes) + 1) for c in itertools.combinations(axes, n)]


def _padded(data: torch.Tensor, patch: tuple[int, ...], tiling: Tiling) -> tuple[torch.Tensor, tuple]:
    """Pad axes shorter than the patch so every window is full size; returns (padded, crop back)."""
    padding = tiling.padding(tuple(data.shape[1:]), patch)
    crop = tuple(slice(before, before + n) for (before, _), n in zip(padding, data.shape[1:]))
    if not any(before or after for before, after in padding):
        return data, crop
    value = float(data.min()) if tiling.pad_value is None else float(tiling.pad_value)
    flat = [amount for pair in reversed(padding) for amount in pair]
    return torch.nn.functional.pad(data, flat, value=value), crop


def _flip_target(target, axes: tuple[int, ...], patch: tuple[int, ...]):
    """A window batch's target seen in windows mirrored along ``axes`` (masks and voxels move along)."""
    mask, voxels = getattr(target, "_mask", None), getattr(target, "_voxels", None)
    if mask is None and voxels is None:
        return target
    changes = {}
    if mask is not None:
        changes["_mask"] = torch.flip(mask, [a + mask.dim() - len(patch) for a in axes])
    if voxels is not None:
        changes["_voxels"] = [None if v is None else tuple(patch[i] - 1 - c if i in axes else c
                                                           for i, c in enumerate(v)) for v in voxels]
    return target._replace(**changes)


def _padded_target(target, crop: tuple[slice, ...], shape: tuple[int, ...]):
    """A target tied to voxels (mask, voxel index) moved onto the padded volume ``shape``."""
    mask, voxel = getattr(target, "_mask", None), getattr(target, "_voxels", None)
    if not any(c.start for c in crop) or (mask is None and voxel is None):
        return target
    changes = {}
    if mask is not None and mask.dim() == len(shape):
        changes["_mask"] = torch.zeros(shape, dtype=torch.bool, device=mask.device)
        changes["_mask"][crop] = mask
    if isinstance(voxel, tuple):
        changes["_voxels"] = tuple(v + c.start for v, c in zip(voxel, crop))
    return target._replace(**changes)


def _window_weights(given, patch: tuple[int, ...], device, n_windows: int, tiling: Tiling) -> torch.Tensor:
    """One window's blending weights: the given patch-shaped positive weights, else Gaussian (ones alone)."""
    if given is None:
        return (gaussian_weights(patch, device, tiling.sigma_scale, tiling.gaussian_centre) if n_windows > 1
                else torch.ones(patch, device=device))
    weights = torch.as_tensor(given).to(device=device, dtype=torch.float32)
    if tuple(weights.shape) != tuple(patch) or not bool((weights > 0).all()):
        raise ValueError(f"window_weights must be a tensor of the window's shape {tuple(patch)} with positive "
                         f"values, got shape {tuple(weights.shape)}")
    return weights


class _Layout(NamedTuple):
    """A volume's windows: the padded volume, the windows (slices of it), the patch, the blending weights
    (None for tiles), the crop back to the volume and, for tiles, where each window's output is written."""

    padded: torch.Tensor
    windows: list
    patch: tuple
    weights: torch.Tensor | None
    crop: tuple
    writes: "_TileWrites | None" = None


def _window_layout(data, patch_size, overlap, tiling: Tiling, device, window_weights=None) -> _Layout:
    """The volume's windows as ``tiling`` places them (see :class:`_Layout`)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    patch = _patch_shape(patch_size, tuple(data.shape[1:]))
    if tiling.writes:
        return _tile_layout(data, patch, tiling, window_weights)
    padded, crop = _padded(data, patch, tiling)
    windows = window_grid(tuple(padded.shape[1:]), patch, overlap, tiling.steps)
    weights = _window_weights(window_weights, patch, device, len(windows), tiling)
    return _Layout(padded, windows, patch, weights, crop)


def _tile_layout(data, patch: tuple[int, ...], tiling: Tiling, window_weights) -> _Layout:
    """Tiles (:func:`windows.tile_placements`): the volume padded with ``tiling.pad_value`` (None: its minimum)
    wherever a window reaches beyond it, as their ``ExtractSegment3D2`` fills its segment."""
    if window_weights is not None:
        raise ValueError("window_weights blend overlapping windows; tiles (Tiling steps='tiles') are written over "
                         "each other, not blended: leave window_weights out")
    spatial = tuple(data.shape[1:])
    if len(tiling.tile) != len(spatial):
        raise ValueError(f"Tiling.tile has {len(tiling.tile)} axes but the volume {len(spatial)} spatial axes")
    windows, writes = tile_placements(spatial, patch, tiling)
    before = [max(0, -min(w[a].start for w in windows)) for a in range(len(spatial))]
    after = [max(0, max(w[a].stop for w in windows) - n) for a, n in enumerate(spatial)]
    crop = tuple(slice(b, b + n) for b, n in zip(before, spatial))
    padded = data
    if any(before) or any(after):
        value = float(data.min()) if tiling.pad_value is None else float(tiling.pad_value)
        flat = [amount for pair in reversed(list(zip(before, after))) for amount in pair]
        padded = torch.nn.functional.pad(data, flat, value=value)
    shift = lambda box: tuple(slice(s.start + b, s.stop + b) for s, b in zip(box, before))  # noqa: E731
    windows = [shift(w) for w in windows]
    return _Layout(padded, windows, patch, None, crop, _TileWrites([shift(w) for w in writes], windows, crop,
                                                                   tiling))


class _TileWrites:
    """Each tile's output (or map) written over the volume's, the last window winning, and voxels no tile
    wrote given the nearest written value (:func:`windows.nearest_fill`): their ``DeepVoxNet.predict``."""

    def __init__(self, writes, windows, crop, tiling: Tiling):
        self.targets = writes
        self.sources = [tuple(slice(t.start - w.start, t.stop - w.start) for t, w in zip(target, window))
                        for target, window in zip(writes, windows)]
        self.crop, self.tiling = crop, tiling
        self.written = None

    def new(self, leading: tuple[int, ...], padded_shape, device) -> torch.Tensor:
        if self.written is None:
            self.written = torch.zeros(tuple(padded_shape), dtype=torch.bool, device=device)
            for target in self.targets:
                self.written[target] = True
        return torch.zeros(tuple(leading) + tuple(padded_shape), device=device)

    def put(self, buffer: torch.Tensor, values: torch.Tensor, first: int) -> None:
        """Windows ``first, first + 1, ...`` (``values``: one per window, ``(..., *patch)``) written in order."""
        lead = (slice(None),) * (buffer.dim() - len(self.crop))
        for i, value in enumerate(values):
            buffer[lead + self.targets[first + i]] = value[lead + self.sources[first + i]].float()

    def result(self, buffer: torch.Tensor) -> torch.Tensor:
        lead = (slice(None),) * (buffer.dim() - len(self.crop))
        return nearest_fill(buffer[lead + self.crop], self.written[self.crop], self.tiling)


def _squeezed_target(target, slab: int):
    """A window batch's target for a 2D model: window masks and voxels lose the ``slab`` axis."""
    mask, voxels = getattr(target, "_mask", None), getattr(target, "_voxels", None)
    if mask is None and voxels is None:
        return target
    changes = {}
    if mask is not None:
        changes["_mask"] = mask.squeeze(slab + mask.dim() - 3)
    if voxels is not None:
        changes["_voxels"] = [None if v is None else tuple(c for i, c in enumerate(v) if i != slab)
                              for v in voxels]
    return target._replace(**changes)


def _explain_window_batch(model, batch, methods, target, slab: int | None, **kwargs):
    """``explain_batch`` on a batch of windows, ``(maps, info)``; with ``slab`` the windows are one voxel thick
    along that spatial axis and the model 2D: it sees them squeezed, maps and outputs get the axis back."""
    if slab is None:
        return explain_batch(model, batch, methods, target=target, return_info=True, **kwargs)
    maps, info = explain_batch(model, batch.squeeze(slab + 2), methods, target=_squeezed_target(target, slab),
                               return_info=True, **kwargs)
    output = info.get("output")
    if output is not None:
        if output.dim() <= 2:
            raise ValueError("per-slice windows need a segmentation model (spatial output); this model is a "
                             "classifier: give patch_size=None to run it on whole slices")
        info["output"] = output.unsqueeze(slab + 2)
    return {name: value.unsqueeze(slab + 1) for name, value in maps.items()}, info


class _SlabForward:
    """A 2D model called on windows one voxel thick along spatial axis ``slab`` (predict_volume's windows)."""

    def __init__(self, model: nn.Module, slab: int):
        self.model, self.dim = model, slab + 2

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.model(batch.squeeze(self.dim))
        if out.dim() <= 2:
            raise ValueError("per-slice windows need a segmentation model (spatial output); this model is a "
                             "classifier: give patch_size=None to run it on whole slices")
        return out.unsqueeze(self.dim)


def _explain_windows(model, data, methods, maps, patch_size, overlap, target, layer, batch_size, device,
                     progress, options, outputs: list | None = None, tiling: Tiling | None = None,
                     flips: list[tuple[int, ...]] = (), window_weights=None, slab: int | None = None):
    padded, windows, patch, weights, crop, writes = _window_layout(data, patch_size, overlap, tiling or Tiling(),
                                                                   device, window_weights)
    if writes is not None:  # tiles: maps and outputs written over each other as the outputs are
        sums = {name: writes.new((), padded.shape[1:], device) for name in methods}
        total_weight = map_weights = None
    else:
        sums = {name: torch.zeros(padded.shape[1:], device=device) for name in methods}
        total_weight = torch.zeros(padded.shape[1:], device=device)
        map_weights = weights / (len(flips) + 1) if flips else weights  # the mirrored copies' mean, once
    target = _padded_target(target, crop, tuple(padded.shape[1:]))
    blended = _OutputBlend(padded.shape[1:], crop, weights, total_weight, len(windows), writes) \
        if outputs is not None else None

    def work(start, stop):
        with record_function(STACK_SCOPE):
            batch = torch.stack([padded[(slice(None),) + w] for w in windows[start:stop]]).to(device)
        batch_target = _window_target(target, windows[start:stop])
        with record_function(PASS_SCOPE):
            result, info = _explain_window_batch(model, batch, methods, batch_target, slab, layer=layer,
                                                 normalize=False, with_output=blended is not None, **options)
            output = info.get("output")
            for axes in flips:  # mirrored windows: explained in their own frame, mirrored back, averaged in
                dims = [a + 2 for a in axes]
                flipped, flipped_info = _explain_window_batch(model, torch.flip(batch, dims), methods,
                                                              _flip_target(batch_target, axes, patch), slab,
                                                              layer=layer, normalize=False,
                                                              with_output=blended is not None, **options)
                if blended is not None:
                    output = output.float() + torch.flip(flipped_info["output"].float(), dims)
                for name in methods:
                    result[name] = result[name] + torch.flip(flipped[name], [a + 1 for a in axes])
        with record_function(BLEND_SCOPE):
            if blended is not None:
                blended.add(output / (len(flips) + 1) if flips else output, windows[start:stop], start)
            if writes is not None:
                for name in methods:
                    writes.put(sums[name], result[name] / (len(flips) + 1) if flips else result[name], start)
                return
            for i, w in enumerate(windows[start:stop]):
                total_weight[w] += weights  # one sum of weights for the maps and the outputs
                for name in methods:
                    sums[name][w] += result[name][i] * map_weights

    _Batches(len(windows), batch_size, device, progress).run(work)
    with record_function(BLEND_SCOPE):
        for name in methods:
            maps[name].copy_(writes.result(sums[name]) if writes is not None else (sums[name] / total_weight)[crop])
        if blended is not None:
            outputs.append(blended.result())


class _OutputBlend:
    """Window outputs blended into the volume's outputs with the maps' Gaussian weights (tiles: written
    over each other, ``writes``).

    ``weight_sum`` is the maps' own sum of window weights (the same windows, the same
    weights), filled by the caller, so it is added up once. A classifier's output can
    only stand for the volume when one window covers it all, as in ``predict_volume``.
    """

    def __init__(self, padded_shape, crop: tuple[slice, ...], weights: torch.Tensor | None,
                 weight_sum: torch.Tensor | None, n_windows: int, writes: "_TileWrites | None" = None):
        self.padded_shape, self.crop, self.weights, self.n_windows = tuple(padded_shape), crop, weights, n_windows
        self.weight_sum, self.writes = weight_sum, writes
        self.sum = self.whole = None

    def add(self, output: torch.Tensor, windows, first: int = 0) -> None:
        if output.dim() == 2:
            if self.n_windows > 1:
                raise ValueError("sliding windows need a segmentation model (spatial output); this model is a "
                                 "classifier: give patch_size=None to run it on the whole volume")
            self.whole = output[0]
            return
        if self.writes is not None:
            if self.sum is None:
                self.sum = self.writes.new((output.shape[1],), self.padded_shape, output.device)
            self.writes.put(self.sum, output, first)
            return
        if self.sum is None:
            self.sum = torch.zeros((output.shape[1],) + self.padded_shape, device=output.device)
        for i, w in enumerate(windows):
            self.sum[(slice(None),) + w] += output[i].float() * self.weights

    def result(self) -> torch.Tensor:
        if self.whole is not None:
            return self.whole
        if self.writes is not None:
            return self.writes.result(self.sum)
        return (self.sum / self.weight_sum)[(slice(None),) + self.crop]


def predict_volume(model: nn.Module, volume, mode: str = "slices", axis: int = 0, batch_size: int | None = None,
                   patch_size=None, overlap: float = 0.25, device=None, progress: Callable | None = None,
                   output_key=None, window_weights=None, tiling: Tiling | None = None,
                   mirror_axes: Sequence[int] = ()):
    """Raw model outputs (logits) over a volume, under ``torch.inference_mode``.

    ``output_key`` picks the logits of a model that returns a tuple, list or dict
    (default: a tuple's first element; see :mod:`.reading`).

    slices mode: (n_slices, K) for a classifier, (K, *volume spatial shape) for a segmenter (with a
    2D ``patch_size``: sliding windows of each slice, blended as in volume mode);
    volume mode: (K,) for a 3D classifier (whole volume), (K, *spatial) for a segmenter
    (sliding windows blended with Gaussian weights, placed as ``tiling`` says; with
    ``mirror_axes`` each window's logits are the mean over its mirrored copies, as in
    nnU-Net's test-time mirroring).
    """
    model, _ = as_network(model)
    check_model(model)
    mode, axis = resolve_mode(mode, axis)
    patch_size, slab, mirror_axes = _slice_windows(mode, axis, patch_size, mirror_axes)
    tiling, flips = _check_windows(mode, tiling, mirror_axes, slab)
    _check_progress(progress)
    device = _resolve_device(model, device)
    data = _as_channels_first(volume)
    spatial = tuple(data.shape[1:])
    dtype = model_device_dtype(model, data)[1]
    with eval_mode(model), torch.inference_mode(), reading_output(model, output_key):
        if mode == "slices" and slab is None:
            outputs = []
            _Batches(spatial[axis], batch_size, device, progress).run(
                lambda start, stop: outputs.append(model(_slices_of(data, axis, start, stop).to(device, dtype,
                                                                                               copy=True))))
            out = _slice_outputs(outputs, axis)
        else:
            forward = model if slab is None else _SlabForward(model, slab)
            out = _predict_windows(forward, data, patch_size, overlap, batch_size, device, dtype, progress,
                                   tiling, flips, window_weights)
    check_finite(model, out, "output")
    return out.float().cpu().numpy()


def _mirrored_forward(model, batch: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    """The model's output averaged over the batch and its copies mirrored along each axes combination."""
    out = model(batch)
    if not flips:
        return out
    out = out.float()
    for axes in flips:
        dims = [a + 2 for a in axes]
        out = out + torch.flip(model(torch.flip(batch, dims)).float(), dims)
    return out / (len(flips) + 1)


def _predict_windows(model, data, patch_size, overlap, batch_size, device, dtype, progress, tiling, flips,
                     window_weights=None):
    spatial = tuple(data.shape[1:])
    padded, windows, patch, weights, crop, writes = _window_layout(data, patch_size, overlap, tiling, device,
                                                                   window_weights)
    if writes is None and len(windows) == 1 and patch == spatial:
        return _mirrored_forward(model, padded[None].to(device, dtype, copy=True), flips)[0]  # a model may write into its input
    state = {}

    def work(start, stop):
        with record_function(STACK_SCOPE):
            batch = torch.stack([padded[(slice(None),) + w] for w in windows[start:stop]]).to(device, dtype)
        with record_function(PASS_SCOPE):
            out = _mirrored_forward(model, batch, flips)
        if out.dim() == 2:
            raise ValueError("sliding windows need a segmentation model (spatial output); this model is a "
                             "classifier: give patch_size=None to run it on the whole volume")
        with record_function(BLEND_SCOPE):
            if writes is not None:
                if "sum" not in state:
                    state["sum"] = writes.new((out.shape[1],), padded.shape[1:], device)
                writes.put(state["sum"], out, start)
                return
            if "sum" not in state:
                state["sum"] = torch.zeros((out.shape[1],) + tuple(padded.shape[1:]), device=device)
                state["weight"] = torch.zeros(padded.shape[1:], device=device)
            for i, w in enumerate(windows[start:stop]):
                state["sum"][(slice(None),) + w] += out[i].float() * weights
                state["weight"][w] += weights

    _Batches(len(windows), batch_size, device, progress).run(work)
    with record_function(BLEND_SCOPE):
        if writes is not None:
            return writes.result(state["sum"])
        return (state["sum"] / state["weight"])[(slice(None),) + crop]
