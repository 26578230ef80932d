"""The attribution engine: torch only (no Slicer, VTK or SimpleITK here)."""
from .api import explain, explain_many
from .layers import list_layers
from .decoder_layers import decoder_layers
from .normalize import normalize_volume
from .registry import METHODS, MethodInfo, register
from .methods.crm_class_maps import crm_roi_map
from .targets import SegmentationTarget, resolve_target
from .volume import explain_volume, predict_volume

__all__ = [
    "METHODS", "MethodInfo", "explain", "explain_many", "explain_volume", "list_layers", "normalize_volume",
    "predict_volume",
    "register", "resolve_target",
    "SegmentationTarget", "crm_roi_map", "decoder_layers",
]
