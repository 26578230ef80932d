"""XAIExplainLib: the inference and attribution engine behind the XAIExplain Slicer module.

Importable without Slicer. The public API is re-exported here so that a console
user needs one import::

    import XAIExplainLib as xai
    maps = xai.explain(model, x, "gradcam")
"""
__version__ = "0.1.0"
