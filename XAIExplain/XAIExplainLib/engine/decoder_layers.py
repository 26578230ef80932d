"""Finding the decoder of a U-Net-like model: ``layer="decoder"`` (multi-layer attribution).

Mullan & Sonka ("Kernel-weighted contribution", SPIE Medical Imaging 2022) explain a segmentation U-Net at every post-bottleneck layer
and average the min-max scaled maps. Which layers those are is read from one probe
forward: the convolutions (``Conv*d`` and ``ConvTranspose*d``) in execution order with
their output sizes. The bottleneck is the last convolution at the lowest spatial
resolution; the decoder is every convolution that runs after it, except the output head
(a final convolution whose output has the model output's shape).
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from .probe import probe_outputs

DECODER = "decoder"

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def conv_layers(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, tuple[int, ...]]], tuple[int, ...]]:
    """Convolutions in execution order with their output shapes, and the model's output shape.

    One forward of the first sample under inference mode; a convolution that runs
    several times is listed at its first call.
    """
    order, output = probe_outputs(model, x, include=lambda name, module: isinstance(module, CONV_TYPES))
    seen, convs = set(), []
    for name, shape, _ in order:
        if len(shape) == x.dim() and name not in seen:
            seen.add(name)
            convs.append((name, shape))
    return convs, tuple(output.shape) if isinstance(output, torch.Tensor) else ()


def decoder_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the post-bottleneck convolutions of a U-Net-like model, in execution order.

    ``x`` is an example input (N, C, *S); only its first sample runs. The answer is
    remembered per model and input layout, so explaining a volume batch by batch probes
    once. Raises ValueError when the model has no convolution after its lowest
    resolution (a classifier, or a plain encoder).
    """
    key = (x.dim(), x.shape[1], tuple(x.shape[2:]))
    cached = _CACHE.get(model, {})
    if key in cached:
        return list(cached[key])
    convs, output_shape = conv_layers(model, x)
    if not convs:
        raise ValueError("layer='decoder' needs a convolutional U-Net-like model; this model has no convolution")
    sizes = [torch.Size(shape[2:]).numel() for _, shape in convs]
    lowest = min(sizes)
    bottleneck = max(i for i, size in enumerate(sizes) if size == lowest)
    decoder = convs[bottleneck + 1:]
    if decoder and decoder[-1][1] == output_shape:
        decoder = decoder[:-1]  # the output head: explaining the logits layer says little
    if not decoder:
        raise ValueError(
            f"layer='decoder' needs a U-Net-like model whose resolution goes down and up again; no convolution "
            f"of this model runs after its lowest-resolution convolution '{convs[bottleneck][0]}'. "
            "Give the layers as a list instead (see XAIExplainLib.list_layers(model, x))"
        )
    names = [name for name, _ in decoder]
    _CACHE.setdefault(model, {})[key] = names
    return list(names)
