"""CRM — class-selective relevance mapping (Kim, Rajaraman, Antani, Diagnostics 2019).

For a classifier whose head is global average pooling + Linear over the last
convolutional map f (N, K, *s): S_c = sum_k w_k^c sum_s f_k, and S_c(l) is S_c with
spatial element l of every f_k set to zero. CRM(l) = sum_c (S_c - S_c(l))^2 over all
output nodes, or one class only (``crm_classes="target"``).

Modes (``crm_mode``):

- ``"closed"`` (default): the head is linear, so S_c - S_c(l) = sum_k w_k^c f_k(l),
  the raw CAM of class c at l; CRM = sum_c CAM_c(l)^2. One forward pass, no re-run.
- ``"forward"``: the literal removal computation: element l of the pooled input is
  removed (the pooled vector with element l zeroed is (sum_s f - f(l)) / |s|) and the
  head is re-run for all l at once (batched, never the backbone). Scores are scaled by
  |s| to the sums of the definition; the head runs in float64 because S_c - S_c(l) is a
  small difference of two large scores. Equals the closed form on linear heads.
- ``"forward_softmax"``: as "forward", with S the softmax probabilities of the head.

The paper displays CRM normalised by its maximum and shows values >= 20 % of it;
class-specific ROI maps (mean of max-normalised CRM over images of one class) are
``crm_roi_map``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batching import chunks, copies_per_forward
from ..interrupt import checkpoint
from ..options import choice
from ..registry import CLASSIFICATION, MethodInfo, register
from ..targets import BoundClassTarget
from .class_activation_map import check_gap_head, find_linear_head

MODES = ("closed", "forward", "forward_softmax")
CLASS_CHOICES = ("all", "target")


def crm_closed(activation: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """sum_c (sum_k w_k^c f_k)^2 over all classes (``classes=None``) or each sample's class: (N, *s)."""
    a = activation.detach()
    if classes is not None:
        w = weight[classes.to(weight.device)].to(a.dtype)  # (N, K)
        return (w.reshape(w.shape + (1,) * (a.dim() - 2)) * a).sum(dim=1).pow(2)
    flat = a.flatten(2)  # (N, K, L)
    per_class = torch.einsum("ck,nkl->ncl", weight.to(a.dtype), flat)
    return per_class.pow(2).sum(dim=1).reshape((a.shape[0],) + tuple(a.shape[2:]))


def crm_forward(activation: torch.Tensor, head: torch.nn.Linear, classes: torch.Tensor | None,
                softmax: bool) -> torch.Tensor:
    """The literal computation: zero element l of every f_k, re-run GAP + head, for all l (batched)."""
    a = activation.detach().double().flatten(2)  # (N, K, L)
    n, k, length = a.shape
    weight = head.weight.detach().double()
    bias = None if head.bias is None else head.bias.detach().double()
    total = a.sum(dim=2)  # (N, K)
    base = F.linear(total / length, weight, bias)  # (N, C): the model's own scores
    if softmax:
        base = torch.softmax(base, dim=1)
    out = torch.empty(n, length, dtype=torch.float64, device=a.device)
    step = copies_per_forward(n * (k + weight.shape[0]), length)
    for start, stop in chunks(length, step):
        checkpoint()  # cancel / heartbeat hook (engine/interrupt.py)
        pooled = (total[:, None, :] - a[:, :, start:stop].transpose(1, 2)) / length  # (N, l, K)
        scores = F.linear(pooled, weight, bias)  # (N, l, C)
        if softmax:
            difference = base[:, None, :] - torch.softmax(scores, dim=2)
        else:
            difference = (base[:, None, :] - scores) * length  # back to the sums of the definition
        if classes is not None:
            difference = difference.gather(2, classes.to(a.device)[:, None, None].expand(n, stop - start, 1))
        out[:, start:stop] = difference.pow(2).sum(dim=2)
    return out.reshape((n,) + tuple(activation.shape[2:])).to(activation.dtype)


def compute(request) -> torch.Tensor:
    mode = choice(request.options, "crm_mode", "closed", MODES)
    which = choice(request.options, "crm_classes", "all", CLASS_CHOICES)
    head_name, head = find_linear_head(request.model)
    result = request.cam_pass(backward=False)
    if not isinstance(result.target, BoundClassTarget):
        raise ValueError("CRM explains classification models with a global-average-pool + Linear head, not "
                         "segmentation outputs; use 'gradcam' or 'kwc' for a segmentation model")
    classes = result.target.classes if which == "target" else None

    def layer_map(name, _):
        activation = result.activations[name].detach()
        try:
            check_gap_head(name, activation, head_name, head, result.output)
        except ValueError as error:  # the check is CAM's; CRM has the same requirement
            raise ValueError(str(error).replace("CAM needs", "CRM (like CAM) needs", 1)) from None
        if mode == "closed":
            return crm_closed(activation, head.weight.detach(), classes)
        return crm_forward(activation, head, classes, softmax=mode == "forward_softmax")
    return request.per_layer(layer_map)


register(MethodInfo(
    "crm", "CRM: squared change of every class score when one location of the last conv map is removed",
    compute=compute, family="relevance", tasks=(CLASSIFICATION,), cost="1 forward (head re-run in forward mode)",
    options=("crm_mode", "crm_classes"), needs_gradients=False, needs_gap_head=True,
))
