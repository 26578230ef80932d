"""The state-dict form: a weights file, the network class that fits it, and its input description.

``load_model("weights.pt", architecture="monai.networks.nets:UNet",
architecture_kwargs={...}, task=..., spatial_dims=..., classes=[...])`` (or
the same fields in a sidecar JSON).  The tensors are read without unpickling
code; the architecture follows the same allow-list as a card's
(:mod:`models.trust`).
"""
from __future__ import annotations

from pathlib import Path

from .errors import ModelCardError
from .file_description import describe_file
from .loaded import LoadedModel

#: File endings taken for state dicts (TorchScript archives are recognised by content).
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def is_state_dict_file(path: Path) -> bool:
    """A file with a weights ending (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors``)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in STATE_DICT_SUFFIXES


def load_state_dict_file(path: Path, *, trust: bool = False, check: bool = True,
                         sidecar=None, **options) -> LoadedModel:
    """Build ``architecture`` with its kwargs and load the state dict in ``path`` into it."""
    from .card_loader import load_described

    try:
        card = describe_file(path, "state_dict", options, sidecar)
    except ModelCardError as exc:
        if "'architecture'" in str(exc) and "is missing" in str(exc):
            raise ModelCardError(
                f"{path}: is a state dict (tensors only), which does not say which network the "
                "tensors belong to; give architecture='package.module:ClassName' and "
                "architecture_kwargs={...} as options or in its sidecar JSON") from exc
        raise
    return load_described(card, trust=trust, check=check, kind="module", source=path)
