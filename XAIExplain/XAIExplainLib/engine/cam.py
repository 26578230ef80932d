"""CAM-family maps from one layer's activations A (N, K, *s) and gradients g = dy/dA.

Exact definitions: DESIGN.md section 3. Every function returns raw maps (N, *s) at the
layer's resolution; upsampling and normalisation happen in the caller. Because all of
them read the same A and g, asking for several costs one forward and one backward.
"""
from __future__ import annotations

import torch
from torch import nn


def _spatial(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.dim()))


def _weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for weights (N, K), as one batched matrix product (no (N, K, *s) temporary)."""
    flat = activations.reshape(activations.shape[0], activations.shape[1], -1)
    return torch.bmm(weights.unsqueeze(1).to(flat.dtype), flat).reshape(
        (activations.shape[0],) + tuple(activations.shape[2:]))


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator where the denominator is not zero, else 0."""
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, torch.ones_like(denominator)),
                       torch.zeros_like(numerator))


def gradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu(_weighted_sum(g.mean(dim=_spatial(g)), a))


def gradcampp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Chattopadhay et al. eq. 19 with the exponential score.

    With Y = exp(S) the exponentials cancel in alpha, leaving g^2 / (2 g^2 + sum_s(A) g^3);
    the weights use ReLU(g) (the common exp(S) factor only rescales the raw map). Where
    g > 0 that alpha is 1 / (2 + sum_s(A) g), and ReLU(g) zeroes the rest, so the weights
    are sum_s ReLU(g) / (2 + sum_s(A) g): the same numbers in a third of the passes over g.
    """
    positive = torch.relu(g)
    denominator = 2 + a.sum(dim=_spatial(a), keepdim=True) * positive
    weights = _safe_divide(positive, denominator).sum(dim=_spatial(g))
    return torch.relu(_weighted_sum(weights, a))


def hirescam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu((g * a).sum(dim=1))


def xgradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Weights sum_s(A g) / sum_s(A) per channel (0 for an all-zero channel)."""
    dims = _spatial(a)
    weights = _safe_divide((a * g).sum(dim=dims), a.sum(dim=dims))
    return torch.relu(_weighted_sum(weights, a))


def layercam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu((torch.relu(g) * a).sum(dim=1))


GRADIENT_CAMS = {
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "hirescam": hirescam,
    "xgradcam": xgradcam,
    "layercam": layercam,
}


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
    pooled = activation.detach().mean(dim=_spatial(activation))
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
    return _weighted_sum(weights, activation.detach())
