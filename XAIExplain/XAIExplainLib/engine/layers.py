"""Finding the layer to explain: by dotted name, by module, or automatically.

The automatic choice probes the model once with a single sample and remembers the
answer per model and input layout, so a volume explained batch by batch probes once.
"""
from __future__ import annotations

import math
import weakref
from typing import Iterable, Sequence, Union

import torch
from torch import nn

from .decoder_layers import decoder_layers
from .probe import probe_outputs
from .tokens import TokenLayout, TokenOptions, layout_for

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


def resolve_layers(model: nn.Module, layer: LayerSpec, x: torch.Tensor,
                   tokens: TokenOptions | None = None) -> list[tuple[str, nn.Module]]:
    """Resolve a layer spec to a non-empty list of (name, module); None picks the default layer.

    ``"decoder"`` means every post-bottleneck convolution of a U-Net-like model (see
    decoder_layers.decoder_layers), also when the model has a submodule named "decoder".
    ``tokens`` (the token_patch_size option) lets the default choice see transformer layers.
    """
    if isinstance(layer, str) and layer == "decoder":
        return [resolve_one(model, name) for name in decoder_layers(model, x)]
    if layer is None:
        return [resolve_one(model, default_layer(model, x, tokens))]
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


def _grid_layout(model: nn.Module, x: torch.Tensor, shape: tuple[int, ...], tokens: TokenOptions | None):
    """The token / channels-last layout of a probed output shape, or None (channels-first or no grid)."""
    patch = (tokens or TokenOptions()).patch_for(model, x.dim() - 2)
    try:
        return layout_for(shape, tuple(x.shape[2:]), 1, patch)
    except ValueError:
        return None


def spatial_layers(model: nn.Module, x: torch.Tensor,
                   tokens: TokenOptions | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Layers whose output keeps spatial dims (more than one voxel), in execution order, with shapes.

    Channels-first maps (N, C, *S) count, and so do transformer tokens and channels-last
    grids whose grid follows from the input (:mod:`.tokens`). The model's own output
    tensor is left out (explaining the logits layer of a segmenter says little); a module
    that runs several times is listed once.
    """
    order, _ = probe_outputs(model, x)
    seen, result = set(), []
    for name, shape, is_model_output in order:
        if is_model_output or name in seen:
            continue
        layout = _grid_layout(model, x, shape, tokens)
        channels_first = (layout is None and len(shape) == x.dim() and shape[0] == 1
                          and torch.Size(shape[2:]).numel() > 1)
        if not channels_first and (layout is None or math.prod(getattr(layout, "grid", shape[1:-1])) <= 1):
            continue
        seen.add(name)
        result.append((name, shape))
    return result


def _class_token_layer(model: nn.Module, x: torch.Tensor, names: list[str], tokens) -> str | None:
    """The last LayerNorm among ``names`` whose patch tokens get a gradient from the output.

    A class-token classifier reads only the class token after its last attention, so the
    layers after it (the last block's output, its second norm and MLP, the final norm)
    have gradient-free patch tokens; the last block's first norm is where Grad-CAM for
    vision transformers is taken. Found with one backward on one sample, not by name.
    """
    from .capture import LayerCapture, explaining
    norms = [resolve_one(model, name) for name in names]
    norms = [(name, module) for name, module in norms if isinstance(module, nn.LayerNorm)]
    if not norms:
        return None
    sample = x[:1].detach()
    try:
        with explaining(model), LayerCapture(norms, sample, tokens, model) as capture:
            output = model(sample)
            if not isinstance(output, torch.Tensor) or output.dim() < 2:
                return None
            activations = [capture.activations[name] for name, _ in norms if name in capture.activations]
            score = output.float().amax(dim=1).sum()
            grads = torch.autograd.grad(score, activations, allow_unused=True)
    except ValueError:
        return None
    reached = [name for (name, _), grad in zip(norms, grads) if grad is not None and bool(grad.abs().sum() > 0)]
    return reached[-1] if reached else None


def default_layer(model: nn.Module, x: torch.Tensor, tokens: TokenOptions | None = None) -> str:
    """The last layer (in execution order) with spatial output that is not the model's output.

    For a transformer that reads a class token, the last block's first LayerNorm (see
    :func:`_class_token_layer`).
    """
    patch = None if tokens is None else tokens.patch_size
    key = (x.dim(), x.shape[1], tuple(x.shape[2:]), patch)
    cached = _DEFAULT_LAYER_CACHE.get(model, {})
    if key in cached:
        return cached[key]
    candidates = spatial_layers(model, x, tokens)
    if not candidates:
        raise ValueError(
            "the model has no layer with spatial output to explain; layer-based methods need a convolutional "
            "layer (use an input-gradient method such as 'saliency' instead)"
        )
    name = candidates[-1][0]
    layout = _grid_layout(model, x, candidates[-1][1], tokens)
    if isinstance(layout, TokenLayout) and layout.prefix:
        name = _class_token_layer(model, x, [n for n, _ in candidates], tokens) or name
    _DEFAULT_LAYER_CACHE.setdefault(model, {})[key] = name
    return name


def list_layers(model: nn.Module, x: torch.Tensor | None = None, token_patch_size=None) -> list[str]:
    """Names of the layers one can explain: with an example input, only those with spatial output
    (transformer token layers included when their grid follows from the input)."""
    if x is None:
        return [name for name, _ in model.named_modules() if name]
    return [name for name, _ in spatial_layers(model, x, TokenOptions.from_options(token_patch_size))]
