"""Transformer layer outputs as channels-first grids, so the CAM formulas apply unchanged.

The map formulas read a layer's activation A and its gradient dA as (N, C, *grid). A
transformer layer gives tokens (N, L, C), with or without a leading class token, and
Swin-style blocks give channels-last grids (N, *S, C). When the grid follows from the
input's spatial size (L or L - 1 equals the product of input size / patch size, or
S equals the input size over a whole number of patches), the output is read as that
grid automatically; a ``reshape`` callable covers any other layout.

The grid is what the capture differentiates to: the layer's output is replaced by a
tensor rebuilt from the grid (the class token kept as it was), so ``autograd.grad``
with respect to the grid gives dA in the same (N, C, *grid) layout, for every method.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

_CONV_TYPES = (nn.Conv2d, nn.Conv3d)
_PATCH_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple | None]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TokenOptions:
    """How token layers are read: an explicit patch size and/or a ``reshape`` callable."""

    patch_size: tuple[int, ...] | None = None
    reshape: Callable | None = None

    @classmethod
    def from_options(cls, patch_size=None, reshape=None) -> "TokenOptions":
        if reshape is not None and not callable(reshape):
            raise TypeError(f"option reshape must be a callable (layer output -> (N, C, *grid)), "
                            f"got {type(reshape).__name__}")
        if patch_size is not None:
            sizes = (patch_size,) if isinstance(patch_size, int) else patch_size
            if (not isinstance(sizes, (tuple, list)) or not sizes
                    or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)):
                raise ValueError(f"option token_patch_size must be a positive int or one positive int per "
                                 f"spatial axis, got {patch_size!r}")
            patch_size = tuple(int(s) for s in sizes)
        return cls(patch_size=patch_size, reshape=reshape)

    def patch_for(self, model: nn.Module, spatial_dims: int) -> tuple[int, ...] | None:
        """The token patch size: the option, else the model's patch-embedding convolution."""
        if self.patch_size is None:
            return model_patch_size(model, spatial_dims)
        if len(self.patch_size) == 1:
            return self.patch_size * spatial_dims
        if len(self.patch_size) != spatial_dims:
            raise ValueError(f"option token_patch_size has {len(self.patch_size)} values but the input has "
                             f"{spatial_dims} spatial axes")
        return self.patch_size


def model_patch_size(model: nn.Module, spatial_dims: int) -> tuple[int, ...] | None:
    """Kernel of the first convolution whose stride equals its kernel (> 1): a patch embedding."""
    if model in _PATCH_CACHE:
        patch = _PATCH_CACHE[model]
    else:
        patch = None
        for module in model.modules():
            if (isinstance(module, _CONV_TYPES) and tuple(module.stride) == tuple(module.kernel_size)
                    and max(module.kernel_size) > 1):
                patch = tuple(module.kernel_size)
                break
        _PATCH_CACHE[model] = patch
    return patch if patch is not None and len(patch) == spatial_dims else None


