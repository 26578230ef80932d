"""The TorchScript form: a ``torch.jit.save``d file plus its input description.

A scripted module is a program, so loading one needs ``trust=True``
(:func:`models.trust.check_torchscript`).  It takes no hooks: layer methods
are refused on it (``MethodInfo.applicable(..., scripted=True)``), and so is a
layer or an architecture given with it, since the file carries its own network.
"""
from __future__ import annotations

from pathlib import Path

from .file_description import describe_self_contained
from .loaded import LoadedModel
from .trust import check_torchscript


def load_torchscript_file(path: Path, *, trust: bool = False, check: bool = True,
                          sidecar=None, **options) -> LoadedModel:
    """Load a TorchScript file described by ``options`` and/or its sidecar JSON."""
    from .card_loader import load_described

    check_torchscript(path, trust)
    if options.get("layer") is not None:
        raise ValueError(f"{path}: is a TorchScript file, which takes no hooks, so it has no "
                         f"usable layer (got layer={options['layer']!r}); remove layer= and use "
                         "the input-gradient methods, or load the network from a state dict "
                         "with architecture=")
    card = describe_self_contained(path, "torchscript", "a TorchScript file", options, sidecar)
    if card.target_layers.default is not None:
        raise ValueError(f"{card.path}: names target layer {card.target_layers.default!r}, but "
                         f"{path} is a TorchScript file, which takes no hooks; remove it")
    return load_described(card, trust=trust, check=check, kind="torchscript", source=path)
