"""Eigen-CAM and Eigen-Grad-CAM: the first principal component of a layer's activations.

Eigen-CAM (Bany Muhammad & Yeasin, 2020) needs no target, no gradient and no backward
pass: per sample, the activations A (K, *s) are read as S = prod(s) points in R^K,
centred over space, and projected onto their first principal direction v_1 (the top
eigenvector of the K x K scatter matrix, i.e. the first right singular vector of the
centred S x K matrix). A singular vector has no sign of its own, so the sign is chosen
to make the projection correlate positively with the channel-mean activation map;
the map is ReLU of that projection. Eigen-Grad-CAM applies the same to A * dy/dA
(class-specific, one forward and one backward, shared with the other gradient CAMs).
Eigen-CAM's family is "activation", not "cam": a "cam" method makes the request run the
backward pass for every layer method, which Eigen-CAM does not need. Nor does it read the
output: alone in a request, its forward stops once the layer ran (cheaper than a plain
inference when layers follow it).

The decomposition is of the K x K scatter matrix, or, where the layer has fewer
positions S than channels K (a deep layer of a classifier), of the S x S Gram matrix
(the same first component: projection = sqrt(lambda_1) u_1), so it costs
S K min(S, K) plus a min(S, K)^2 eigendecomposition in float64.
"""
from __future__ import annotations

import torch

from ..registry import MethodInfo, register


def principal_component_map(features: torch.Tensor) -> torch.Tensor:
    """ReLU of the projection of (N, K, *s) features on their first principal direction, sign-fixed: (N, *s)."""
    n, k = features.shape[:2]
    flat = features.detach().reshape(n, k, -1)  # (N, K, S)
    centred = flat - flat.mean(dim=2, keepdim=True)
    wide = centred.double()
    if k <= wide.shape[2]:  # K x K scatter: its top eigenvector v, projection = centred^T v
        _, vectors = torch.linalg.eigh(torch.bmm(wide, wide.transpose(1, 2)))  # ascending eigenvalues
        direction = vectors[:, :, -1].to(flat.dtype)  # (N, K)
        projection = torch.bmm(direction.unsqueeze(1), centred)[:, 0]  # (N, S)
    else:  # fewer points than channels: the S x S Gram matrix, projection = sqrt(lambda_1) u_1
        values, vectors = torch.linalg.eigh(torch.bmm(wide.transpose(1, 2), wide))
        projection = (vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()).to(flat.dtype)
    mean_map = flat.mean(dim=1)
    agreement = (projection * (mean_map - mean_map.mean(dim=1, keepdim=True))).sum(dim=1, keepdim=True)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
    return torch.relu(sign * projection).reshape((n,) + tuple(features.shape[2:]))


def _eigencam(request):
    if request.full_cam_pass:  # another method of the request needs the backward: share its pass
        result = request.cam_pass(backward=False)
    else:
        with torch.inference_mode():  # forward only: no graph behind the captured layer
            result = request.cam_pass(backward=False)
    return request.per_layer(lambda name, _: principal_component_map(result.activations[name]))


def _eigengradcam(request):
    result = request.cam_pass()
    return request.per_layer(
        lambda name, _: principal_component_map(result.activations[name] * result.gradients[name]))


register(MethodInfo(
    "eigencam", "Eigen-CAM: first principal component of the layer's activations (class-agnostic)",
    compute=_eigencam, family="activation", cost="1 forward", layer_map_only=True,
    needs_gradients=False, needs_output=False,
))
register(MethodInfo(
    "eigengradcam", "Eigen-Grad-CAM: first principal component of activations x gradients",
    compute=_eigengradcam, layer_map_only=True,
))
