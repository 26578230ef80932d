"""Ablation-CAM (Ramaswamy & Desai, WACV 2020): channel weights from the score lost when a channel is zeroed.

For the target layer's activations A (N, K, *s) and the target score y (logit of the
class, or a segmentation target's score): y_k is the score with channel k of A set to
zero, w_k = (y - y_k) / y, and the map is ReLU(sum_k w_k A_k). No gradient is needed.

The K ablated copies are stacked copy-major into batches (``batching``) and only the
layers after the target layer run (``replay.LayerReplay``, the machinery KWC uses): the
prefix is recorded once, so the cost is one forward plus K suffix forwards.

pytorch-grad-cam's ``AblationCAM`` zeroes the channel when the layer's minimum is 0
(after a ReLU) and otherwise writes (minimum - 1e7) into it; this method always zeroes,
as the paper defines it, so the two agree on layers whose output is non-negative.
"""
from __future__ import annotations

import torch

from ..batching import chunks, copies_per_forward
from ..interrupt import checkpoint
from ..registry import MethodInfo, register
from ..replay import LayerReplay
from ..targets import resolve_target
from .gradient_cams import weighted_sum


def ablation_scores(replay: LayerReplay, x: torch.Tensor, bound, output_elements: int) -> torch.Tensor:
    """(N, K) target scores with each channel of the recorded layer output zeroed in turn."""
    o = replay.layer_output
    n, k = o.shape[:2]
    scores = torch.empty(n, k, dtype=o.dtype, device=o.device)
    per_copy = n * max(x[0].numel(), o[0].numel(), output_elements)
    for start, stop in chunks(k, copies_per_forward(per_copy, k)):
        checkpoint(start, k)  # cancel / heartbeat / progress hook (engine/interrupt.py)
        count = stop - start
        activations = o.unsqueeze(0).repeat((count,) + (1,) * o.dim())  # (count, N, K, *s)
        copies = torch.arange(count, device=o.device)
        activations[copies, :, start + copies] = 0
        out = replay.run_suffix(x, activations.flatten(0, 1))
        rows = torch.arange(n, device=out.device).repeat(count)
        scores[:, start:stop] = bound.score(out, rows).reshape(count, n).T.to(o.dtype)
    return scores


def ablation_layer(model, x: torch.Tensor, target, name: str, layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ablation-CAM map (N, *s) at the layer's resolution, channel weights (N, K)) of one layer."""
    replay = LayerReplay(model, layer, name)
    with torch.no_grad():
        base = replay.record(x)
        bound = resolve_target(target, base)
        activation = replay.layer_output
        if activation.dim() != x.dim():
            raise ValueError(f"layer '{name}' has output {tuple(activation.shape)} with no spatial dims; "
                             "choose a convolutional layer")
        score = bound.score(base).to(activation.dtype)[:, None]  # (N, 1)
        ablated = ablation_scores(replay, x, bound, base[0].numel())
        nonzero = score != 0
        weights = torch.where(nonzero, (score - ablated) / torch.where(nonzero, score, torch.ones_like(score)),
                              torch.zeros_like(ablated))
        return torch.relu(weighted_sum(weights, activation)), weights


def _ablationcam(request):
    details = request.info.setdefault("ablationcam", {"channel_weights": {}})

    def layer_map(name, module):
        result, weights = ablation_layer(request.model, request.x, request.target, name, module)
        details["channel_weights"][name] = weights
        return result
    return request.per_layer(layer_map)


register(MethodInfo(
    "ablationcam", "Ablation-CAM: channel weights = relative drop of the target score when the channel is zeroed",
    compute=_ablationcam, family="perturbation", cost="1 forward + K suffix forwards (batched, prefix reused)",
    layer_map_only=True, needs_gradients=False,
))
