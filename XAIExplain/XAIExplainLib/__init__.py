"""XAIExplainLib: the inference and attribution engine behind the XAIExplain Slicer module.

Importable without Slicer. The public API is re-exported here so that a console
user needs one import::

    import XAIExplainLib as xai
    maps = xai.explain(model, x, "gradcam")                 # (N, *S) in [0, 1]
    many = xai.explain_many(model, x, ["gradcam", "hirescam"])
    vol = xai.explain_volume(model, volume, "gradcam", mode="slices", axis=0)
"""
from . import engine, evaluation
from .engine import *  # noqa: F401,F403  (the engine's public API: see engine.__all__)
from .evaluation import *  # noqa: F401,F403  (metrics: see evaluation.__all__)

__version__ = "0.1.0"

__all__ = list(engine.__all__) + list(evaluation.__all__)
