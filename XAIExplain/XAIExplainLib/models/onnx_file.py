"""The ONNX form: an ``.onnx`` file plus its input description (options or a sidecar JSON).

The graph is read and converted by :mod:`models.onnx_network` (onnx2torch, one torch
module per ONNX node, so every method works and a layer is named by its node); the
description and the load-time checks are the other bare files' (:mod:`models.file_description`,
:func:`models.card_loader.load_described`).  No trust is needed unless the graph names
custom operator domains or keeps tensor data outside its folder (:func:`models.trust.check_onnx_model`).
"""
from __future__ import annotations

from pathlib import Path

from .file_description import describe_self_contained
from .loaded import LoadedModel

ONNX_SUFFIX = ".onnx"


def is_onnx_file(path: Path) -> bool:
    """A file ending in ``.onnx``."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() == ONNX_SUFFIX


def load_onnx_file(path: Path, *, trust: bool = False, check: bool = True,
                   sidecar=None, **options) -> LoadedModel:
    """Load an ONNX file described by ``options`` and/or its sidecar JSON."""
    from .card_loader import load_described

    card = describe_self_contained(path, "onnx", "an ONNX file", options, sidecar)
    return load_described(card, trust=trust, check=check, kind="onnx", source=path)
