"""XAIExplainLib: the inference and attribution engine behind the XAIExplain Slicer module.

Importable without Slicer. The entry points are re-exported here so that a console
user needs one import (metrics: ``XAIExplainLib.evaluation``)::

    import XAIExplainLib as xai
    maps = xai.explain(model, x, "gradcam")                 # (N, *S) in [0, 1]
    many = xai.explain_many(model, x, ["gradcam", "hirescam"])
    vol = xai.explain_volume(model, volume, "gradcam", mode="slices", axis=0)
    res = xai.explain_image(xai.load_model("ct-phase-2d"), image, methods=["gradcam"])
    scores = xai.evaluate(model, x, many["gradcam"], mask=mask)    # or xai.evaluation.dice_sweep(...)

The names are loaded on first use (PEP 562), so that ``XAIExplainLib.logic`` and
``XAIExplainLib.mrml`` import inside Slicer before PyTorch is installed.
"""
from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

#: The public names at the top, and the part of the package each lives in. Metrics are
#: ``XAIExplainLib.evaluation``'s (``from XAIExplainLib import evaluation``), layer helpers
#: ``XAIExplainLib.engine``'s, model cards and loaders ``XAIExplainLib.models``'.
_WHERE = {
    "explain": "engine", "explain_many": "engine", "explain_volume": "engine", "predict_volume": "engine",
    "METHODS": "engine", "SegmentationTarget": "engine",
    "load_model": "models", "list_models": "models", "explain_image": "models", "predict_image": "models",
    "evaluate": "evaluation",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: import only that
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
