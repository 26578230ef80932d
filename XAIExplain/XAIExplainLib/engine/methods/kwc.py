"""KWC — kernel-weighted contribution (Mullan & Sonka, SPIE 2022; J. Med. Imaging 2023), segmentation models.

For a convolution l with kernels k (output channels), P the baseline output
probabilities over the target's region, P_dep^k the output with kernel k emptied and
P_ind^k the output with every kernel except k emptied (biases untouched):
D_k = sum_i (P_i - min(P_dep,i^k, P_i)), I_k = sum_i min(P_ind,i^k, P_i),
w_k = D_k I_k / sum_i P_i, min-max normalised over the layer's kernels (SPIE variant),
Map_l = ReLU(sum_k w_k ReLU(A_k)). Several layers combine by the multi-layer rule.

The empty kernel is zeros (``kwc_empty="zeros"``, default) or, as in the SPIE paper, a
seeded Glorot-uniform kernel (``kwc_empty="glorot"``, seeded by ``seed``). P is the
target's probability of its class (sigmoid / softmax; see
``BoundSegmentationTarget.probabilities``) inside its frozen region; for the paper's
"all output probabilities" use ``SegmentationTarget(c, region="all", activation="sigmoid")``.

How the 2K forward passes are made cheap:

- the layer's output is linear in its kernels, and output channel k depends only on
  kernel k: with O the unperturbed layer output and E the output of the all-empty
  layer (the bias everywhere, or one convolution with the Glorot kernels), "kernel k
  emptied" is O with channel k taken from E, and "all but k emptied" is E with channel
  k taken from O. No perturbed convolution is ever run;
- many perturbed activations go through one forward (copy-major batches), and only
  the network after the layer runs (``replay.LayerReplay``: the prefix is recorded once
  and its outputs, skip connections included, are repeated to the batch).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..batching import chunks, copies_per_forward
from ..decoder_layers import CONV_TYPES, conv_layers
from ..interrupt import checkpoint
from ..normalize import minmax
from ..options import choice, integer
from ..registry import SEGMENTATION, MethodInfo, register
from ..replay import LayerReplay
from ..request import upsample
from ..targets import resolve_target

EMPTY_KERNELS = ("zeros", "glorot")


def glorot_kernels(weight: torch.Tensor, seed: int) -> torch.Tensor:
    """Glorot-uniform weights of ``weight``'s shape from a local generator seeded with ``seed``."""
    receptive = weight[0][0].numel()
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    values = torch.rand(weight.shape, generator=generator, dtype=torch.float64) * 2 - 1
    return (values * bound).to(device=weight.device, dtype=weight.dtype)


def empty_output(layer: nn.Module, replay: LayerReplay, empty: str, seed: int) -> torch.Tensor:
    """The layer's output with every kernel emptied (biases kept): E (N, K, *s)."""
    output = replay.layer_output
    if empty == "glorot":
        args, kwargs = replay.layer_inputs
        kernels = glorot_kernels(layer.weight.detach(), seed)
        return torch.func.functional_call(layer, {"weight": kernels}, args, kwargs)
    if layer.bias is None:
        return torch.zeros_like(output)
    return layer.bias.detach().reshape((1, -1) + (1,) * (output.dim() - 2)).expand_as(output).to(output.dtype)


