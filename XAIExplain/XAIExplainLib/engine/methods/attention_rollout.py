"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Each block's attention, averaged over heads, plus the identity (the residual
connection), rows renormalised: A'_b = (mean_h A_b,h + I) / rowsum. The rollout is the
product over blocks R = A'_B ... A'_1, so R[i, j] is how much of token j's input flows
into token i after the last block. The map is the class token's row over the patch
tokens (ViT) or, for models without a class token (UNETR), the mean of the
output-relevant tokens' rows (every patch, or those holding the segmentation target's
region): see :func:`.attention_capture.readout`. It is class-agnostic and needs no
gradient: one forward.
"""
from __future__ import annotations

import torch

from ..registry import MethodInfo, register
from .attention_capture import attention_pass, attention_problem, readout


def rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """(N, L, L) product over blocks of the row-normalised (head mean + identity)."""
    eye = torch.eye(attentions[0].shape[-1], dtype=attentions[0].dtype, device=attentions[0].device)
    result = None
    for attention in attentions:
        mixed = attention.mean(dim=1) + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    return result


def _attention_rollout(request):
    found = attention_pass(request, backward=False, method="attention_rollout")
    return readout(request, rollout(found.attentions), found.target)


register(MethodInfo(
    "attention_rollout", "Attention rollout: product over blocks of head-averaged attention plus identity "
    "(Abnar & Zuidema 2020); class-agnostic",
    compute=_attention_rollout, family="attention", needs_layer=False, cost="1 forward",
    needs_gradients=False, needs_hooks=True, model_check=attention_problem,
))
