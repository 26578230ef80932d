"""Which form a model source is, and the loader of each form.

``load_model`` asks every form in :data:`FORMS`, in order, whether a path is one of
its own (``detect``) and hands the path to the first that says yes (``load``). A form
is a small module of its own (the card loader, nnU-Net folders, MONAI bundles,
TorchScript, ONNX, torch.export and state-dict files); adding one means adding its entry here. A path that
no form recognises gets an error that lists what each form looks for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .card import CARD_FILENAME
from .errors import ModelCardError


@dataclass(frozen=True)
class ModelForm:
    """One way a model can be given: ``kind`` (``LoadedModel.kind``), what it looks for, how to load it."""

    kind: str
    looks_for: str
    detect: Callable[[Path], bool]
    load: Callable[..., object]  # load(path, *, trust, check, **options) -> LoadedModel


def _is_card(path: Path) -> bool:
    if path.is_dir():
        return (path / CARD_FILENAME).is_file()
    return path.is_file() and path.suffix.lower() == ".json"


def _load_card(path: Path, *, trust: bool = False, check: bool = True, **options):
    from .card_loader import load_card_model

    return load_card_model(path, trust=trust, check=check, **options)


def _is_bundle(path: Path) -> bool:
    from .monai_bundle import is_bundle

    return is_bundle(path)


def _load_bundle(path: Path, *, trust: bool = False, check: bool = True, **options):
    from .monai_bundle import load_bundle

    return load_bundle(path, trust=trust, check=check, **options)


def _is_nnunet(path: Path) -> bool:
    from .nnunet.folder import is_nnunet_folder

    return is_nnunet_folder(path)


def _load_nnunet(path: Path, *, trust: bool = False, check: bool = True, **options):
    from .nnunet import load_nnunet

    return load_nnunet(path, trust=trust, **options)


def _is_torchscript(path: Path) -> bool:
    from .weights_io import is_torchscript_archive

    return is_torchscript_archive(path)


def _load_torchscript(path: Path, **kwargs):
    from .torchscript_file import load_torchscript_file

    return load_torchscript_file(path, **kwargs)


def _is_state_dict(path: Path) -> bool:
    from .state_dict_file import is_state_dict_file

    return is_state_dict_file(path)


def _load_state_dict(path: Path, **kwargs):
    from .state_dict_file import load_state_dict_file

    return load_state_dict_file(path, **kwargs)


def _is_onnx(path: Path) -> bool:
    from .onnx_file import is_onnx_file

    return is_onnx_file(path)


def _load_onnx(path: Path, **kwargs):
    from .onnx_file import load_onnx_file

    return load_onnx_file(path, **kwargs)


def _is_exported_program(path: Path) -> bool:
    from .exported_program_file import is_exported_program_file

    return is_exported_program_file(path)


def _load_exported_program(path: Path, **kwargs):
    from .exported_program_file import load_exported_program_file

    return load_exported_program_file(path, **kwargs)


FORMS: list[ModelForm] = [
    ModelForm("card", f"a folder with {CARD_FILENAME}, or a model card .json file", _is_card, _load_card),
    ModelForm("monai-bundle", "a MONAI bundle folder with configs/metadata.json and configs/inference.json "
              "(or .yaml)", _is_bundle, _load_bundle),
    ModelForm("nnunet", "an nnU-Net v2 trained-model folder (plans.json, dataset.json, fold_N/checkpoint_*.pth)",
              _is_nnunet, _load_nnunet),
    ModelForm("torchscript", "a TorchScript file (torch.jit.save archive)", _is_torchscript,
              _load_torchscript),
    ModelForm("onnx", "an ONNX file (.onnx, converted with onnx2torch)", _is_onnx, _load_onnx),
    ModelForm("exported-program", "a torch.export program (.pt2, torch.export.save)", _is_exported_program,
              _load_exported_program),
    ModelForm("module", "a state-dict file (.pt, .pth, .bin, .ckpt, .safetensors) with "
              "architecture='module:Class'", _is_state_dict, _load_state_dict),
]


def find_form(path: Path) -> ModelForm:
    """The form of ``path``, or a ModelCardError naming what was looked for."""
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path} is neither a file nor a folder")
    for form in FORMS:
        if form.detect(path):
            return form
    looked = "; ".join(f"{form.kind}: {form.looks_for}" for form in FORMS)
    what = "folder" if path.is_dir() else "file"
    raise ModelCardError(f"{path}: this {what} is not a model XAIExplain can load; looked for {looked}")
