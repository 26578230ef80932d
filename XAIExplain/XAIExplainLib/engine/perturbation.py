"""Perturbation methods: Score-CAM and occlusion, with the perturbed copies batched.

Both score many modified copies of the input against the target frozen from the
unperturbed output (``bound.score(output, rows)``); copies are stacked into forwards
of ``batching.copies_per_forward`` copies, the row layout being copy-major
(row = copy * N + sample).

Score-CAM (DESIGN.md section 3): mask M_k = upsampled A_k min-max scaled to [0, 1];
s_k = softmax(f(x * M_k))^c for classifiers; for segmentation targets s_k is the
target's own score of f(x * M_k) (the sum over its frozen region of the class channel
through the target's activation: pass ``activation="sigmoid"`` / ``"softmax"`` to score
probabilities as the paper does); L = ReLU(sum_k s_k A_k).

Occlusion: raw map = y(x) - y(x with a window set to the baseline), averaged over the
windows covering each voxel, as captum's ``Occlusion`` with the same window and stride.
Windows start at 0 every ``stride`` voxels; where that grid stops short of the end of
an axis one more window, flush with the end, is added so that every voxel is covered
(captum leaves such voxels undefined).
"""
from __future__ import annotations

import itertools

import torch

from .batching import chunks, copies_per_forward
from .normalize import minmax
from .options import baseline, spatial_sizes
from .request import upsample
from .targets import BoundClassTarget


def _rows(n: int, copies: int, device) -> torch.Tensor:
    """Sample index of each row of a copy-major batch of ``copies`` x N rows."""
    return torch.arange(n, device=device).repeat(copies)


def perturbed_scores(model, bound, inputs: torch.Tensor, n: int, probability: bool = False) -> torch.Tensor:
    """Scores of a copy-major batch (copies * N, C, *S) against the frozen target: (copies, N)."""
    copies = inputs.shape[0] // n
    output = model(inputs)
    rows = _rows(n, copies, output.device)
    if probability and isinstance(bound, BoundClassTarget):
        scores = torch.softmax(output, dim=1).gather(1, bound.classes.to(output.device)[rows][:, None])[:, 0]
    else:
        scores = bound.score(output, rows)
    return scores.reshape(copies, n)


def scorecam_layer(model, x: torch.Tensor, activation: torch.Tensor, bound) -> torch.Tensor:
    """Score-CAM of one layer's activations (N, K, *s): (N, *s)."""
    a = activation.detach()
    n, k = a.shape[:2]
    weights = torch.empty(n, k, dtype=a.dtype, device=a.device)
    step = copies_per_forward(n * x[0].numel(), k)
    with torch.no_grad():
        for start, stop in chunks(k, step):
            maps = a[:, start:stop]  # (N, b, *s)
            masks = minmax(upsample(maps.flatten(0, 1), tuple(x.shape[2:])))  # (N * b, *S)
            masks = masks.reshape((n, stop - start) + tuple(x.shape[2:])).transpose(0, 1)  # (b, N, *S)
            inputs = (x[None] * masks[:, :, None]).flatten(0, 1)
            weights[:, start:stop] = perturbed_scores(model, bound, inputs, n, probability=True).T.to(a.dtype)
    shape = weights.shape + (1,) * (a.dim() - 2)
    return torch.relu((weights.reshape(shape) * a).sum(dim=1))


def scorecam(request) -> torch.Tensor:
    result = request.cam_pass(backward=False)
    return request.per_layer(
        lambda name, _: scorecam_layer(request.model, request.x, result.activations[name], result.target))


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
            batch = windows[start:stop]
            inputs = x.repeat((len(batch),) + (1,) * (x.dim() - 1)).reshape((len(batch),) + tuple(x.shape))
            for copy, win in enumerate(batch):
                region = (slice(None), slice(None)) + win
                inputs[copy][region] = fill[region]
            drops = reference[None] - perturbed_scores(request.model, bound, inputs.flatten(0, 1), n)
            for copy, win in enumerate(batch):
                total[(slice(None),) + win] += drops[copy].reshape((n,) + (1,) * len(spatial)).to(x.dtype)
                counts[win] += 1
    return total / counts
