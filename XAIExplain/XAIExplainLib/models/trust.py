"""What a model file may make this process do without ``trust=True``.

Model files are untrusted data.  These things in them can run code or reach
outside the model, so each needs the caller's explicit ``trust=True``
(``--trust-model`` on the command line) and is refused with the reason
otherwise:

* an architecture named outside the allow-list below: importing a module runs
  its top-level code (``"this:Foo"`` prints a poem; a module on ``sys.path``
  could do anything), so the module name is checked *before* the import;
* TorchScript: a scripted module is a program (it can call
  ``torch.from_file(path, shared=True, ...)``, which creates or overwrites any
  file the user can write), and loading it is followed by a test forward pass;
* ``torch.export`` programs (``.pt2``): ``torch.export.load`` unpickles the
  archive's pickled weights and constants (``torch.load(..., weights_only=False)``,
  ``pickle.loads``), so a crafted file runs code while it loads, and its graph
  may call custom operators that other code registers;
* ONNX files naming custom operator domains (operators implemented by code
  outside the file); standard ONNX is data and loads without trust;
* files a card or sidecar names outside its own folder (``../../secret.pt`` or
  an absolute path), and files that are links leading out of it: a downloaded
  model folder must be self-contained, whatever its form;
* network arguments that fetch weights from the internet or write into a cache
  (``pretrained=True``, ``pretrained_url=...``, hub and cache folders, and the
  networks that always download): loading a model reads its own folder only.

Names of classes in model files (a card's ``architecture``, nnU-Net's plans,
bundle names) are resolved by :func:`resolve_class` only: module and attribute
are split, only an allowed module is imported, exactly one attribute is taken,
and it must be a class of the expected kind.  Never ``pydoc.locate`` or an
attribute walk: ``torch.nn.modules.module.torch.os.system`` starts with
``torch.nn.`` and walks to ``os.system``.

Pickled full modules need trust for the same reason (:func:`check_card`).
This is the one place these rules live; every form's loader and the trust
question (:mod:`models.trust_check`) call it.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ModelCardError, UntrustedModelError

if TYPE_CHECKING:
    from .card import ModelCard

_PACKAGE = __name__.split(".", 1)[0]

#: Module prefixes whose ``nn.Module`` classes a card or ``architecture=`` may
#: name without trust: this package, torch's layers, and the network libraries
#: of the model families the loader supports (MONAI, nnU-Net's architectures).
ALLOWED_ARCHITECTURE_MODULES = (
    _PACKAGE,
    "torch.nn",
    "monai.networks",
    "dynamic_network_architectures",
    "nnunetv2",
)


def architecture_allowed(module_name: str, allowed: tuple[str, ...] = ALLOWED_ARCHITECTURE_MODULES) -> bool:
    """True when ``module_name`` is one of ``allowed`` (by default :data:`ALLOWED_ARCHITECTURE_MODULES`) or inside one."""
    return any(module_name == prefix or module_name.startswith(prefix + ".") for prefix in allowed)


def check_torchscript(path: Path, trust: bool) -> None:
    """Refuse to load a TorchScript archive unless trusted: it is code that runs when called."""
    if trust:
        return
    raise UntrustedModelError(
        f"{path}: is a TorchScript archive, i.e. a program: loading it runs a test forward "
        "pass, and TorchScript can read and overwrite files (torch.from_file(..., "
        "shared=True)). Load it with trust=True (--trust-model) only if you trust where it "
        "came from, or use a state_dict/safetensors file with a named architecture")


def check_exported_program(path: Path, trust: bool) -> None:
    """Refuse to load a ``torch.export`` archive unless trusted: loading it unpickles."""
    if trust:
        return
    raise UntrustedModelError(
        f"{path}: is a torch.export program (.pt2); torch.export.load unpickles its pickled "
        "weights and constants (torch.load with weights_only=False, pickle.loads), which can run "
        "any code on this machine. Load it with trust=True (--trust-model) only if you trust where "
        "it came from, or export the model to ONNX or a state_dict/safetensors file")


def check_onnx_model(path: Path, domains: list[str], external_files: list[str], trust: bool) -> None:
    """What an ONNX model needs trust for: custom operator ``domains``, ``external_files`` outside.

    Standard ONNX is data: operators of the ONNX standard and tensors.  A custom domain
    names operators whose implementation is code outside the file; tensors stored in
    other files must lie in the .onnx file's folder (:func:`check_inside`).
    """
    path = Path(path)
    for location in external_files:
        check_inside(path.parent / location, path.parent, trust, str(path), "external tensor data")
    if domains and not trust:
        raise UntrustedModelError(
            f"{path}: uses custom ONNX operator domain(s) {', '.join(domains)}, whose operators are "
            "implemented by code outside the file (a runtime's or plug-in's library), not by the "
            "ONNX standard. Load it with trust=True (--trust-model) only if you trust where it came "
            "from, or re-export it with standard operators")


def check_inside(path: Path, folder: Path | None, trust: bool, where: str, field: str) -> None:
    """Refuse a file outside ``folder`` (after resolving ``..`` and links) unless trusted.

    The one rule for every form: a card's weights, nnU-Net's checkpoints and JSON files,
    HD-BET's folds, a bundle's files.

    ``folder`` None means the description was built in code, not read from a
    file, so there is no folder to stay inside.
    """
    if trust or folder is None:
        return
    resolved, root = Path(path).resolve(), Path(folder).resolve()
    if resolved == root or root in resolved.parents:
        return
    link = f" (it leads to {resolved})" if Path(path).is_symlink() or ".." in Path(path).parts else ""
    raise UntrustedModelError(
        f"{where}: {field} {path}{link} lies outside the model folder {folder}; a model's files must "
        "be inside its folder. Move the file into the folder, or load with trust=True "
        "(--trust-model) if you trust the model's source")


def resolve_class(name: Any, base: type, *, trust: bool, where: str, field: str,
                  allowed: tuple[str, ...] = ALLOWED_ARCHITECTURE_MODULES) -> type:
    """The class ``name`` (``"package.module:Class"`` or ``"package.module.Class"``) names.

    The one resolver for class names read from model files: the module part is
    checked against ``allowed`` (unless ``trust``) *before* it is imported, the
    module is imported by its full name (the import system never walks
    attributes), exactly one attribute is taken, and it must be a subclass of
    ``base``, also with trust (nothing else may be called with the file's
    arguments).  Errors name ``where`` and ``field``.
    """
    if not isinstance(name, str):
        raise ModelCardError(f"{where}: {field} must be a class name (a string), got {type(name).__name__}")
    module_name, sep, attribute = name.partition(":")
    if not sep:
        module_name, _, attribute = name.rpartition(".")
    parts = module_name.split(".")
    if not module_name or not all(p.isidentifier() for p in parts) or not attribute.isidentifier() \
            or attribute.startswith("__"):
        raise ModelCardError(f"{where}: {field} must name a class as 'package.module:Class' or "
                             f"'package.module.Class', got {name!r}")
    if not trust and not architecture_allowed(module_name, allowed):
        raise UntrustedModelError(
            f"{where}: {field} names module {module_name!r}, which is outside the modules a model may use "
            f"without trust ({', '.join(allowed)}); importing it would run its code. Load with trust=True "
            "(--trust-model) only if you trust the model's source and that module")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install MONAI: pip install monai)" if module_name.startswith("monai") else ""
        raise ModelCardError(f"{where}: {field} {name!r}: cannot import module {module_name!r}: "
                             f"{exc}{hint}") from exc
    found = getattr(module, attribute, None)
    if found is None:
        raise ModelCardError(f"{where}: {field} {name!r}: module {module_name!r} has no attribute {attribute!r}")
    if not (isinstance(found, type) and issubclass(found, base)):
        what = f"a {type(found).__name__}" if not isinstance(found, type) else f"the class {found.__qualname__}"
        label = "torch.nn.Module" if base.__qualname__ == "Module" and base.__module__.startswith("torch.nn") \
            else f"{base.__module__}.{base.__qualname__}"
        raise ModelCardError(f"{where}: {field} {name!r} is not a {label} subclass (it is {what}); only such "
                             "classes may be built from a model file")
    return found


def canonical_name(cls: type) -> str:
    """``module.Class`` under which a plain import plus one attribute gives back exactly ``cls``.

    Libraries that look names up themselves (nnU-Net's ``pydoc.locate``) are handed this
    name of a class :func:`resolve_class` has already checked, never the file's string.
    """
    module = importlib.import_module(cls.__module__)
    if "." in cls.__qualname__ or getattr(module, cls.__qualname__, None) is not cls:
        raise ModelCardError(f"class {cls.__qualname__} of {cls.__module__} cannot be named by its module and "
                             "one attribute; define it at the top level of its module")
    return f"{cls.__module__}.{cls.__qualname__}"


#: Parts of argument names that make a network fetch or cache weights (MONAI's ``pretrained``,
#: HoVerNet's ``pretrained_url``, Transchex's ``cache_dir``/``path_or_repo_id``, hub folders).
FETCH_WORDS = ("pretrain", "url", "download", "hub", "cache_dir", "model_dir", "weights_path",
               "repo_id", "from_pretrained")

#: Network classes that download weights whatever their arguments (Transchex fetches BERT).
ALWAYS_FETCH = ("monai.networks.nets.transchex.Transchex",)


def fetch_arguments(cls: type, kwargs: Mapping[str, Any]) -> list[str]:
    """The arguments (given, or defaults of ``cls.__init__``) with which building ``cls`` would fetch.

    A given argument counts when its name has a :data:`FETCH_WORDS` part and its value is
    set (not None/False/0/empty); so does such a parameter's default (EfficientNetBN's
    ``pretrained=True``). Nested mappings are searched too.
    """
    found = fetch_options(kwargs)
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        parameters = ()
    for parameter in parameters:
        if parameter.name not in kwargs and parameter.default is not inspect.Parameter.empty \
                and _fetches(parameter.name, parameter.default):
            found.append(f"{parameter.name}={parameter.default!r} (its default)")
    if f"{cls.__module__}.{cls.__qualname__}" in ALWAYS_FETCH:
        found.append("the class itself (it downloads weights whenever it is built)")
    return found


def fetch_options(kwargs: Mapping[str, Any]) -> list[str]:
    """``name=value`` of the options in ``kwargs`` (nested mappings too) that ask for a download."""
    return [f"{key}={value!r}" for key, value in _walk(kwargs) if _fetches(key, value)]


def _walk(kwargs: Mapping[str, Any]):
    for key, value in kwargs.items():
        yield str(key), value
        if isinstance(value, Mapping):
            yield from _walk(value)


def _fetches(key: str, value: Any) -> bool:
    lowered = key.lower()
    if not any(word in lowered for word in FETCH_WORDS) or value is None or value is False:
        return False
    return not (isinstance(value, (int, float, str, list, tuple, dict)) and not value)


def check_no_fetch(cls: type, kwargs: Mapping[str, Any], trust: bool, where: str, field: str) -> None:
    """Refuse (unless trusted) to build ``cls`` with arguments that download or cache weights."""
    found = fetch_arguments(cls, kwargs)
    if found and not trust:
        raise UntrustedModelError(
            f"{where}: {field} builds {cls.__qualname__} with {', '.join(found)}, which would fetch weights "
            "from the internet and write them into a cache outside the model folder; a model must bring its "
            "weights in its folder. Set the option off (false/null), or load with trust=True (--trust-model) "
            "if you want the download")


def check_card(card: "ModelCard", trust: bool = False) -> None:
    """What a card (or a bare file's description) needs trust for, checked before anything loads.

    The weights lie inside the card's folder (links included), TorchScript and pickled
    modules need trust, the architecture is resolved by :func:`resolve_class` (an
    allowed module imported, one ``nn.Module`` class), and arguments that would download
    weights need trust.
    """
    from torch import nn

    where = str(card.path or card.name)
    check_inside(card.weights.file, card.base_dir, trust, where, "weights file")
    if card.weights.format == "torchscript":
        check_torchscript(card.weights.file, trust)
    elif card.weights.format == "exported_program":
        check_exported_program(card.weights.file, trust)
    elif card.weights.format == "pickle" and not trust:
        raise UntrustedModelError(
            f"{card.weights.file}: is a pickled full module; unpickling it can run arbitrary code on this "
            "machine. Load it with trust=True (--trust-model) only if you trust where it came from, or convert "
            "it to a state_dict/safetensors file with an architecture entry in the card")
    if card.architecture is not None and card.weights.format == "state_dict":
        network = resolve_class(card.architecture.target, nn.Module, trust=trust, where=where,
                                field="field 'architecture.class'")
        check_no_fetch(network, card.architecture.kwargs, trust, where, "field 'architecture'")