def _stride_of(grid: tuple[int, ...], spatial: tuple[int, ...], patch: tuple[int, ...]) -> int | None:
    """The whole number f with spatial == grid * patch * f on every axis, or None."""
    if len(grid) != len(spatial) or any(g < 1 for g in grid):
        return None
    ratios = set()
    for g, s, p in zip(grid, spatial, patch):
        if s % (g * p):
            return None
        ratios.add(s // (g * p))
    return ratios.pop() if len(ratios) == 1 else None


def follows(grid: tuple[int, ...], spatial: tuple[int, ...], patch: tuple[int, ...] | None) -> bool:
    """Whether ``grid`` is the input's ``spatial`` size over a whole number of (patches of) voxels."""
    ones = (1,) * len(spatial)
    return _stride_of(grid, spatial, ones) is not None or (
        patch is not None and _stride_of(grid, spatial, patch) is not None)


def _token_grids(count: int, spatial: tuple[int, ...], patch: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """Grids with ``count`` cells that follow from the input: spatial / (patch * f) for a whole f."""
    grids = []
    for base_patch in ([patch] if patch is not None else []) + [(1,) * len(spatial)]:
        if any(s % p for s, p in zip(spatial, base_patch)):
            continue
        base = tuple(s // p for s, p in zip(spatial, base_patch))
        ratio = math.prod(base) / count if count else 0
        f = round(ratio ** (1 / len(spatial))) if ratio >= 1 else 0
        if f >= 1 and f ** len(spatial) * count == math.prod(base) and all(b % f == 0 for b in base):
            grid = tuple(b // f for b in base)
            if grid not in grids:
                grids.append(grid)
        if grids:
            break
    return grids


class TokenLayout:
    """Tokens (N, L, C) with ``prefix`` leading non-grid tokens (a class token) <-> (N, C, *grid)."""

    def __init__(self, grid: tuple[int, ...], prefix: int):
        self.grid, self.prefix = grid, prefix

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.prefix:]
        return patches.transpose(1, 2).reshape((tokens.shape[0], tokens.shape[2]) + self.grid)

    def from_grid(self, grid: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        patches = grid.flatten(2).transpose(1, 2)
        if self.prefix:
            return torch.cat([original[:, :self.prefix], patches], dim=1)
        return patches.clone(memory_format=torch.contiguous_format)

    def describe(self) -> str:
        token = " after a class token" if self.prefix == 1 else ""
        return f"tokens{token} on a {' x '.join(map(str, self.grid))} grid"


class ChannelsLastLayout:
    """(N, *S, C) <-> (N, C, *S)."""

    def to_grid(self, output: torch.Tensor) -> torch.Tensor:
        return output.movedim(-1, 1)

    def from_grid(self, grid: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return grid.movedim(1, -1).clone(memory_format=torch.contiguous_format)

    def describe(self) -> str:
        return "a channels-last grid"


class CallableLayout:
    """A user's ``reshape`` (output -> (N, C, *grid)) that only selects and rearranges elements.

    Its adjoint, taken with autograd, puts a grid back into the output's layout (the
    elements the reshape drops, such as a class token, keep their values), which is the
    exact inverse for such a rearrangement; anything else is refused.
    """

    def __init__(self, reshape: Callable):
        self.reshape = reshape

    def to_grid(self, output: torch.Tensor) -> torch.Tensor:
        grid = self.reshape(output)
        if not isinstance(grid, torch.Tensor) or grid.dim() < 3 or grid.shape[0] != output.shape[0]:
            shape = tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__
            raise ValueError(f"the reshape option turned a layer output {tuple(output.shape)} into {shape}; "
                             "it must return (N, C, *grid) with the same N")
        return grid

    def from_grid(self, grid: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            probe = original.detach().requires_grad_(True)
            selected = self.to_grid(probe)
            (placed,) = torch.autograd.grad(selected, probe, grad_outputs=grid, create_graph=True)
            (covered,) = torch.autograd.grad(selected, probe, grad_outputs=torch.ones_like(selected))
        if not torch.all((covered == 0) | (covered == 1)):
            raise ValueError("the reshape option must only select and rearrange the layer's elements "
                             "(slicing, transpose, reshape), each at most once")
        return placed + original.detach() * (1 - covered)

    def describe(self) -> str:
        return "the reshape option"


def layout_for(shape: tuple[int, ...], spatial: tuple[int, ...], batch: int, patch: tuple[int, ...] | None,
               reshape: Callable | None = None):
    """The layout that reads an output of ``shape`` as (N, C, *grid), None for channels-first.

    Raises when a 3-dim (token) output has no grid that follows from the input, or more than
    one (class token or not), with what to pass instead.
    """
    if reshape is not None:
        return CallableLayout(reshape)
    dims = len(spatial)
    if len(shape) < 3 or shape[0] != batch:
        return None
    if len(shape) == dims + 2:
        if follows(tuple(shape[2:]), spatial, patch) or not follows(tuple(shape[1:-1]), spatial, patch):
            return None
        return ChannelsLastLayout()
    if len(shape) != 3 or dims < 2:
        return None
    length = shape[1]
    options = [(grid, prefix) for prefix in (0, 1) for grid in _token_grids(length - prefix, spatial, patch)]
    if len(options) == 1:
        return TokenLayout(*options[0])
    found = "several grids" if options else "no grid"
    raise ValueError(
        f"an output of {length} tokens fits {found} of an input with spatial size {spatial}"
        f"{f' and patch size {patch}' if patch else ''} (L or L - 1 tokens = product of input size / patch "
        "size); pass token_patch_size= the model's patch size, or reshape= a callable that returns (N, C, *grid)"
    )
