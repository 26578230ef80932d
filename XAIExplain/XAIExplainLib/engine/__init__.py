"""The attribution engine: torch only (no Slicer, VTK or SimpleITK here)."""
from .api import explain, explain_many
from .layers import list_layers
from .registry import METHODS, MethodInfo, register
from .targets import resolve_target

__all__ = ["explain", "explain_many", "list_layers", "METHODS", "MethodInfo", "register", "resolve_target"]
