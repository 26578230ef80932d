"""LeGrad (Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, "LeGrad: An Explainability
Method for Vision Transformers via Feature Formation Sensitivity", 2024).

For every block b, the gradient of the target score with respect to its attention map,
ReLU'd and averaged over heads: E_b = mean_h (dy/dA_b,h)^+ (N, L, L); the blocks' maps are
averaged, E = mean_b E_b, and read as in the paper's reference implementation: the mean
over every query row (class token included), over the patch tokens' columns. Unlike the
rollouts it multiplies no matrices, so it does not wash out over many blocks.

Our reading: the paper scores each layer by applying the model's head to that layer's
class token (a CLIP readout); here every block's gradient is of the model's own target
score (a class logit or a segmentation target's score, Seg-Grad-CAM), which works for
any head and for models without a class token. One forward, one backward.
"""
from __future__ import annotations

import torch

from ..registry import MethodInfo, register
from .attention_capture import attention_pass, attention_problem, readout


def legrad(gradients: list[torch.Tensor]) -> torch.Tensor:
    """(N, L, L): mean over blocks and heads of the ReLU'd attention gradients."""
    return torch.stack([gradient.clamp(min=0).mean(dim=1) for gradient in gradients]).mean(dim=0)


def _legrad(request):
    found = attention_pass(request, backward=True, method="legrad")
    return readout(request, legrad(found.gradients), found.target, every_row=True)


register(MethodInfo(
    "legrad", "LeGrad: ReLU'd gradient of the score w.r.t. every block's attention, averaged over heads and "
    "blocks (Bousselham et al. 2024); class-specific",
    compute=_legrad, family="attention", needs_layer=False, cost="1 forward + backward to the first block",
    needs_hooks=True, model_check=attention_problem,
))
