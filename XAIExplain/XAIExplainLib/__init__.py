"""XAIExplainLib: the inference and attribution engine behind the XAIExplain Slicer module.

Importable without Slicer. The public API is re-exported here so that a console
user needs one import::

    import XAIExplainLib as xai
    maps = xai.explain(model, x, "gradcam")                 # (N, *S) in [0, 1]
    many = xai.explain_many(model, x, ["gradcam", "hirescam"])
    vol = xai.explain_volume(model, volume, "gradcam", mode="slices", axis=0)
    res = xai.explain_image(xai.load_model("ct-phase-2d"), image, methods=["gradcam"])

The names are loaded on first use (PEP 562), so that ``XAIExplainLib.logic`` and
``XAIExplainLib.mrml`` import inside Slicer before PyTorch is installed.
"""
from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

_API_MODULES = ("engine", "evaluation", "models")


def _api_module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str):
    if name == "__all__":
        return [item for module in _API_MODULES for item in _api_module(module).__all__]
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: import only that
        return _api_module(name)
    for module_name in _API_MODULES:
        module = _api_module(module_name)
        if name in module.__all__:
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__getattr__("__all__")))
