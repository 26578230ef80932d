"""Eigen-CAM, KPCA-CAM and Eigen-Grad-CAM: the first (kernel) principal component of a layer's activations.

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

KPCA-CAM (Karmani et al. 2024, in pytorch-grad-cam) replaces the linear kernel by a
sigmoid (default), RBF, polynomial or cosine kernel between the S positions: scikit-learn's
``KernelPCA(n_components=1)`` on the centred points, with the same sign rule and ReLU. Its
S x S kernel matrix limits it to layers of at most ``KPCA_MAX_POSITIONS`` positions (a
deep 2D layer or a coarse 3D one); a finer layer is refused with that reason.
"""
from __future__ import annotations

import math

import torch

from ..options import choice
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
    return _sign_fixed_relu(projection, flat).reshape((n,) + tuple(features.shape[2:]))


def _sign_fixed_relu(projection: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """ReLU of the (N, S) projection, its sign chosen to correlate positively with the channel-mean map."""
    mean_map = flat.mean(dim=1)
    agreement = (projection * (mean_map - mean_map.mean(dim=1, keepdim=True))).sum(dim=1, keepdim=True)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
    return torch.relu(sign * projection)


#: Positions above which KPCA-CAM's positions x positions kernel matrix (and its eigendecomposition,
#: cubic in it) is refused.
KPCA_MAX_POSITIONS = 4096
KPCA_KERNELS = ("sigmoid", "rbf", "poly", "cosine", "linear")


def _kernel_matrix(points: torch.Tensor, kernel: str, gamma: float) -> torch.Tensor:
    """(N, S, S) kernel between the S points of each sample (scikit-learn's definitions, coef0=1, degree 3)."""
    gram = torch.bmm(points, points.transpose(1, 2))
    if kernel == "linear":
        return gram
    if kernel == "sigmoid":
        return torch.tanh(gamma * gram + 1.0)
    if kernel == "poly":
        return (gamma * gram + 1.0) ** 3
    if kernel == "rbf":
        squared = points.pow(2).sum(dim=2)
        return torch.exp(-gamma * (squared[:, :, None] + squared[:, None, :] - 2 * gram).clamp_min(0))
    norms = points.norm(dim=2).clamp_min(1e-300)  # cosine
    return gram / (norms[:, :, None] * norms[:, None, :])


def kernel_component_map(features: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> torch.Tensor:
    """ReLU of the first kernel principal component of (N, K, *s) features, sign-fixed: (N, *s).

    As scikit-learn's ``KernelPCA(n_components=1)`` on the centred S x K points: the kernel
    matrix is double-centred, its top eigenvector alpha scaled by sqrt(lambda) is the
    projection of every position (zero where lambda <= 0).
    """
    n, k = features.shape[:2]
    flat = features.detach().reshape(n, k, -1)  # (N, K, S)
    positions = flat.shape[2]
    if positions > KPCA_MAX_POSITIONS:
        raise ValueError(
            f"kpcacam builds a positions x positions kernel matrix; this layer has {positions} positions "
            f"({' x '.join(map(str, features.shape[2:]))}), more than the {KPCA_MAX_POSITIONS} it accepts; "
            "choose a deeper (coarser) layer, or eigencam (the same idea with a linear kernel, any size)")
    points = (flat - flat.mean(dim=2, keepdim=True)).transpose(1, 2).double()  # (N, S, K), centred
    matrix = _kernel_matrix(points, kernel, 1.0 / k if gamma is None else gamma)
    matrix = (matrix - matrix.mean(dim=1, keepdim=True) - matrix.mean(dim=2, keepdim=True)
              + matrix.mean(dim=(1, 2), keepdim=True))
    values, vectors = torch.linalg.eigh(matrix)  # ascending
    projection = (vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()).to(flat.dtype)
    return _sign_fixed_relu(projection, flat).reshape((n,) + tuple(features.shape[2:]))


def _forward_only_pass(request):
    """The layers' activations: the request's shared pass when another method needs the backward,
    else a forward under inference mode (no graph behind the captured layer)."""
    if request.full_cam_pass:
        return request.cam_pass(backward=False)
    with torch.inference_mode():
        return request.cam_pass(backward=False)


def _eigencam(request):
    result = _forward_only_pass(request)
    return request.per_layer(lambda name, _: principal_component_map(result.activations[name]))


def _kpcacam(request):
    kernel = choice(request.options, "kernel", "sigmoid", KPCA_KERNELS)
    gamma = request.options.get("gamma")
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float))
                              or not (gamma > 0 and math.isfinite(gamma))):
        raise ValueError(f"option gamma (the kernel's scale) must be a positive number or None (1 / channels), "
                         f"got {gamma!r}")
    result = _forward_only_pass(request)
    return request.per_layer(lambda name, _: kernel_component_map(result.activations[name], kernel, gamma))


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
    "kpcacam", "KPCA-CAM: first kernel principal component of the layer's activations (class-agnostic)",
    compute=_kpcacam, family="activation", cost="1 forward + a positions^2 kernel", layer_map_only=True,
    needs_gradients=False, needs_output=False, options=("kernel", "gamma"),
))
register(MethodInfo(
    "eigengradcam", "Eigen-Grad-CAM: first principal component of activations x gradients",
    compute=_eigengradcam, layer_map_only=True,
))
