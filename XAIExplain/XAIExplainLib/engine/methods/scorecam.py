"""Score-CAM, with the masked copies batched (Wang et al., "Score-CAM: Score-Weighted Visual
Explanations for Convolutional Neural Networks", CVPR Workshops 2020, https://arxiv.org/abs/1910.01279).

It scores many masked copies of the input against the target frozen from the
unperturbed output (``bound.score(output, rows)``); copies are stacked into forwards
of ``batching.copies_per_forward`` copies, the row layout being copy-major
(row = copy * N + sample), run by ``request.batch_model``.

Score-CAM: mask M_k = upsampled A_k min-max scaled to [0, 1];
s_k = softmax(f(x * M_k))^c for classifiers; for segmentation targets s_k is the
target's own score of f(x * M_k) (the sum over its frozen region of the class channel
through the target's activation: pass ``activation="sigmoid"`` / ``"softmax"`` to score
probabilities as the paper does); L = ReLU(sum_k s_k A_k).
"""
from __future__ import annotations

import torch

from ..batching import chunks, copies_per_forward, copy_scores
from ..interrupt import checkpoint
from ..normalize import minmax
from ..registry import MethodInfo, register
from ..request import upsample


def scorecam_layer(request, activation: torch.Tensor, bound) -> torch.Tensor:
    """Score-CAM of one layer's activations (N, K, *s): (N, *s)."""
    x = request.x
    a = activation.detach()
    n, k = a.shape[:2]
    weights = torch.empty(n, k, dtype=a.dtype, device=a.device)
    step = copies_per_forward(n * x[0].numel(), k)
    with torch.no_grad():
        for start, stop in chunks(k, step):
            checkpoint(start, k)  # cancel / heartbeat / progress hook (engine/interrupt.py)
            maps = a[:, start:stop]  # (N, b, *s)
            masks = minmax(upsample(maps.flatten(0, 1), tuple(x.shape[2:])))  # (N * b, *S)
            masks = masks.reshape((n, stop - start) + tuple(x.shape[2:])).transpose(0, 1)  # (b, N, *S)
            inputs = (x[None] * masks[:, :, None]).flatten(0, 1)
            model = request.batch_model(k, step, inputs[:n])
            weights[:, start:stop] = copy_scores(model, bound, inputs, n, probability=True).T.to(a.dtype)
    shape = weights.shape + (1,) * (a.dim() - 2)
    return torch.relu((weights.reshape(shape) * a).sum(dim=1))


def scorecam(request) -> torch.Tensor:
    result = request.cam_pass(backward=False)
    return request.per_layer(
        lambda name, _: scorecam_layer(request, result.activations[name], result.target))


register(MethodInfo(
    "scorecam", "Score-CAM: channel weights = target score of the input masked by each upsampled channel",
    compute=scorecam, family="perturbation", cost="1 forward + K masked forwards (batched)",
    needs_gradients=False,
))
