"""Evaluation of attribution maps: localisation, faithfulness and sanity metrics.

Every metric works on maps (N, *S), 2D or 3D, batched over N, with torch ops
on the maps' device.  ``evaluate`` runs several at once and returns plain
per-sample columns; the individual functions return tensors and, where a
metric has more to say (a sweep, a curve), a small result object.
"""
from .api import METRICS, evaluate
from .faithfulness import (
    Preservation,
    excess_prediction,
    image_preserved,
    prediction_preserved,
    preservation,
    relative_foreground,
)
from .localisation import (
    DEFAULT_THRESHOLDS,
    DiceSweep,
    SpecificityResult,
    dice_sweep,
    energy_pointing_game,
    otsu_threshold,
    pointing_game,
    sensitivity,
    specificity,
    specificity_sensitivity,
)
from .perturbation import BASELINES, PerturbationCurve, baseline_like, deletion_auc, insertion_auc, perturbation_curve
from .sanity import SanityResult, parameterized_layers, rank_correlation, sanity_randomization
from .usage import occlusion_usage_mask

__all__ = [
    "METRICS", "evaluate",
    "DEFAULT_THRESHOLDS", "DiceSweep", "dice_sweep", "otsu_threshold",
    "SpecificityResult", "specificity_sensitivity", "specificity", "sensitivity", "occlusion_usage_mask",
    "pointing_game", "energy_pointing_game",
    "Preservation", "preservation", "prediction_preserved", "excess_prediction", "image_preserved",
    "relative_foreground",
    "BASELINES", "baseline_like", "PerturbationCurve", "perturbation_curve", "deletion_auc", "insertion_auc",
    "SanityResult", "sanity_randomization", "rank_correlation", "parameterized_layers",
]
