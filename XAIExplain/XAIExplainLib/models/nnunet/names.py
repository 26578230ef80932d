"""Every name plans.json gives nnU-Net, resolved and checked by us before nnU-Net sees it.

plans.json names the network class and its building blocks (``conv_op``, ``norm_op``,
``dropout_op``, ``nonlin``) as import paths that nnU-Net hands to ``pydoc.locate``, which
walks attributes past the last module: ``torch.nn.modules.module.torch.os.system`` starts
with ``torch.nn.`` and ends at ``os.system``, called with the plans' ``nonlin_kwargs``.
So each of them is resolved by :func:`models.trust.resolve_class` (an allowed module, one
attribute, a ``torch.nn.Module`` subclass) and replaced by the class's canonical name
(:func:`models.trust.canonical_name`), which nnU-Net's lookup maps back to exactly that class.

The other names (preprocessor, normalisation schemes, resampling functions, label manager)
nnU-Net finds by searching its own packages only; what it finds is checked to be of the
expected kind before anything calls it (a module of ``nnunetv2`` may hold imported helpers
such as ``save_json`` under any name).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import ModelCardError
from ..trust import canonical_name, check_no_fetch, resolve_class
from .library import nnunetv2

#: Where a network class (``network_class_name``) may come from without trust.
NETWORK_MODULES = ("dynamic_network_architectures",)
#: Where building blocks (``conv_op``, ``norm_op``, ``dropout_op``, ``nonlin``) may come from without trust.
BLOCK_MODULES = ("torch.nn", "dynamic_network_architectures")


def resolve_architecture(configuration_manager, plans_file: Path, trust: bool) -> None:
    """Resolve the configuration's network and block names in place (in nnU-Net's own copy).

    Raises ``UntrustedModelError`` for a module outside the allow-lists (unless ``trust``),
    ``ModelCardError`` for a name that is not an ``nn.Module`` class (also with trust).
    """
    where = str(plans_file)
    architecture = configuration_manager.configuration.get("architecture")
    if not isinstance(architecture, dict) or not isinstance(architecture.get("arch_kwargs"), dict):
        raise ModelCardError(f"{where}: the configuration's 'architecture' must be an object with "
                             "'network_class_name' and 'arch_kwargs'; restore the plans.json nnU-Net wrote")
    kwargs = architecture["arch_kwargs"]
    to_import = architecture.get("_kw_requires_import", [])
    if not isinstance(to_import, list) or not all(isinstance(key, str) for key in to_import):
        raise ModelCardError(f"{where}: architecture '_kw_requires_import' must be a list of argument names, "
                             f"got {to_import!r}")
    network = resolve_class(architecture.get("network_class_name"), nn.Module, trust=trust, where=where,
                            field="architecture 'network_class_name'", allowed=NETWORK_MODULES)
    for key in to_import:
        if key not in kwargs:
            raise ModelCardError(f"{where}: architecture '_kw_requires_import' lists {key!r}, which "
                                 "'arch_kwargs' does not have")
        if kwargs[key] is not None:
            block = resolve_class(kwargs[key], nn.Module, trust=trust, where=where,
                                  field=f"architecture 'arch_kwargs.{key}'", allowed=BLOCK_MODULES)
            kwargs[key] = canonical_name(block)
    check_no_fetch(network, kwargs, trust, where, "the architecture")
    architecture["network_class_name"] = canonical_name(network)


def check_helpers(plans_manager, configuration_manager, plans_file: Path) -> None:
    """The preprocessor, normalisations, resamplings and label manager nnU-Net finds are of their kind."""
    where = str(plans_file)
    preprocessors = nnunetv2("preprocessing.preprocessors.default_preprocessor")
    normalization = nnunetv2("preprocessing.normalization.default_normalization_schemes")
    labels = nnunetv2("utilities.label_handling.label_handling")
    finder = nnunetv2("utilities.find_class_by_name")
    _is_class(configuration_manager.preprocessor_class, preprocessors.DefaultPreprocessor, where,
              f"'preprocessor_name' {configuration_manager.preprocessor_name!r}")
    folder = Path(nnunetv2("preprocessing.normalization").__file__).parent
    schemes = configuration_manager.normalization_schemes
    if not isinstance(schemes, list):
        raise ModelCardError(f"{where}: 'normalization_schemes' must be a list of scheme names, got {schemes!r}")
    for scheme in schemes:
        found = finder.recursive_find_python_class(str(folder), scheme, "nnunetv2.preprocessing.normalization") \
            if isinstance(scheme, str) and scheme.isidentifier() else None
        _is_class(found, normalization.ImageNormalization, where, f"normalization scheme {scheme!r}")
    for key in ("resampling_fn_data", "resampling_fn_seg", "resampling_fn_probabilities"):
        name = configuration_manager.configuration.get(key)
        try:
            function = getattr(configuration_manager, key).func
        except Exception as exc:  # noqa: BLE001 - nnU-Net raises what its search raises
            raise ModelCardError(f"{where}: {key} {name!r} is not a resampling function of nnU-Net "
                                 f"({exc})") from exc
        if not callable(function) or isinstance(function, type) or \
                not getattr(function, "__module__", "").startswith("nnunetv2.preprocessing.resampling"):
            raise ModelCardError(f"{where}: {key} {name!r} is not one of nnU-Net's resampling functions "
                                 "(nnunetv2.preprocessing.resampling); restore the plans.json nnU-Net wrote")
    _is_class(plans_manager.label_manager_class, labels.LabelManager, where,
              f"'label_manager' {plans_manager.plans.get('label_manager')!r}")


def _is_class(found, base: type, where: str, what: str) -> None:
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ModelCardError(f"{where}: {what} is not an nnU-Net {base.__name__} (nnU-Net found "
                             f"{type(found).__name__ if not isinstance(found, type) else found.__qualname__}); "
                             "restore the plans.json nnU-Net wrote")
