"""SmoothGrad (Smilkov et al. 2017): mean saliency over seeded noisy copies, batched.

It needs d y / d x at many noisy copies of the input; the copies are stacked copy-major into forwards of ``batching.copies_per_forward`` copies,
and ``autograd.grad`` of the summed scores gives every row its own gradient (samples
are independent in eval mode). The target is frozen from the unperturbed output.

SmoothGrad: mean over ``samples`` noisy copies of the saliency |d y / d x| (max over
channels). Noise ~ N(0, sigma^2) with sigma = ``noise`` x (max - min of the sample).
The noise pattern comes from a local ``torch.Generator`` seeded with ``seed`` and
depends only on the seed and the shape of one sample: every sample of a batch gets the
same pattern (scaled by its own range), so a sample's map does not depend on the batch
it is in, and the global RNG is untouched.
"""
from __future__ import annotations

from typing import Iterator

import torch

from ..batching import chunks, copies_per_forward, copy_gradients
from ..interrupt import checkpoint
from ..options import integer, non_negative_float, positive_int
from ..registry import MethodInfo, register


def noise_stream(sample_shape: tuple[int, ...], seed: int) -> Iterator[torch.Tensor]:
    """Standard normal noise of one sample's shape (C, *S), one draw per copy, from a seeded local generator."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    while True:
        yield torch.randn(sample_shape, generator=generator)


def smoothgrad_noise(sample_shape: tuple[int, ...], samples: int = 25, seed: int = 0) -> torch.Tensor:
    """The (samples, C, *S) unit noise SmoothGrad uses (times sigma); for references and reproducibility."""
    stream = noise_stream(tuple(sample_shape), seed)
    return torch.stack([next(stream) for _ in range(samples)])


def smoothgrad(request) -> torch.Tensor:
    samples = positive_int(request.options, "samples", 25)
    noise = non_negative_float(request.options, "noise", 0.15)
    seed = integer(request.options, "seed", 0)
    x = request.x
    n = x.shape[0]
    _, bound = request.reference()
    flat = x.flatten(1)
    sigma = (noise * (flat.amax(dim=1) - flat.amin(dim=1))).reshape((1, n) + (1,) * (x.dim() - 1))
    stream = noise_stream(tuple(x.shape[1:]), seed)
    total = torch.zeros((n,) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    for start, stop in chunks(samples, copies_per_forward(n * x[0].numel(), samples)):
        checkpoint(start, samples)  # cancel / heartbeat / progress hook (engine/interrupt.py)
        unit = torch.stack([next(stream) for _ in range(stop - start)]).to(device=x.device, dtype=x.dtype)
        inputs = (x[None] + sigma * unit[:, None]).flatten(0, 1)  # (copies * N, C, *S)
        grad = copy_gradients(request.model, bound, inputs, n)
        total += grad.abs().amax(dim=1).reshape((stop - start, n) + tuple(x.shape[2:])).sum(dim=0)
    return total / samples


register(MethodInfo(
    "smoothgrad", "SmoothGrad: mean saliency over seeded noisy copies of the input",
    compute=smoothgrad, family="gradient", needs_layer=False,
    cost="samples x (forward + full backward), batched", options=("samples", "noise", "seed"),
))
