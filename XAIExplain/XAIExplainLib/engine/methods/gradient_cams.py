"""CAM-family maps from one layer's activations A (N, K, *s) and gradients g = dy/dA.

Papers: Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391), Grad-CAM++
(Chattopadhay et al., WACV 2018, https://arxiv.org/abs/1710.11063; eq. 19 with exp(score)),
HiResCAM (Draelos & Carin, arXiv 2020, https://arxiv.org/abs/2011.08891), XGrad-CAM (Fu et
al., BMVC 2020, https://arxiv.org/abs/2008.02312), LayerCAM (Jiang et al., IEEE TIP 2021,
https://doi.org/10.1109/TIP.2021.3089943). Every function returns raw maps (N, *s) at the
layer's resolution; upsampling and normalisation happen in the caller. Because all of
them read the same A and g, asking for several costs one forward and one backward.
"""
from __future__ import annotations

import torch

from ..registry import MethodInfo, register
from ..request import Request


def spatial_dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.dim()))


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
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
    return torch.relu(weighted_sum(g.mean(dim=spatial_dims(g)), a))


def gradcampp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Chattopadhay et al. eq. 19 with the exponential score.

    With Y = exp(S) the exponentials cancel in alpha, leaving g^2 / (2 g^2 + sum_s(A) g^3);
    the weights use ReLU(g) (the common exp(S) factor only rescales the raw map). Where
    g > 0 that alpha is 1 / (2 + sum_s(A) g), and ReLU(g) zeroes the rest, so the weights
    are sum_s ReLU(g) / (2 + sum_s(A) g): the same numbers in a third of the passes over g.
    """
    positive = torch.relu(g)
    denominator = 2 + a.sum(dim=spatial_dims(a), keepdim=True) * positive
    weights = _safe_divide(positive, denominator).sum(dim=spatial_dims(g))
    return torch.relu(weighted_sum(weights, a))


def hirescam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu((g * a).sum(dim=1))


def xgradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Weights sum_s(A g) / sum_s(A) per channel (0 for an all-zero channel)."""
    dims = spatial_dims(a)
    weights = _safe_divide((a * g).sum(dim=dims), a.sum(dim=dims))
    return torch.relu(weighted_sum(weights, a))


def layercam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu((torch.relu(g) * a).sum(dim=1))


GRADIENT_CAMS = {
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "hirescam": hirescam,
    "xgradcam": xgradcam,
    "layercam": layercam,
}


def gradient_cam(formula):
    """The compute function of a gradient CAM: ``formula(A, g)`` on every requested layer."""
    def compute(request: Request):
        result = request.cam_pass()
        return request.per_layer(lambda name, _: formula(result.activations[name], result.gradients[name]))
    return compute


_DESCRIPTIONS = {
    "gradcam": "Grad-CAM: channel weights = spatial mean of gradients",
    "gradcampp": "Grad-CAM++: second/third-order gradient weights (Chattopadhay et al. eq. 19)",
    "hirescam": "HiResCAM: element-wise gradient x activation, summed over channels",
    "xgradcam": "XGrad-CAM: activation-normalised gradient weights",
    "layercam": "LayerCAM: positive gradients x activation, element-wise",
}

for _name, _formula in GRADIENT_CAMS.items():
    register(MethodInfo(_name, _DESCRIPTIONS[_name], compute=gradient_cam(_formula), layer_map_only=True))
