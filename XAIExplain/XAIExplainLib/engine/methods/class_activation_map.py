"""CAM (Zhou et al. 2016): the class weights of a global-average-pool + Linear head times a layer's activations.

Needs a GAP -> Linear head; ``check_gap_head`` verifies numerically that the chosen layer
really feeds it, so a wrong layer is an error instead of a meaningless map. CRM reads the
same head (``find_linear_head``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import CLASSIFICATION, MethodInfo, register
from ..request import Request
from ..targets import BoundClassTarget
from .gradient_cams import spatial_dims, weighted_sum


def find_linear_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last nn.Linear of the model: the head CAM and CRM read their class weights from."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "CAM needs a global-average-pool + Linear classification head, but the model has no nn.Linear; "
            "use 'gradcam' (same idea, weights from gradients) instead"
        )
    return linears[-1]


def check_gap_head(layer_name: str, activation: torch.Tensor, head_name: str, head: nn.Linear,
                   output: torch.Tensor) -> None:
    """Verify numerically that the model's output is the Linear head applied to the layer's spatial mean."""
    pooled = activation.detach().mean(dim=spatial_dims(activation))
    if pooled.shape[1] != head.in_features:
        expected = None
    else:
        expected = head(pooled.to(head.weight.dtype))
    if expected is None or expected.shape != output.shape or not torch.allclose(
        expected, output, rtol=1e-4, atol=1e-5 * (1 + output.abs().max().item())
    ):
        raise ValueError(
            f"CAM needs layer '{layer_name}' to feed a global average pool and then the Linear head "
            f"'{head_name}' that gives the output; that is not the case for this model and layer. "
            "Pick the last convolutional block before the pooling, or use 'gradcam'"
        )


def cam(activation: torch.Tensor, head: nn.Linear, classes: torch.Tensor) -> torch.Tensor:
    """L^c = sum_k w_k^c A_k (signed; the bias is a constant that min-max removes)."""
    weights = head.weight.detach()[classes.to(head.weight.device)].to(activation.dtype)
    return weighted_sum(weights, activation.detach())


def _class_activation_map(request: Request):
    head_name, head = find_linear_head(request.model)
    result = request.cam_pass(backward=False)
    if not isinstance(result.target, BoundClassTarget):
        raise ValueError("CAM explains classification models (GAP + Linear head), not segmentation outputs")

    def layer_map(name, _):
        activation = result.activations[name]
        check_gap_head(name, activation, head_name, head, result.output)
        return cam(activation, head, result.target.classes)
    return request.per_layer(layer_map)


register(MethodInfo(
    "cam", "CAM: class weights of a global-average-pool + Linear head times the layer's activations",
    compute=_class_activation_map, tasks=(CLASSIFICATION,), signed=True, cost="1 forward", needs_gradients=False,
    layer_map_only=True, needs_gap_head=True,
))
