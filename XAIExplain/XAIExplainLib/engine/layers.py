"""Finding the layer to explain: by dotted name, by module, or automatically.

The automatic choice probes the model once with a single sample and remembers the
answer per model and input layout, so a volume explained batch by batch probes once.
"""
from __future__ import annotations

import weakref
from typing import Iterable, Sequence, Union

import torch
from torch import nn

from .decoder_layers import decoder_layers
from .probe import probe_outputs

LayerSpec = Union[None, str, nn.Module, Sequence[Union[str, nn.Module]]]

_DEFAULT_LAYER_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _shown(names: Iterable[str], limit: int = 40) -> str:
    names = list(names)
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError(
        f"the layer {type(module).__name__} passed as a module is not part of this model; "
        "pass one of the model's own submodules or its dotted name"
    )


def resolve_one(model: nn.Module, layer: Union[str, nn.Module]) -> tuple[str, nn.Module]:
    """(name, module) for a dotted name or a submodule; errors list the available names."""
    if isinstance(layer, nn.Module):
        return module_name(model, layer), layer
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be a dotted module name (str), a submodule, a list of them, or None; "
            f"got {type(layer).__name__}"
        )
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        raise ValueError(
            f"the model has no layer named '{layer}'; available layers: {_shown(n for n in modules if n)}"
        )
    return layer, modules[layer]


def resolve_layers(model: nn.Module, layer: LayerSpec, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Resolve a layer spec to a non-empty list of (name, module); None picks the default layer.

    ``"decoder"`` means every post-bottleneck convolution of a U-Net-like model (see
    decoder_layers.decoder_layers), also when the model has a submodule named "decoder".
    """
    if isinstance(layer, str) and layer == "decoder":
        return [resolve_one(model, name) for name in decoder_layers(model, x)]
    if layer is None:
        return [resolve_one(model, default_layer(model, x))]
    if isinstance(layer, (str, nn.Module)):
        return [resolve_one(model, layer)]
    if isinstance(layer, Sequence) and len(layer) > 0:
        resolved = [resolve_one(model, item) for item in layer]
        names = [name for name, _ in resolved]
        if len(set(names)) != len(names):
            raise ValueError(f"layer list names a layer twice: {names}")
        return resolved
    raise TypeError(
        f"layer must be a dotted module name, a submodule, a non-empty list of them, or None; got {layer!r}"
    )


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Layers whose output keeps spatial dims (more than one voxel), in execution order, with shapes.

    The model's own output tensor is left out (explaining the logits layer of a
    segmenter says little); a module that runs several times is listed once.
    """
    order, _ = probe_outputs(model, x)
    seen, result = set(), []
    for name, shape, is_model_output in order:
        if len(shape) != x.dim() or torch.Size(shape[2:]).numel() <= 1 or is_model_output or name in seen:
            continue
        seen.add(name)
        result.append((name, shape))
    return result


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The last layer (in execution order) with spatial output that is not the model's output."""
    key = (x.dim(), x.shape[1])
    cached = _DEFAULT_LAYER_CACHE.get(model, {})
    if key in cached:
        return cached[key]
    candidates = spatial_layers(model, x)
    if not candidates:
        raise ValueError(
            "the model has no layer with spatial output to explain; layer-based methods need a convolutional "
            "layer (use an input-gradient method such as 'saliency' instead)"
        )
    name = candidates[-1][0]
    _DEFAULT_LAYER_CACHE.setdefault(model, {})[key] = name
    return name


def list_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the layers one can explain: with an example input, only those with spatial output."""
    if x is None:
        return [name for name, _ in model.named_modules() if name]
    return [name for name, _ in spatial_layers(model, x)]
