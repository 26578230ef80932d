"""The card form: build the network a card (or a bare file's description) names and load its weights.

The architecture is resolved by :func:`models.trust.resolve_class` (an allowed
module imported, one ``nn.Module`` class), what needs trust is checked first
(:func:`models.trust.check_card`), the weights are read without executing code
(:mod:`models.weights_io`) and the result is checked against the description
(:mod:`models.network_checks`). The TorchScript and state-dict forms describe
their file as a card and come here too.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .card import ModelCard, load_card
from .errors import ModelCardError, WeightsError
from .loaded import LoadedModel
from .network_checks import check_module
from .search_paths import resolve_card_path
from .trust import check_card, check_no_fetch, check_torchscript, resolve_class
from .weight_integrity import check_archive_sizes, check_module_weights
from .weights_io import (apply_state_dict, file_sha256, load_pickled_module,
                         load_torchscript_archive, read_state_dict, verify_checksum)


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
    check_card(card, trust)  # files inside the folder, code and downloads need trust
    if not path.is_file():
        where = f"{card.path}: " if card.path else ""
        raise FileNotFoundError(f"{where}weights file {path} does not exist (card field "
                                "'weights.file', relative to the card's folder)")
    if card.weights.sha256 is not None:
        verify_checksum(path, card.weights.sha256)
    fmt = card.weights.format
    if fmt == "torchscript":
        check_torchscript(path, trust)
        scripted = load_torchscript_archive(path)
        check_module_weights(scripted, path)
        return scripted, True
    if fmt == "onnx":
        from .onnx_network import convert_onnx

        return convert_onnx(path, trust), False
    if fmt == "exported_program":
        from .exported_program_network import load_exported_program

        return load_exported_program(path, trust)
    if fmt == "pickle":
        pickled = load_pickled_module(path, trust)
        check_module_weights(pickled, path)
        return pickled, False
    module = build_architecture(card, trust=trust)
    check_archive_sizes(path, module)
    state = read_state_dict(path)
    apply_state_dict(module, state, path)
    return module, False


def build_architecture(card: ModelCard, trust: bool = False) -> nn.Module:
    """Instantiate ``card.architecture`` (an ``nn.Module`` subclass) with its kwargs.

    The class is resolved by :func:`models.trust.resolve_class` (the module checked
    against the allow-list before it is imported, one attribute, an ``nn.Module``
    subclass) and arguments that would download weights need trust.
    """
    spec = card.architecture
    if spec is None:
        raise ModelCardError(f"{card.path or card.name}: field 'architecture' is missing")
    where = str(card.path or card.name)
    obj = resolve_class(spec.target, nn.Module, trust=trust, where=where, field="field 'architecture.class'")
    check_no_fetch(obj, spec.kwargs, trust, where, "field 'architecture'")
    try:
        return obj(**dict(spec.kwargs))
    except TypeError as exc:
        raise ModelCardError(f"{card.path or card.name}: field 'architecture.kwargs' does not fit "
                             f"{spec.target}: {exc}") from exc
