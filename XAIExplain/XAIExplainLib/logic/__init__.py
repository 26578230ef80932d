"""The Slicer module's logic: runs (validate, compute, publish; in the background as jobs), the model
catalogue, heatmap metrics.

Imports neither torch nor Slicer at import time, so the panel can list models and offer to
install PyTorch first.
"""
from .explain_job import ExplainCancelled, ExplainJob
from .explain_logic import InputRemovedError, OutputNodes, XAIExplainLogic
from .model_catalogue import ModelCatalogue

__all__ = ["ExplainCancelled", "ExplainJob", "InputRemovedError", "ModelCatalogue", "OutputNodes", "XAIExplainLogic"]
