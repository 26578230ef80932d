"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018).

A map that explains the *model* must change when the model's weights are
destroyed.  Starting from the top (output side), layers of a deep copy are
re-initialised one after another (cascading: stage i has the top i + 1
layers randomised), a map is computed at each stage with the same method,
layer and frozen target, and its Spearman rank correlation with the trained
model's map is reported.  Correlations that stay near 1 reveal a method that
reflects the input (edges, intensity) rather than what the model learned.
The caller's model is never modified.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..engine import explain, resolve_target
from ..engine.interrupt import checkpoint
from ._checks import as_maps, check_input
from ._model import check_model, frozen_inference

__all__ = ["SanityResult", "sanity_randomization", "rank_correlation", "parameterized_layers"]


@dataclass(frozen=True)
class SanityResult:
    """Rank correlations of the maps along the cascade.

    ``layers`` lists the randomised layers, top first; ``correlation[i, n]``
    is the Spearman correlation for sample n after randomising
    ``layers[: i + 1]``.
    """

    layers: List[str]
    correlation: torch.Tensor  # (L, N)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks of a 1-D tensor, ties sharing their average rank (as Spearman requires)."""
    ordered, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() + 1.0) / 2.0
    ranks = torch.empty_like(average[inverse])
    ranks[order] = average[inverse]
    return ranks


def rank_correlation(maps_a, maps_b) -> torch.Tensor:
    """Spearman rank correlation per sample between two stacks of maps (N, *S).

    A constant map has no ranking to share, so its correlation is 0 (not NaN):
    a randomised model whose map collapses to zeros counts as "changed".
    """
    maps_a, maps_b = as_maps(maps_a, "maps_a"), as_maps(maps_b, "maps_b")
    if maps_a.shape != maps_b.shape:
        raise ValueError(f"maps_a {tuple(maps_a.shape)} and maps_b {tuple(maps_b.shape)} must have the same shape")
    maps_b = maps_b.to(maps_a.device)
    result = torch.zeros(maps_a.shape[0], dtype=torch.float64, device=maps_a.device)
    for i, (a, b) in enumerate(zip(maps_a.reshape(maps_a.shape[0], -1), maps_b.reshape(maps_b.shape[0], -1))):
        ra = _average_ranks(a.double())
        rb = _average_ranks(b.double())
        ra, rb = ra - ra.mean(), rb - rb.mean()
        norm = torch.sqrt((ra * ra).sum() * (rb * rb).sum())
        if norm > 0:
            result[i] = (ra * rb).sum() / norm
    return result.to(maps_a.dtype)


def parameterized_layers(model: nn.Module, x: torch.Tensor) -> List[str]:
    """Names of the modules owning parameters, in the order the forward pass runs them.

    Registration order can differ from execution order (a head defined before
    the backbone), so the order is recorded from one forward pass.
    """
    owners = {name: module for name, module in model.named_modules()
              if any(True for _ in module.parameters(recurse=False))}
    order: List[str] = []
    handles = []

    def recorder(name):
        def hook(module, inputs, output):
            if name not in order:
                order.append(name)
        return hook

    for name, module in owners.items():
        handles.append(module.register_forward_hook(recorder(name)))
    try:
        with frozen_inference(model, x) as forward:
            forward(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return order


def _layer_seed(seed: int, name: str) -> int:
    """A seed per (user seed, layer name).

    Seeding every layer with the plain user seed (often 0) could replay the
    very draws that initialised an untrained model built under that seed, and
    "randomising" would then restore the same weights.
    """
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) + 0x5EED) % (2 ** 63)


def _randomize(module: nn.Module, seed: int) -> None:
    """Re-initialise the module's own parameters with a seeded generator.

    The module's ``reset_parameters`` is its own initialiser (random for
    convolutions and linear layers; identity scale and zero statistics for
    normalisation layers).  Modules without one get normal draws with the
    spread of the trained weights.
    """
    devices = sorted({p.device.index or 0 for p in module.parameters(recurse=False) if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for param in module.parameters(recurse=False):
            spread = float(param.std()) if param.numel() > 1 else 0.0
            param.normal_(0.0, spread if spread > 0 else 0.01)


def _layer_names(model: nn.Module, layer):
    """Translate module objects in a layer spec into names, valid on a deep copy."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name
        raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
    if isinstance(layer, (list, tuple)):
        return [_layer_names(model, item) for item in layer]
    return layer


def _frozen_target(model: nn.Module, x: torch.Tensor, target):
    """Class indices predicted by the *trained* model, so random models explain the same class."""
    if hasattr(target, "bind"):
        return target
    with frozen_inference(model, x) as forward:
        bound = resolve_target(target, forward(x))
    classes = getattr(bound, "classes", None)
    return target if classes is None else classes


def sanity_randomization(model: nn.Module, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
                         maps=None, layers: Optional[Sequence[str]] = None, seed: int = 0,
                         **options) -> SanityResult:
    """Cascading randomisation from the top layer; Spearman correlation at each stage.

    ``method``, ``layer`` and ``options`` are passed to ``explain`` exactly as
    for the trained model.  ``maps`` are the trained model's maps (computed
    when None).  ``layers`` sets the cascade (names, top first); by default
    every module owning parameters, in reverse execution order.  Each
    stage costs one explanation.
    """
    check_model(model)
    if maps is None:
        maps = explain(model, x, method, target=target, layer=layer, **options)
    maps = as_maps(maps)
    x = check_input(x, maps)
    order = parameterized_layers(model, x)
    if layers is None:
        cascade = order[::-1]
    else:
        cascade = list(layers)
        unknown = [name for name in cascade if name not in order]
        if unknown:
            raise ValueError(
                f"layers {unknown} own no parameters used in the forward pass; choose from: {order[::-1]}"
            )
    if not cascade:
        raise ValueError("the model has no parameters to randomise")
    frozen = _frozen_target(model, x, target)
    layer_spec = _layer_names(model, layer)
    try:
        randomized = copy.deepcopy(model)
    except Exception as error:  # deepcopy of arbitrary user modules can fail in many ways
        raise TypeError(f"the sanity check works on a deep copy of the model, which failed: {error}") from error
    modules = dict(randomized.named_modules())
    correlations = []
    for name in cascade:
        checkpoint()  # cancel / heartbeat hook (engine/interrupt.py)
        _randomize(modules[name], _layer_seed(seed, name))
        random_maps = explain(randomized, x, method, target=frozen, layer=layer_spec, **options)
        correlations.append(rank_correlation(maps, random_maps.to(maps.device)))
    return SanityResult(layers=cascade, correlation=torch.stack(correlations))
