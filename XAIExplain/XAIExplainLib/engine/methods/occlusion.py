"""Occlusion (Zeiler & Fergus 2014), with the occluded copies batched.

Occlusion: raw map = y(x) - y(x with a window set to the baseline), averaged over the
windows covering each voxel, as captum's ``Occlusion`` with the same window and stride.
Windows start at 0 every ``stride`` voxels; where that grid stops short of the end of
an axis one more window, flush with the end, is added so that every voxel is covered
(captum leaves such voxels undefined).
"""
from __future__ import annotations

import itertools

import torch

from ..batching import chunks, copies_per_forward, copy_scores
from ..interrupt import checkpoint
from ..options import baseline, spatial_sizes
from ..registry import MethodInfo, register


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts every ``stride`` from 0; plus one flush with the end when the grid stops short."""
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def occlusion_windows(spatial: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]):
    """All windows (tuples of slices) over ``spatial``; windows larger than an axis are clipped to it."""
    window = tuple(min(w, s) for w, s in zip(window, spatial))
    per_axis = [window_starts(s, w, st) for s, w, st in zip(spatial, window, stride)]
    return [tuple(slice(a, a + w) for a, w in zip(starts, window)) for starts in itertools.product(*per_axis)]


def occlusion(request) -> torch.Tensor:
    x = request.x
    spatial = tuple(x.shape[2:])
    window = spatial_sizes(request.options, "window", 8, spatial)
    stride = spatial_sizes(request.options, "stride", 4, spatial)
    fill = baseline(request.options, "baseline", x)
    output, bound = request.reference()
    reference = bound.score(output)  # (N,)
    windows = occlusion_windows(spatial, window, stride)
    n = x.shape[0]
    total = torch.zeros((n,) + spatial, dtype=x.dtype, device=x.device)
    counts = torch.zeros(spatial, dtype=x.dtype, device=x.device)
    step = copies_per_forward(n * x[0].numel(), len(windows))
    with torch.no_grad():
        for start, stop in chunks(len(windows), step):
            checkpoint(start, len(windows))  # cancel / heartbeat / progress hook (engine/interrupt.py)
            batch = windows[start:stop]
            inputs = x.repeat((len(batch),) + (1,) * (x.dim() - 1)).reshape((len(batch),) + tuple(x.shape))
            for copy, win in enumerate(batch):
                region = (slice(None), slice(None)) + win
                inputs[copy][region] = fill[region]
            inputs = inputs.flatten(0, 1)
            model = request.batch_model(len(windows), step, inputs[:n])
            drops = reference[None] - copy_scores(model, bound, inputs, n)
            for copy, win in enumerate(batch):
                total[(slice(None),) + win] += drops[copy].reshape((n,) + (1,) * len(spatial)).to(x.dtype)
                counts[win] += 1
    return total / counts


register(MethodInfo(
    "occlusion", "Occlusion: drop of the target score when a window is set to the baseline, averaged per voxel",
    compute=occlusion, family="perturbation", needs_layer=False, signed=True,
    cost="1 forward per window (batched)", options=("window", "stride", "baseline"), needs_gradients=False,
))
