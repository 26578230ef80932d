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
  and its outputs, skip connections included, are repeated to the batch);
- where the layer sits in an ``nn.Sequential`` followed by channel-wise modules (batch
  norm in eval mode, instance norm, element-wise activations, dropout in eval mode) and
  then a convolution C (a decoder stage conv-BN-ReLU-conv), the perturbed copies still
  differ from F(O) or F(E) (F the channel-wise modules) in channel k alone, and C is
  linear: C(F(O) with channel k from F(E)) = C(F(O)) + C_k(F(E)_k - F(O)_k), C_k the
  convolution restricted to input channel k without bias. One grouped convolution of
  D = F(E) - F(O) (groups = kernels) gives every C_k(D_k) at the cost of one C, and the
  replay starts after C (``following_convolution``; ``info["kwc"]["replayed_from"]``
  names where each layer's replay started).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


def empty_output(layer: nn.Module, inputs: tuple[tuple, dict], output: torch.Tensor, empty: str,
                 seed: int) -> torch.Tensor:
    """The layer's output with every kernel emptied (biases kept): E (N, K, *s)."""
    if empty == "glorot":
        args, kwargs = inputs
        kernels = glorot_kernels(layer.weight.detach(), seed)
        return torch.func.functional_call(layer, {"weight": kernels}, args, kwargs)
    if layer.bias is None:
        return torch.zeros_like(output)
    return layer.bias.detach().reshape((1, -1) + (1,) * (output.dim() - 2)).expand_as(output).to(output.dtype)


CHANNEL_WISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
                nn.InstanceNorm3d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Sigmoid, nn.Tanh, nn.ReLU6, nn.Hardtanh, nn.Softplus, nn.PReLU, nn.Identity, nn.Dropout,
                nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_CONVOLUTIONS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


@dataclass
class FollowingConvolution:
    """The channel-wise modules after a layer in its Sequential, and the convolution they feed."""

    name: str
    conv: nn.Module
    between: list


def _plain(module: nn.Module) -> bool:
    return not (module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__)


def following_convolution(model: nn.Module, name: str, layer: nn.Module) -> FollowingConvolution | None:
    """Where the replay may start after a linear convolution instead of at the layer (see the module docstring).

    Only inside an ``nn.Sequential`` proper (its forward chains its children, so nothing
    else reads the tensors in between), through channel-wise modules in eval mode without
    hooks, into a Conv1d/2d/3d with groups=1 whose input channels are the layer's kernels.
    """
    parent_name, _, child_name = name.rpartition(".")
    parent = dict(model.named_modules()).get(parent_name) if parent_name else None
    if type(parent) is not nn.Sequential or not _plain(parent) or not _plain(layer):
        return None
    children = list(parent.named_children())
    position = [child for child, _ in children].index(child_name)
    between = []
    for child, module in children[position + 1:]:
        if isinstance(module, CHANNEL_WISE) and not module.training and _plain(module):
            between.append(module)
            continue
        if (type(module) in _CONVOLUTIONS and module.groups == 1 and _plain(module)
                and module.in_channels == layer.out_channels):
            return FollowingConvolution(f"{parent_name}.{child}", module, between)
        return None
    return None


def _channel_convolutions(conv: nn.Module, d: torch.Tensor, start: int) -> torch.Tensor:
    """C_k(d_k) for input channels k = start.. start + b - 1 of ``conv`` at once (no bias): (N, b, C_out, *s')."""
    n, k = d.shape[:2]
    weight = conv.weight.detach()[:, start:start + k]  # (C_out, b, *kernel)
    grouped = weight.transpose(0, 1).reshape((k * weight.shape[0], 1) + tuple(weight.shape[2:]))
    if conv.padding_mode != "zeros":
        d = F.pad(d, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    else:
        padding = conv.padding
    out = _CONVOLUTIONS[type(conv)](d, grouped.to(d.dtype), None, conv.stride, padding, conv.dilation, k)
    return out.reshape((n, k, weight.shape[0]) + tuple(out.shape[2:]))


def fused_kernel_weights(replay: LayerReplay, x: torch.Tensor, bound, base: torch.Tensor, o: torch.Tensor,
                         empty: torch.Tensor, following: FollowingConvolution, output_elements: int) -> torch.Tensor:
    """w_k (N, K) before normalisation, replaying from after the convolution that follows the layer."""
    def channel_wise(t):
        for module in following.between:
            t = module(t)
        return t
    f_o, f_e = channel_wise(o), channel_wise(empty)
    c_o = replay.layer_output  # C(F(O)), recorded
    c_e = following.conv(f_e)
    difference = f_e - f_o
    n, k = o.shape[:2]
    per_copy = n * max(x[0].numel(), c_o[0].numel(), output_elements)
    kernels_per_forward = max(1, copies_per_forward(per_copy, 2 * k) // 2)
    return _weights_from_batches(replay, x, bound, base, k, kernels_per_forward, lambda start, stop: _fused_batch(
        following.conv, c_o, c_e, difference[:, start:stop], start))


def _fused_batch(conv, c_o, c_e, difference, start):
    """(2 count, N, C_out, *s'): C(F(O)) + C_k(D_k) for each kernel k, then C(F(E)) - C_k(D_k)."""
    delta = _channel_convolutions(conv, difference, start).transpose(0, 1)  # (count, N, C_out, *s')
    return torch.cat([c_o[None] + delta, c_e[None] - delta])


def _weights_from_batches(replay, x, bound, base, k, kernels_per_forward, batch) -> torch.Tensor:
    """Dependence x independence / total from the replayed batches ``batch(start, stop)`` (copy-major)."""
    n = base.shape[0]
    probability = bound.probabilities(base).flatten(1)  # (N, V)
    dependence = torch.empty(n, k, dtype=probability.dtype, device=probability.device)
    independence = torch.empty_like(dependence)
    for start, stop in chunks(k, kernels_per_forward):
        checkpoint(start, k)  # cancel / heartbeat / progress hook (engine/interrupt.py)
        count = stop - start
        activations = batch(start, stop)
        out = replay.run_suffix(x, activations.flatten(0, 1))  # copy-major (2 count * N, ...)
        rows = torch.arange(n, device=out.device).repeat(2 * count)
        perturbed = bound.probabilities(out, rows).flatten(1).reshape(2 * count, n, -1)
        dependence[:, start:stop] = torch.relu(probability[None] - perturbed[:count]).sum(dim=2).T
        independence[:, start:stop] = torch.minimum(perturbed[count:], probability[None]).sum(dim=2).T
    total = probability.sum(dim=1, keepdim=True)
    return torch.where(total > 0, dependence * independence / total.clamp_min(torch.finfo(total.dtype).tiny),
                       torch.zeros_like(dependence))


def kernel_weights(replay: LayerReplay, x: torch.Tensor, bound, base: torch.Tensor, empty: torch.Tensor,
                   output_elements: int) -> torch.Tensor:
    """w_k (N, K) before normalisation, from batched dependent / independent perturbations of the layer."""
    o = replay.layer_output
    n, k = o.shape[:2]
    per_copy = n * max(x[0].numel(), o[0].numel(), output_elements)
    kernels_per_forward = max(1, copies_per_forward(per_copy, 2 * k) // 2)

    def batch(start, stop):
        count = stop - start
        activations = torch.empty((2 * count,) + tuple(o.shape), dtype=o.dtype, device=o.device)
        activations[:count] = o  # copies 0..count-1: kernel start + copy emptied
        activations[count:] = empty  # copies count..2 count-1: all kernels but start + copy emptied
        copies = torch.arange(count, device=o.device)
        activations[copies, :, start + copies] = empty[:, start:stop].transpose(0, 1)
        activations[count + copies, :, start + copies] = o[:, start:stop].transpose(0, 1)
        return activations
    return _weights_from_batches(replay, x, bound, base, k, kernels_per_forward, batch)


def kwc_layer(model: nn.Module, x: torch.Tensor, target, name: str, layer: nn.Module, empty_kind: str,
              seed: int, details: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(KWC map (N, *s) at the layer's resolution, normalised kernel weights (N, K)) of one convolution."""
    if not isinstance(layer, CONV_TYPES):
        raise ValueError(f"KWC perturbs the kernels of a convolution; layer '{name}' is a {type(layer).__name__}. "
                         "Pick a Conv or ConvTranspose layer (or layer='decoder')")
    following = following_convolution(model, name, layer)
    replay = LayerReplay(model, following.conv if following else layer, following.name if following else name)
    seen = {}

    def keep(module, args, kwargs, output):
        seen.setdefault("inputs", (args, kwargs))
        seen.setdefault("output", output.detach().clone() if isinstance(output, torch.Tensor) else output)
    handle = layer.register_forward_hook(keep, with_kwargs=True) if following else None
    with torch.no_grad():
        try:
            base = replay.record(x)
        finally:
            if handle is not None:
                handle.remove()
        bound = resolve_target(target, base)
        if not hasattr(bound, "probabilities"):
            raise ValueError("KWC explains segmentation models (output (N, K, *spatial)); this model is a "
                             "classifier: use 'gradcam', 'scorecam' or 'crm'")
        activation = seen["output"] if following else replay.layer_output
        if not isinstance(activation, torch.Tensor) or activation.dim() != x.dim():
            shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
            raise ValueError(f"layer '{name}' has output {shape} with no spatial dims")
        inputs = seen["inputs"] if following else replay.layer_inputs
        empty = empty_output(layer, inputs, activation, empty_kind, seed)
        if following:
            raw = fused_kernel_weights(replay, x, bound, base, activation, empty, following, base[0].numel())
        else:
            raw = kernel_weights(replay, x, bound, base, empty, base[0].numel())
        weights = minmax(raw)
        if details is not None:
            details.setdefault("replayed_from", {})[name] = following.name if following else name
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
        result, weights = kwc_layer(request.model, request.x, request.target, name, module, empty, seed, details)
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
    cost="2K suffix forwards per layer (batched, prefix reused)", options=("kwc_empty", "seed"), needs_gradients=False,
))
