"""Noisy linear imputation (Rong et al., ICML 2022), 2D and 3D, batched, on the tensor's device.

ROAD removes voxels by *imputing* them from their neighbours instead of
painting them with a constant: a constant patch has a shape, and the shape
alone tells the model which voxels were removed (the class information leaks
through the mask).  Each removed voxel takes the weighted mean of its
neighbours, removed ones included, which is a sparse linear system per image
and channel: for every removed voxel i

    sum_j w_ij * (v_i - v_j) = 0     (j: neighbours inside the image)

with the kept voxels fixed to their values.  The neighbourhood is the 8
(2D) or 26 (3D) surrounding voxels, weighted by 1 / (number of axes the
offset moves along): in 2D that is the ROAD paper's 1/6 for edge and 1/12 for
corner neighbours up to a common factor, which the equations do not see.
Neighbours outside the image are left out, not padded.  Gaussian noise of
standard deviation ``noise`` is then added to the imputed voxels.

The system is symmetric positive definite whenever at least one voxel is
kept, so it is solved matrix-free by conjugate gradients with the stencil as
a convolution (Jacobi preconditioned), all images of a batch at once, in
float64 for float64 input and float32 otherwise (a 27-point stencil costs a
quarter as much in float32; it is solved to a relative residual of 1e-6).
Quantus factorises a scipy sparse matrix per image instead: the same
solution, which does not scale to volumes.
"""
from __future__ import annotations

import itertools
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["neighbour_kernel", "noisy_linear_imputation"]

#: Relative residual at which conjugate gradients stop, per working precision.
_RELATIVE_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-6}


def neighbour_kernel(spatial_dims: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(1, 1, 3, ..., 3) stencil weights: 1 / (axes moved) for every neighbour, 0 at the centre."""
    kernel = torch.zeros((3,) * spatial_dims, dtype=dtype, device=device)
    for offset in itertools.product((-1, 0, 1), repeat=spatial_dims):
        moved = sum(1 for step in offset if step)
        if moved:
            kernel[tuple(step + 1 for step in offset)] = 1.0 / moved
    return kernel[None, None]


def _seeded_noise(shape, seeds: torch.Tensor, dtype) -> torch.Tensor:
    """Standard normal noise, one generator per copy, so results do not depend on batching."""
    generator = torch.Generator()
    draws = []
    for seed in seeds.tolist():
        generator.manual_seed(int(seed))
        draws.append(torch.randn(shape, generator=generator, dtype=dtype))
    return torch.stack(draws)


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            seeds: Optional[torch.Tensor] = None, max_iterations: Optional[int] = None,
                            ) -> torch.Tensor:
    """Copies of ``x`` (M, C, *S) with the ``removed`` voxels (M, *S) imputed from their neighbours.

    Every channel of a removed voxel is imputed; kept voxels are returned
    unchanged.  ``noise`` is the standard deviation of the Gaussian noise
    added to imputed values (0 gives the plain linear imputation);
    ``seeds`` (M,) seed each copy's noise (default 0, 1, ..., M - 1).  Each
    copy must keep at least one voxel: with nothing left there is nothing to
    impute from.
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
        raise ValueError(f"x must be a tensor (M, C, H, W) or (M, C, D, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    removed = torch.as_tensor(removed, device=x.device).bool()
    if tuple(removed.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"removed must have shape {(x.shape[0], *x.shape[2:])} (one mask per copy, no "
                         f"channel axis), got {tuple(removed.shape)}")
    noise = float(noise)
    if noise < 0:
        raise ValueError(f"noise is a standard deviation and must be >= 0, got {noise}")
    m, channels, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    flat = removed.reshape(m, -1)
    full = torch.nonzero(flat.all(dim=1)).flatten().tolist()
    if full:
        raise ValueError(f"copies {full} remove every voxel: imputation needs at least one kept voxel")
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    kernel = neighbour_kernel(len(spatial), dtype=work, device=x.device)

    def neighbours(values: torch.Tensor) -> torch.Tensor:
        return conv(values, kernel, padding=1)

    unknown = removed.unsqueeze(1).expand(m, channels, *spatial).reshape(m * channels, 1, *spatial)
    values = x.detach().to(work).reshape(m * channels, 1, *spatial)
    # Sum of the weights of each voxel's in-image neighbours: the diagonal of the system.
    diagonal = neighbours(torch.ones((1, 1, *spatial), dtype=work, device=x.device))
    unknown_f = unknown.to(work)
    rhs = unknown_f * neighbours(values * (1.0 - unknown_f))

    def operator(v: torch.Tensor) -> torch.Tensor:
        return unknown_f * (diagonal * v - neighbours(v))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).flatten(1).sum(dim=1).view(-1, *([1] * (a.dim() - 1)))

    solution = torch.zeros_like(values)
    residual = rhs.clone()
    direction = residual / diagonal
    rz = dot(residual, direction)
    target = (_RELATIVE_TOLERANCE[work] * dot(rhs, rhs).sqrt()).flatten()
    limit = max_iterations if max_iterations is not None else 20 * max(spatial) + 200
    for _ in range(limit):
        # A converged system stops moving, so its result does not depend on which others share its batch.
        active = (dot(residual, residual).sqrt().flatten() > target).view_as(rz)
        if not bool(active.any()):
            break
        applied = operator(direction)
        curvature = dot(direction, applied)
        step = torch.where(active & (curvature > 0), rz / curvature.clamp_min(torch.finfo(work).tiny),
                           torch.zeros_like(rz))
        solution = solution + step * direction
        residual = residual - step * applied
        preconditioned = residual / diagonal
        rz_next = dot(residual, preconditioned)
        ratio = torch.where(rz > 0, rz_next / rz.clamp_min(torch.finfo(work).tiny), torch.zeros_like(rz))
        direction = preconditioned + ratio * direction
        rz = rz_next
    if noise > 0:
        seeds = torch.arange(m) if seeds is None else torch.as_tensor(seeds).flatten()
        if seeds.numel() != m:
            raise ValueError(f"seeds must give one seed per copy ({m}), got {seeds.numel()}")
        draws = _seeded_noise((channels, *spatial), seeds, work).to(x.device)
        solution = solution + noise * draws.reshape(m * channels, 1, *spatial) * unknown_f
    imputed = torch.where(unknown, solution, values)
    return imputed.reshape(x.shape).to(x.dtype)
