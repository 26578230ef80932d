"""Checks on a weights file that must run before (or right after) its tensors are read.

A ``torch.save`` file is a zip archive. Its members may be deflate-compressed,
so a file of a few kilobytes can declare gigabytes of tensors, which
``torch.load`` would inflate before any shape is compared with the network.
The archive's own directory states every member's uncompressed size, so the
total is checked against what the architecture needs and against the memory
available, without decompressing anything. Tensors that hold NaN or Inf are
refused at load: they would give NaN heatmaps further on.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..imaging.reading import available_memory_bytes, format_bytes
from .errors import WeightsError

#: Room above the architecture's own tensor bytes for the archive's pickle, metadata and
#: tensors the network does not keep (optimizer-free checkpoints carry a few extras).
_SLACK_FACTOR = 4
_SLACK_BYTES = 16 * 2**20


def expected_state_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s state_dict tensors."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def check_archive_sizes(path: Path, module: nn.Module | None = None) -> None:
    """Refuse a zip weights archive whose declared uncompressed size is out of proportion.

    The limit is the architecture's state size (times a margin) when ``module`` is known,
    and the memory available in any case. Non-zip files (legacy pickles, safetensors)
    are left to their readers.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile):
        return  # torch.load reports a corrupt archive itself
    declared = sum(m.file_size for m in members)
    limits = []
    if module is not None:
        limits.append((_SLACK_FACTOR * expected_state_bytes(module) + _SLACK_BYTES,
                       f"the {type(module).__name__} architecture needs "
                       f"{format_bytes(expected_state_bytes(module))}"))
    available = available_memory_bytes()
    if available is not None:
        limits.append((available, f"{format_bytes(available)} of memory is available"))
    for limit, why in limits:
        if declared > limit:
            compressed = sum(m.compress_size for m in members)
            raise WeightsError(
                f"{path}: the archive declares {format_bytes(declared)} of uncompressed data in "
                f"{format_bytes(compressed)} of file, but {why}; it is not weights for this network "
                "(or a decompression bomb) and was not unpacked")


#: The real floating-point dtypes a weight may have (float8 formats hold no usable weights for these
#: networks and torch has no isfinite for them; complex values would lose their imaginary part).
REAL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_weight_dtypes(state: Mapping[str, torch.Tensor], network: Mapping[str, torch.Tensor],
                        path: Path) -> None:
    """Refuse tensors whose dtype cannot become the network's, naming them, before anything is loaded.

    A floating-point tensor of the network must come from a real float (not complex, not float8, not
    an integer or bool tensor, which would be cast silently); an integer buffer (batch norm's
    ``num_batches_tracked``) from an integer. ``network`` is the network's own state dict.
    """
    wrong = []
    for name, tensor in state.items():
        target = network.get(name)
        if target is None:
            continue
        if target.is_floating_point() and tensor.dtype not in REAL_FLOATS:
            wrong.append(f"{name} ({str(tensor.dtype).replace('torch.', '')}, network "
                         f"{str(target.dtype).replace('torch.', '')})")
        elif not target.is_floating_point() and (tensor.is_floating_point() or tensor.is_complex()):
            wrong.append(f"{name} ({str(tensor.dtype).replace('torch.', '')}, network "
                         f"{str(target.dtype).replace('torch.', '')})")
    if wrong:
        raise WeightsError(f"{path}: {len(wrong)} tensor(s) have a type the network cannot take without losing "
                           f"values: {', '.join(wrong[:5])}; weights must be real floating-point "
                           "(float16, bfloat16, float32, float64): re-save them from the trained model")


def check_finite_weights(state: Mapping[str, torch.Tensor], path: Path,
                         network: Mapping[str, torch.Tensor] | None = None) -> None:
    """Refuse weights holding NaN or Inf, naming the first tensors affected.

    With ``network`` (the network's own state dict) each tensor is checked as the network will hold
    it, after the cast to its dtype: float64 values beyond float32's range (a batch norm
    ``running_var`` of 1e300) become ``inf`` there and every map zero.
    """
    bad, overflow = [], []
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        if not _all_finite(tensor):
            bad.append(name)
            continue
        target = None if network is None else network.get(name)
        if target is not None and target.is_floating_point() and target.dtype != tensor.dtype \
                and not _all_finite(tensor.to(target.dtype)):
            overflow.append(f"{name} ({str(tensor.dtype).replace('torch.', '')} values up to "
                            f"{float(tensor.abs().max()):.3g} overflow the network's "
                            f"{str(target.dtype).replace('torch.', '')})")
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values ("
                           f"{', '.join(bad[:5])}); the weights are corrupt (a diverged training run or a "
                           "damaged file): use a good checkpoint")
    if overflow:
        raise WeightsError(f"{path}: {len(overflow)} tensor(s) hold values the network cannot represent: "
                           f"{'; '.join(overflow[:5])}; they would load as infinity and every map come out "
                           "zero: the weights are corrupt, use a good checkpoint")


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf in ``tensor``: a finite sum (one reduction, no mask) proves it; only a non-finite
    sum (which huge finite values can also give) is checked element by element."""
    with torch.no_grad():
        return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def check_module_weights(module: nn.Module, path: Path) -> None:
    """The dtype and finiteness rules for a module that carries its own weights (TorchScript, a pickled
    module): its floating-point tensors must be real floats and finite."""
    state = module.state_dict()
    wrong = [f"{name} ({str(t.dtype).replace('torch.', '')})" for name, t in state.items()
             if (t.is_floating_point() and t.dtype not in REAL_FLOATS) or t.is_complex()]
    if wrong:
        raise WeightsError(f"{path}: {len(wrong)} tensor(s) are not real floating-point: {', '.join(wrong[:5])}; "
                           "weights must be float16, bfloat16, float32 or float64")
    check_finite_weights(state, path)
