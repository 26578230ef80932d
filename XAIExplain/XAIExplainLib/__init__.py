"""XAIExplainLib: the inference and attribution engine behind the XAIExplain Slicer module.

Importable without Slicer. The public API is re-exported here so that a console
user needs one import::

    import XAIExplainLib as xai
    maps = xai.explain(model, x, "gradcam")                 # (N, *S) in [0, 1]
    many = xai.explain_many(model, x, ["gradcam", "hirescam"])
    vol = xai.explain_volume(model, volume, "gradcam", mode="slices", axis=0)
"""
from .engine import METHODS, MethodInfo, explain, explain_many, list_layers, resolve_target
from .engine.volume import explain_volume, predict_volume

__version__ = "0.1.0"

__all__ = [
    "METHODS", "MethodInfo", "explain", "explain_many", "explain_volume", "list_layers", "predict_volume",
    "resolve_target",
]
