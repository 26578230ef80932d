"""Gradient-weighted attention rollout, "Transformer attribution" (Chefer, Gur & Wolf,
"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers", ICCV 2021, rules 5-6; the gradient weighting of their CVPR 2021 paper).

Relevance starts as the identity, R = I, and is updated block by block in forward order
with the positive part of attention times its gradient, averaged over heads:
    Abar_b = mean_h (dy/dA_b,h * A_b,h)^+,   R <- R + Abar_b R.
The gradient is of the target score (a class logit, or a segmentation target's score,
Seg-Grad-CAM), so the map is class-specific. Read out like the rollout (class-token row,
or the output-relevant tokens' rows without a class token). One forward, one backward
to the first block (parameters frozen; nothing before the first attention builds a graph).
"""
from __future__ import annotations

import torch

from ..registry import MethodInfo, register
from .attention_capture import attention_pass, attention_problem, readout


def gradient_rollout(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """(N, L, L): R = I, then R <- R + mean_h (grad * A)^+ R for each block in order."""
    n, length = attentions[0].shape[0], attentions[0].shape[-1]
    relevance = torch.eye(length, dtype=attentions[0].dtype, device=attentions[0].device).expand(n, -1, -1)
    for attention, gradient in zip(attentions, gradients):
        weighted = (gradient * attention).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance


def _gradient_rollout(request):
    found = attention_pass(request, backward=True, method="gradient_rollout")
    return readout(request, gradient_rollout(found.attentions, found.gradients), found.target)


register(MethodInfo(
    "gradient_rollout", "Gradient rollout: relevance rolled out with the positive part of attention x its "
    "gradient, head-averaged (Chefer, Gur & Wolf 2021); class-specific",
    compute=_gradient_rollout, family="attention", needs_layer=False, cost="1 forward + backward to the first block",
    needs_hooks=True, model_check=attention_problem,
))
