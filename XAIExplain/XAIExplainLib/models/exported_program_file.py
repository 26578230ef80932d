"""The torch.export form: a ``.pt2`` file from ``torch.export.save`` plus its input description.

The program is loaded and unflattened by :mod:`models.exported_program_network`; the
description (options or a sidecar JSON) and the load-time checks are the other bare
files' (:mod:`models.file_description`, :func:`models.card_loader.load_described`).
Loading needs trust: ``torch.export.load`` unpickles (:func:`models.trust.check_exported_program`).
"""
from __future__ import annotations

from pathlib import Path

from .file_description import describe_file
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
    for option in ("architecture", "architecture_kwargs"):
        if options.get(option) is not None:
            raise ValueError(f"{path}: is a torch.export program, which carries its own network; "
                             f"{option}= applies to state-dict files only. Remove it")
    card = describe_file(path, "exported_program", options, sidecar)
    if card.architecture is not None:
        raise ValueError(f"{card.path}: names an architecture, but {path} is a torch.export program "
                         "that carries its own network; remove the sidecar's 'architecture'")
    return load_described(card, trust=trust, check=check, kind="exported-program", source=path)
