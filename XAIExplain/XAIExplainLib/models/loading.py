"""Find, build and load card models safely.

``load_model`` accepts a bundled model name or a path of any model form (see
:mod:`models.forms`); this module loads the card form and holds the pieces
the other file forms share.  Weights are read without executing code:
safetensors files, or ``torch.load(..., weights_only=True)`` for state_dicts.
What can run code needs ``trust=True`` (:mod:`models.trust`): a pickled full
module (``torch.save(model)``), a TorchScript archive (a program), an
architecture outside the allowed libraries, or a weights file outside the
card's folder.

Every failure names the file and what was wrong: a missing file, a corrupt or
truncated archive, a checksum mismatch, weights whose names or shapes do not
fit the architecture, or a card whose channel/class counts contradict the
network.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..engine.reading import select_output
from .card import CARD_FILENAME, ModelCard, load_card, trial_input_shape
from .errors import ModelCardError, UntrustedModelError, WeightsError
from ..engine.devices import resolve_device
from ..resources import resources_dir
from . import hd_bet
from .forms import find_form
from .loaded import LoadedModel
from .weight_integrity import check_archive_sizes, check_finite_weights
from .trust import check_architecture, check_inside, check_torchscript

#: Extra folders searched for model names, separated like PATH.
MODEL_PATH_ENV = "XAIEXPLAIN_MODEL_PATH"

#: Models named like bundled ones whose network and weights come from an installed
#: package (listed when it is installed): name -> adapter module.
_PACKAGE_MODELS = {hd_bet.NAME: hd_bet}


def bundled_models_dir() -> Path:
    """The bundled models: ``Resources/Models`` wherever the install put the resources."""
    return resources_dir() / "Models"


def model_search_dirs() -> list[Path]:
    """Folders searched for a model name: the bundled folder, then ``$XAIEXPLAIN_MODEL_PATH``."""
    dirs = [bundled_models_dir()]
    extra = os.environ.get(MODEL_PATH_ENV, "")
    dirs.extend(Path(p) for p in extra.split(os.pathsep) if p)
    return dirs


@dataclass(frozen=True)
class ModelInfo:
    """One line of :func:`list_models`."""

    name: str
    task: str
    spatial_dims: int
    classes: tuple[str, ...]
    description: str
    path: Path

    def __str__(self) -> str:
        return (f"{self.name} ({self.task}, {self.spatial_dims}D, classes: "
                f"{', '.join(self.classes)}) - {self.description}")


def list_models() -> list[ModelInfo]:
    """The models found in :func:`model_search_dirs`, sorted by name.

    A folder whose card is invalid is skipped here (``load_model`` on it
    reports why), so one broken download does not hide the others.
    """
    found: dict[str, ModelInfo] = {}
    for directory in model_search_dirs():
        if not directory.is_dir():
            continue
        for card_path in sorted(directory.glob(f"*/{CARD_FILENAME}")):
            try:
                card = load_card(card_path)
            except (ModelCardError, OSError):
                continue
            found.setdefault(card.name, ModelInfo(card.name, card.task, card.spatial_dims,
                                                  tuple(card.class_names), card.description,
                                                  card_path.parent))
    for name, adapter in _PACKAGE_MODELS.items():
        if name not in found and adapter.available():
            card = adapter.CARD
            found[name] = ModelInfo(name, card["task"], card["spatial_dims"],
                                    tuple(c["name"] for c in card["classes"]),
                                    card["description"], adapter.weights_folder())
    return [found[name] for name in sorted(found)]


def is_model_name(source) -> bool:
    """A bare name (a ``str`` without a path separator, not ``.``/``..``) names a model.

    A name never means a file or folder of that name in the working directory:
    ``./name`` (or any ``os.PathLike``) is a path.
    """
    return (isinstance(source, str) and bool(source) and "/" not in source
            and os.sep not in source and (os.altsep is None or os.altsep not in source)
            and source not in (".", ".."))


def _in_model_dirs(name: str) -> bool:
    return any((d / name / CARD_FILENAME).is_file() for d in model_search_dirs())


def resolve_model_name(name: str) -> Path:
    """The folder of the bundled or configured model called ``name``."""
    for directory in model_search_dirs():
        candidate = directory / name / CARD_FILENAME
        if candidate.is_file():
            return candidate.parent
    for info in list_models():
        if info.name == name:
            return info.path
    names = ", ".join(i.name for i in list_models()) or "none found"
    local = ""
    if Path(name).exists():
        local = (f" (a file or folder {name!r} exists in the working directory, but a bare name "
                 f"only means a bundled or configured model: write ./{name} to load that path)")
    raise FileNotFoundError(f"no model named {name!r}; bundled and configured models: {names}"
                            f"{local}. Pass a path (a model folder, card.json, TorchScript or "
                            f"state-dict file) for other models, or add its folder to "
                            f"${MODEL_PATH_ENV}")


def resolve_card_path(source: str | os.PathLike) -> Path:
    """A card.json path from a model name, a folder or a card path."""
    path = resolve_model_name(source) if is_model_name(source) else Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        card = path / CARD_FILENAME
        if not card.is_file():
            raise FileNotFoundError(f"model folder {path} has no {CARD_FILENAME}")
        return card
    raise FileNotFoundError(f"model not found: {path} is neither a file nor a folder")


def load_model(source: str | os.PathLike | ModelCard, *, trust: bool = False,
               device: str | torch.device = "cpu", check: bool = True,
               **options) -> LoadedModel:
    """Load a model of any form: the one entry point of the API, the CLI and the panel.

    Parameters
    ----------
    source:
        A bundled or configured model name (see :func:`list_models`; never a
        folder of that name in the working directory), a path of any form in
        :mod:`models.forms` (card folder or card.json, TorchScript file,
        state-dict file, ...), or an already parsed :class:`ModelCard`.
    trust:
        Allow what can run code or reach outside the model (see
        :mod:`models.trust`): pickled modules, TorchScript, architectures
        outside the allowed libraries, files outside the model's folder.
    device:
        ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a torch device.
    check:
        Run one tiny forward pass to verify that the description's channel and
        class counts agree with the network.
    options:
        Form-specific options: the input description of a bare file (see
        :mod:`models.file_description`), an nnU-Net folder's ``folds``, ...; each
        form refuses options it does not know.
    """
    if isinstance(source, ModelCard):
        loaded = load_card_model(source, trust=trust, check=check, **options)
    elif is_model_name(source) and source in _PACKAGE_MODELS and not _in_model_dirs(source):
        loaded = _PACKAGE_MODELS[source].load(trust=trust, check=check, **options)
    else:
        path = resolve_model_name(source) if is_model_name(source) else Path(source)
        loaded = find_form(path).load(path, trust=trust, check=check, **options)
    return loaded.to(resolve_device(device))


def load_card_model(source: Path | ModelCard, *, trust: bool = False, check: bool = True,
                    **options) -> LoadedModel:
    """The card form: a card folder, a card .json file, or a parsed card."""
    if options:
        raise TypeError(f"unknown option(s) {sorted(options)} for a model card; cards take none (the card "
                        "itself says how to build and feed the model)")
    card = source if isinstance(source, ModelCard) else load_card(resolve_card_path(source))
    return load_described(card, trust=trust, check=check, kind="card",
                          source=card.path.parent if card.path else None)


def load_described(card: ModelCard, *, trust: bool = False, check: bool = True, kind: str = "card",
                   source: Path | None = None) -> LoadedModel:
    """Build, load and check the network a card describes (the card and bare-file forms).

    ``source`` (the folder or file given) is recorded resolved, with the weights'
    SHA-256, for run summaries.
    """
    module, scripted = load_module(card, trust=trust)
    module.eval()
    if check:
        check_module(card, module, scripted)
    weights = card.weights.file
    return LoadedModel(module=module, card=card, scripted=scripted, kind=kind,
                       source=None if source is None else Path(source).resolve(),
                       weights_sha256=card.weights.sha256 or file_sha256(weights))


def load_module(card: ModelCard, trust: bool = False) -> tuple[nn.Module, bool]:
    """Build the network and load its weights; returns ``(module, is_torchscript)``."""
    path = card.weights.file
    if path.exists() and not path.is_file():
        where = f"{card.path}: " if card.path else ""
        raise WeightsError(f"{where}weights file {path} is not a regular file (a folder, device or pipe); "
                           "card field 'weights.file' must name the weights file")
    where = card.path or card.name
    check_inside(path, card.base_dir if card.path is not None else None, trust, str(where),
                 "weights file")
    if not path.is_file():
        where = f"{card.path}: " if card.path else ""
        raise FileNotFoundError(f"{where}weights file {path} does not exist (card field "
                                "'weights.file', relative to the card's folder)")
    if card.weights.sha256 is not None:
        _verify_checksum(path, card.weights.sha256)
    fmt = card.weights.format
    if fmt == "torchscript":
        check_torchscript(path, trust)
        return _load_torchscript(path), True
    if fmt == "pickle":
        return _load_pickled_module(path, trust), False
    module = build_architecture(card, trust=trust)
    check_archive_sizes(path, module)
    state = read_state_dict(path)
    apply_state_dict(module, state, path)
    return module, False


def build_architecture(card: ModelCard, trust: bool = False) -> nn.Module:
    """Instantiate ``card.architecture`` (an ``nn.Module`` subclass) with its kwargs.

    The module name is checked against the allow-list before it is imported
    (importing runs the module's code); see :mod:`models.trust`.
    """
    spec = card.architecture
    if spec is None:
        raise ModelCardError(f"{card.path or card.name}: field 'architecture' is missing")
    check_architecture(spec.module_name, trust, str(card.path or card.name),
                       "field 'architecture.class'")
    try:
        module = importlib.import_module(spec.module_name)
    except ImportError as exc:
        hint = " (install MONAI: pip install monai)" if spec.module_name.startswith("monai") else ""
        raise ModelCardError(f"{card.path or card.name}: field 'architecture.class': cannot import "
                             f"module {spec.module_name!r}: {exc}{hint}") from exc
    obj: Any = module
    for part in spec.class_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelCardError(f"{card.path or card.name}: field 'architecture.class': module "
                                 f"{spec.module_name!r} has no attribute {spec.class_name!r}")
    # Only nn.Module classes may be called: a card must not be able to name an
    # arbitrary function (os.system, ...) and have it run with its kwargs.
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelCardError(f"{card.path or card.name}: field 'architecture.class': "
                             f"{spec.target!r} is not a torch.nn.Module subclass")
    try:
        return obj(**dict(spec.kwargs))
    except TypeError as exc:
        raise ModelCardError(f"{card.path or card.name}: field 'architecture.kwargs' does not fit "
                             f"{spec.target}: {exc}") from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a ``torch.save``d state_dict, without unpickling code."""
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: holds pickled Python objects other than tensors, which weights_only "
            "loading refuses. If it is a full module saved with torch.save(model), re-save "
            "model.state_dict() (or safetensors), or set the card's weights.format to "
            "'pickle' and load with trust=True if you trust its source") from exc
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on bad bytes
        if "TorchScript" in str(exc):
            raise WeightsError(f"{path}: is a TorchScript archive; set the card's weights.format "
                               "to 'torchscript'") from exc
        raise WeightsError(f"{path}: cannot read the weights ({_first_line(exc)}); the file is "
                           "corrupt or truncated, or not a PyTorch state_dict") from exc
    return _unwrap_state_dict(data, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ImportError(f"{path}: reading safetensors files needs the 'safetensors' package "
                          "(pip install safetensors)") from exc
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(f"{path}: cannot read the safetensors file ({_first_line(exc)}); "
                           "the file is corrupt or truncated") from exc


def _unwrap_state_dict(data: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(data, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                data = inner
                break
        if data and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
            return dict(data)
    raise WeightsError(f"{path}: expected a state_dict (a mapping of parameter names to tensors, "
                       f"possibly under 'state_dict' or 'model'), got {type(data).__name__}")


def apply_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path,
                     hint: str = "check the card's architecture.kwargs") -> None:
    """Strict load with a readable account of missing, unexpected and mis-shaped tensors; ``hint`` says what to check."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:5]))
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the file: " + ", ".join(missing[:5]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s): " + ", ".join(unexpected[:5]))
        raise WeightsError(f"{path}: weights do not fit the architecture {type(module).__name__} "
                           f"({hint}): " + " | ".join(parts))
    check_finite_weights(state, path)
    module.load_state_dict(state, strict=True)


def _load_torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.jit raises RuntimeError and C++ errors
        raise WeightsError(f"{path}: cannot load the TorchScript archive ({_first_line(exc)}); the "
                           "file is corrupt or truncated, or not TorchScript") from exc


def _load_pickled_module(path: Path, trust: bool) -> nn.Module:
    if not trust:
        raise UntrustedModelError(
            f"{path}: is a pickled full module; unpickling it can run arbitrary code on this "
            "machine. Load it with trust=True only if you trust where it came from, or convert "
            "it to a state_dict/safetensors file with an architecture entry in the card")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot unpickle the module ({_first_line(exc)}); the file is "
                           "corrupt or truncated") from exc
    if not isinstance(obj, nn.Module):
        raise WeightsError(f"{path}: expected a pickled torch.nn.Module, got {type(obj).__name__}")
    return obj


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_checksum(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsError(f"{path}: SHA-256 is {actual} but the card expects {expected}; the "
                           "file is corrupt, truncated or not the one the card was written for")


def check_module(card: ModelCard, module: nn.Module, scripted: bool) -> None:
    """Verify channels, dimensionality and class count against the card.

    The first convolution is inspected for a precise message; then one forward
    pass on a small zero input checks the number of outputs.
    """
    where = card.path or card.name
    if not scripted:
        first = next((m for m in module.modules()
                      if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
        if first is not None:
            name = next(n for n, m in module.named_modules() if m is first)
            conv_dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
            if conv_dims != card.spatial_dims:
                raise ModelCardError(f"{where}: field 'spatial_dims' is {card.spatial_dims} but the "
                                     f"network's first convolution '{name}' is {conv_dims}D")
            if first.in_channels != card.input.channels:
                raise ModelCardError(f"{where}: field 'input.channels' is {card.input.channels} but "
                                     f"the network's first convolution '{name}' takes "
                                     f"{first.in_channels} channel(s)")
    shape = trial_input_shape(card)
    x = torch.zeros((1, card.input.channels) + shape)
    try:
        with torch.inference_mode():
            y = module(x)
    except Exception as exc:  # noqa: BLE001 - report any failure of the dry run
        raise ModelCardError(f"{where}: a test forward pass with input shape {tuple(x.shape)} "
                             f"(from input.channels/size/patch_size) failed: {_first_line(exc)}") from exc
    try:
        y = select_output(y)  # a tuple's first element, as the engine reads it (MONAI's ViT)
    except ValueError as exc:
        raise ModelCardError(f"{where}: {exc}") from exc
    if not isinstance(y, torch.Tensor):
        raise ModelCardError(f"{where}: the network returns {type(y).__name__}; a tensor of logits (or a "
                             "tuple whose first element is one) is required")
    n_out = y.shape[1] if y.ndim >= 2 else 1
    n_classes = card.num_classes
    sigmoid_binary = card.output_activation == "sigmoid" and n_out == n_classes - 1
    if n_out != n_classes and not sigmoid_binary:
        raise ModelCardError(f"{where}: field 'classes' lists {n_classes} classes but the network "
                             f"outputs {n_out} channel(s)")
    if card.task == "segmentation" and tuple(y.shape[2:]) != shape:
        raise ModelCardError(f"{where}: task is segmentation but the output's spatial shape "
                             f"{tuple(y.shape[2:])} differs from the input's {shape}")
    if card.task == "classification" and y.ndim != 2:
        raise ModelCardError(f"{where}: task is classification but the network output has shape "
                             f"{tuple(y.shape)}; expected (N, classes)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
