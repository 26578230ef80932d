"""The torch.export form: a ``.pt2`` file from ``torch.export.save`` plus its input description.

The program is loaded and unflattened by :mod:`models.exported_program_network`; the
description (options or a sidecar JSON) and the load-time checks are the other bare
files' (:mod:`models.file_description`, :func:`models.card_loader.load_described`).
Loading needs trust: ``torch.export.load`` unpickles (:func:`models.trust.check_exported_program`).
"""
from __future__ import annotations

from pathlib import Path

from .file_description import describe_self_contained
from .loaded import LoadedModel
from .trust import check_exported_program

PT2_SUFFIX = ".pt2"


def is_exported_program_file(path: Path) -> bool:
    """A file ending in ``.pt2`` (what ``torch.export.save`` writes)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() == PT2_SUFFIX


def load_exported_program_file(path: Path, *, trust: bool = False, check: bool = True,
                               sidecar=None, **options) -> LoadedModel:
    """Load a ``.pt2`` file described by ``options`` and/or its sidecar JSON."""
    from .card_loader import load_described

    check_exported_program(path, trust)
    card = describe_self_contained(path, "exported_program", "a torch.export program", options, sidecar)
    return load_described(card, trust=trust, check=check, kind="exported-program", source=path)