def kernel_weights(replay: LayerReplay, x: torch.Tensor, bound, base: torch.Tensor, empty: torch.Tensor,
                   output_elements: int) -> torch.Tensor:
    """w_k (N, K) before normalisation, from batched dependent / independent perturbations."""
    o = replay.layer_output
    n, k = o.shape[:2]
    probability = bound.probabilities(base).flatten(1)  # (N, V)
    dependence = torch.empty(n, k, dtype=probability.dtype, device=probability.device)
    independence = torch.empty_like(dependence)
    per_copy = n * max(x[0].numel(), o[0].numel(), output_elements)
    kernels_per_forward = max(1, copies_per_forward(per_copy, 2 * k) // 2)
    for start, stop in chunks(k, kernels_per_forward):
        checkpoint()  # cancel / heartbeat hook (engine/interrupt.py)
        count = stop - start
        activations = torch.empty((2 * count,) + tuple(o.shape), dtype=o.dtype, device=o.device)
        activations[:count] = o  # copies 0..count-1: kernel start + copy emptied
        activations[count:] = empty  # copies count..2 count-1: all kernels but start + copy emptied
        for copy, kernel in enumerate(range(start, stop)):
            activations[copy, :, kernel] = empty[:, kernel]
            activations[count + copy, :, kernel] = o[:, kernel]
        out = replay.run_suffix(x, activations.flatten(0, 1))  # copy-major (2 count * N, K, *s)
        rows = torch.arange(n, device=out.device).repeat(2 * count)
        perturbed = bound.probabilities(out, rows).flatten(1).reshape(2 * count, n, -1)
        dependence[:, start:stop] = torch.relu(probability[None] - perturbed[:count]).sum(dim=2).T
        independence[:, start:stop] = torch.minimum(perturbed[count:], probability[None]).sum(dim=2).T
    total = probability.sum(dim=1, keepdim=True)
    return torch.where(total > 0, dependence * independence / total.clamp_min(torch.finfo(total.dtype).tiny),
                       torch.zeros_like(dependence))


def kwc_layer(model: nn.Module, x: torch.Tensor, target, name: str, layer: nn.Module, empty_kind: str,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(KWC map (N, *s) at the layer's resolution, normalised kernel weights (N, K)) of one convolution."""
    if not isinstance(layer, CONV_TYPES):
        raise ValueError(f"KWC perturbs the kernels of a convolution; layer '{name}' is a {type(layer).__name__}. "
                         "Pick a Conv or ConvTranspose layer (or layer='decoder')")
    replay = LayerReplay(model, layer, name)
    with torch.no_grad():
        base = replay.record(x)
        bound = resolve_target(target, base)
        if not hasattr(bound, "probabilities"):
            raise ValueError("KWC explains segmentation models (output (N, K, *spatial)); this model is a "
                             "classifier: use 'gradcam', 'scorecam' or 'crm'")
        activation = replay.layer_output
        if activation.dim() != x.dim():
            raise ValueError(f"layer '{name}' has output {tuple(activation.shape)} with no spatial dims")
        empty = empty_output(layer, replay, empty_kind, seed)
        weights = minmax(kernel_weights(replay, x, bound, base, empty, base[0].numel()))
        shape = weights.shape + (1,) * (activation.dim() - 2)
        return torch.relu((weights.reshape(shape) * torch.relu(activation)).sum(dim=1)), weights


def default_conv(model: nn.Module, x: torch.Tensor) -> str:
    """The last convolution before the output head (the head itself if it is the only one)."""
    convs, output_shape = conv_layers(model, x)
    if not convs:
        raise ValueError("KWC perturbs convolution kernels, but this model has no convolution")
    if len(convs) > 1 and convs[-1][1] == output_shape:
        return convs[-2][0]
    return convs[-1][0]


def compute(request) -> torch.Tensor:
    empty = choice(request.options, "kwc_empty", "zeros", EMPTY_KERNELS)
    seed = integer(request.options, "seed", 0)
    details = request.info.setdefault("kwc", {"kernel_weights": {}})

    def layer_map(name, module):
        result, weights = kwc_layer(request.model, request.x, request.target, name, module, empty, seed)
        details["kernel_weights"][name] = weights
        return result

    if request.layer is None:  # the engine's default layer need not be a convolution
        name = default_conv(request.model, request.x)
        details["layers"] = [name]
        return upsample(layer_map(name, dict(request.model.named_modules())[name]), request.spatial_size)
    return request.per_layer(layer_map)


register(MethodInfo(
    "kwc", "KWC: kernels weighted by the prediction they carry alone and lose when removed (Mullan & Sonka)",
    compute=compute, family="relevance", tasks=(SEGMENTATION,),
    cost="2K suffix forwards per layer (batched, prefix reused)", options=("kwc_empty", "seed"),
))
