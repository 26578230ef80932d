"""A window's working memory, estimated without allocating it, and checked before a run starts.

A windowed model (an nnU-Net plan, a MONAI bundle's sliding-window inferer, a card with a
``patch_size``, HD-BET) runs its network on one patch at a time; the patch comes from a file
(plans.json, inference.json, card.json), so a plan with ``patch_size [384, 384, 384]`` asks the first
convolution alone for 384^3 x 32 channels x 4 bytes = 1.8 GB, whatever the size of the CT. That is
checked here, before any window runs, against the memory budget or the memory available.

The estimate runs the network once on a probe patch a whole factor smaller per axis and scales the
bytes of every module output by the voxel ratio: a convolutional network's activations are linear in
the number of input voxels when every stride divides the probe (the probe sizes tried are whole
fractions of the patch, largest fraction first, so the network's own divisibility holds). A network
that accepts no smaller probe is counted by its input alone, a lower bound. The estimate is kept per
network and patch (activation sizes do not depend on the weights). Per window the engine holds
the activations and their gradients plus the input and its gradient (the same estimate as
``engine.volume.batch_size_for_budget``).
"""
from __future__ import annotations

import weakref
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..engine.memory_estimate import activation_bytes as count_bytes

#: Patches with fewer input elements than this are probed at full size (16^3 voxels).
FULL_PROBE_ELEMENTS = 1 << 12
#: Whole factors per axis tried for the probe, largest first.
PROBE_FACTORS = (8, 4, 2)


def patch_activation_bytes(model: nn.Module, channels: int, patch: Sequence[int], dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> tuple[int, bool]:
    """``(bytes, exact)``: every module output of one ``patch`` forward, from a scaled probe.

    ``exact`` is False when no probe ran and the bytes are the input's alone (a lower bound).
    """
    patch = tuple(int(p) for p in patch)
    elements = channels * int(np.prod(patch, dtype=np.int64))
    shapes = [patch] if elements <= FULL_PROBE_ELEMENTS else []
    shapes += [tuple(p // f for p in patch) for f in PROBE_FACTORS
               if elements > FULL_PROBE_ELEMENTS and all(p % f == 0 and p // f >= 2 for p in patch)]
    for shape in shapes:
        try:
            probe = torch.zeros((1, channels) + shape, dtype=dtype, device=device)
            measured = count_bytes(model, probe)
        except Exception:  # noqa: BLE001 - a network that refuses this probe size: try the next one
            continue
        return int(measured * (elements / probe.numel())), True
    return elements * torch.tensor([], dtype=dtype).element_size(), False


#: Estimates per network: (patch, channels, dtype, module types) -> (bytes, exact). Activation sizes depend
#: on the architecture and the patch, not on the weights, so a volume explained again costs no probe.
_ESTIMATES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _cached_activation_bytes(model: nn.Module, channels: int, patch: tuple[int, ...], dtype: torch.dtype,
                             device) -> tuple[int, bool]:
    key = (patch, channels, dtype, tuple(type(m) for m in model.modules()))
    known = _ESTIMATES.setdefault(model, {})
    if key not in known:
        known[key] = patch_activation_bytes(model, channels, patch, dtype, device)
    return known[key]


def window_bytes(model: nn.Module, channels: int, patch: Sequence[int], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", gradients: bool = True) -> tuple[int, bool]:
    """``(bytes, exact)`` one window needs: activations (and their gradients when explaining) and the input."""
    activations, exact = _cached_activation_bytes(model, channels, tuple(int(p) for p in patch), dtype, device)
    element = torch.tensor([], dtype=dtype).element_size()
    inputs = channels * int(np.prod([int(p) for p in patch], dtype=np.int64)) * element
    return ((2 * activations + 3 * inputs) if gradients else (activations + inputs)), exact


def available_bytes(device: torch.device) -> int | None:
    """Free memory where the network runs: the GPU's for CUDA, the system's otherwise (None if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    from ..imaging.reading import available_memory_bytes

    return available_memory_bytes()


def check_window_memory(model: nn.Module, channels: int, patch: Sequence[int] | None, where: str,
                        memory_budget_mb: float | None = None, device: torch.device | str = "cpu",
                        gradients: bool = True) -> int | None:
    """Refuse a window that needs more than ``memory_budget_mb`` (or the memory available), before it runs.

    ``where`` names the model and the file the patch comes from. The message gives the patch, the
    estimate and the limit. Returns how many such windows fit in that limit at once (None when nothing
    was estimated), which bounds the batch on a CPU, where running out of memory kills the process.
    """
    if patch is None:
        return None
    from ..imaging.reading import format_bytes

    device = torch.device(device)
    parameter = next(iter(model.parameters()), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    if memory_budget_mb is not None:
        limit, what = memory_budget_mb * 2**20, f"the memory budget of {memory_budget_mb:g} MB"
    else:
        limit = available_bytes(device)
        if limit is None:
            return None
        what = f"the memory available on {device.type} ({format_bytes(limit)})"
    patch = [int(p) for p in patch]
    probe_device = parameter.device if parameter is not None else device
    # a patch that cannot fit even as its input alone needs no probe (the probe itself would be large)
    element = torch.tensor([], dtype=dtype).element_size()
    floor = 3 * channels * int(np.prod(patch, dtype=np.int64)) * element
    need, exact = (floor, False) if floor > limit else window_bytes(model, channels, patch, dtype, probe_device,
                                                                            gradients)
    if need > limit:
        shape = " x ".join(map(str, patch))
        estimate = "estimated" if exact else "at least"
        raise ValueError(
            f"{where}: one {shape} window with {channels} channel(s) needs {estimate} {format_bytes(need)} of "
            f"working memory ({'activations, gradients and input' if gradients else 'activations and input'}), "
            f"more than {what}. Use a model whose patch fits, lower the patch size in its plan or card, or "
            "raise the budget")
    return max(1, int(limit // max(need, 1)))
