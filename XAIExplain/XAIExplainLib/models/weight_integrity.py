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


def check_finite_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse weights holding NaN or Inf, naming the first tensors affected."""
    bad = [name for name, tensor in state.items()
           if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values ("
                           f"{', '.join(bad[:5])}); the weights are corrupt (a diverged training run or a "
                           "damaged file): use a good checkpoint")
