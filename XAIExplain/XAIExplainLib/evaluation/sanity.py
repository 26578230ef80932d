"""Randomisation sanity checks: model parameters (Adebayo et al., NeurIPS 2018) and logits (Sixt et al.).

A map that explains the *model* must change when the model's weights are
destroyed.  Starting from the top (output side), layers of a deep copy are
re-initialised one after another (cascading: stage i has the top i + 1
layers randomised), a map is computed at each stage with the same method,
layer and frozen target, and its Spearman rank correlation with the trained
model's map is reported.  Correlations that stay near 1 reveal a method that
reflects the input (edges, intensity) rather than what the model learned.
``parameter_randomization`` randomises one layer at a time instead
(independent), and ``random_logit`` explains a random other class of the same
trained model.  The caller's model is never modified.
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
from ._scoring import FrozenTarget, check_batch, target_classes

__all__ = [
    "SanityResult", "sanity_randomization", "parameter_randomization", "rank_correlation", "parameterized_layers",
    "RandomLogitResult", "random_logit",
]


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


def _randomization_setup(model, x, method, target, layer, maps, layers, options):
    """Checked inputs shared by the randomisation tests: maps, x, layer order, frozen target, layer spec."""
    check_model(model)
    if maps is None:
        maps = explain(model, x, method, target=target, layer=layer, **options)
    maps = as_maps(maps)
    x = check_input(x, maps)
    order = parameterized_layers(model, x)
    if layers is None:
        chosen = order[::-1]
    else:
        chosen = list(layers)
        unknown = [name for name in chosen if name not in order]
        if unknown:
            raise ValueError(
                f"layers {unknown} own no parameters used in the forward pass; choose from: {order[::-1]}"
            )
    if not chosen:
        raise ValueError("the model has no parameters to randomise")
    return maps, x, chosen, _frozen_target(model, x, target), _layer_names(model, layer)


def _deep_copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as error:  # deepcopy of arbitrary user modules can fail in many ways
        raise TypeError(f"the sanity check works on a deep copy of the model, which failed: {error}") from error


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
    maps, x, cascade, frozen, layer_spec = _randomization_setup(model, x, method, target, layer, maps, layers,
                                                                 options)
    randomized = _deep_copy(model)
    modules = dict(randomized.named_modules())
    correlations = []
    for name in cascade:
        checkpoint()  # cancel / heartbeat hook (engine/interrupt.py)
        _randomize(modules[name], _layer_seed(seed, name))
        random_maps = explain(randomized, x, method, target=frozen, layer=layer_spec, **options)
        correlations.append(rank_correlation(maps, random_maps.to(maps.device)))
    return SanityResult(layers=cascade, correlation=torch.stack(correlations))


def parameter_randomization(model: nn.Module, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
                            maps=None, layers: Optional[Sequence[str]] = None, seed: int = 0,
                            **options) -> SanityResult:
    """Independent randomisation: one layer at a time, the others trained; Spearman per layer.

    The model-parameter randomisation test of Adebayo et al. in its
    "independent" form (Quantus's ``layer_order="independent"``): where the
    cascade asks whether the map survives destroying the network from the top
    down, this asks which single layers the map depends on.  A layer is
    re-initialised exactly as in the cascade (same seed per layer name), the
    map recomputed, and the layer restored (parameters and buffers) before the
    next.  Arguments as for ``sanity_randomization``; ``layers`` lists the
    layers to test (default: every module owning parameters, top first).
    """
    maps, x, chosen, frozen, layer_spec = _randomization_setup(model, x, method, target, layer, maps, layers,
                                                                options)
    randomized = _deep_copy(model)
    modules = dict(randomized.named_modules())
    correlations = []
    for name in chosen:
        module = modules[name]
        trained = {key: value.clone() for key, value in module.state_dict().items()}
        _randomize(module, _layer_seed(seed, name))
        random_maps = explain(randomized, x, method, target=frozen, layer=layer_spec, **options)
        module.load_state_dict(trained)
        correlations.append(rank_correlation(maps, random_maps.to(maps.device)))
    return SanityResult(layers=chosen, correlation=torch.stack(correlations))


@dataclass(frozen=True)
class RandomLogitResult:
    """The explained and the randomly drawn other class per sample, and their maps' Spearman correlation."""

    classes: torch.Tensor  # (N,)
    other_classes: torch.Tensor  # (N,)
    correlation: torch.Tensor  # (N,)


def _other_classes(classes: torch.Tensor, n_classes: int, other_classes, seed: int) -> torch.Tensor:
    """One class per sample other than its own: drawn uniformly (seeded) or checked when given."""
    if other_classes is None:
        generator = torch.Generator().manual_seed(int(seed))
        draw = torch.randint(0, n_classes - 1, (classes.numel(),), generator=generator)
        return draw + (draw >= classes).long()
    other = torch.as_tensor(other_classes).long().flatten()
    if other.numel() != classes.numel():
        raise ValueError(f"other_classes gives {other.numel()} classes for {classes.numel()} samples")
    if bool(((other < 0) | (other >= n_classes)).any()):
        raise ValueError(f"other_classes must lie in 0..{n_classes - 1}, got {other.tolist()}")
    same = torch.nonzero(other == classes).flatten().tolist()
    if same:
        raise ValueError(f"other_classes equals the explained class for sample(s) {same}; pick another class")
    return other


def random_logit(model: nn.Module, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
                 maps=None, other_classes=None, seed: int = 0, **options) -> RandomLogitResult:
    """Random-logit test (Sixt et al., ICML 2020): the map of a random other class should differ.

    Each sample's target is bound on the model's output (None: the predicted
    class); a different class is drawn per sample (uniformly among the other
    K - 1, seeded; or ``other_classes``), explained with the same method,
    layer, options and, for a segmentation target, the same frozen region,
    and the Spearman correlation of the two maps is returned (low: the
    explanation depends on which class is explained).  ``maps`` are the
    target's maps (computed when None).
    """
    check_model(model)
    check_batch(x)
    with frozen_inference(model, x) as forward:
        output = forward(x)
        bound = resolve_target(target, output)
    n_classes = output.shape[1]
    if n_classes < 2:
        raise ValueError("the random-logit test needs a model with at least two output classes; this one has 1")
    classes = target_classes(bound, "the random-logit test").cpu()
    if maps is None:
        maps = explain(model, x, method, target=FrozenTarget(bound), layer=layer, **options)
    maps = as_maps(maps)
    check_input(x, maps)
    other = _other_classes(classes, n_classes, other_classes, seed)
    other_bound = copy.copy(bound)
    other_bound.classes = other.to(torch.as_tensor(bound.classes).device)
    other_maps = explain(model, x, method, target=FrozenTarget(other_bound), layer=layer, **options)
    return RandomLogitResult(classes=classes, other_classes=other,
                             correlation=rank_correlation(maps, other_maps.to(maps.device)))
