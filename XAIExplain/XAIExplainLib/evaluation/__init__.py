"""Evaluation of attribution maps: localisation, faithfulness, robustness and sanity metrics.

Every metric works on maps (N, *S), 2D or 3D, batched over N, with torch ops
on the maps' device.  ``evaluate`` runs several at once and returns plain
per-sample columns; the individual functions return tensors and, where a
metric has more to say (a sweep, a curve), a small result object.

``__all__`` is the metrics, their result types and ``evaluate``; helpers they share
(rank correlation, baselines, imputation) stay in their modules (``evaluation.sanity``, ...).
"""
from .api import MAP_ONLY_METRICS, METRICS, ON_REQUEST, evaluate
from .confidence import ConfidenceChange, average_drop, confidence_change, increase_in_confidence
from .faithfulness import (
    Preservation,
    excess_prediction,
    image_preserved,
    prediction_preserved,
    preservation,
    relative_foreground,
)
from .faithfulness_correlation import FaithfulnessCorrelation, faithfulness_correlation
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
from .perturbation import PerturbationCurve, deletion_auc, insertion_auc, perturbation_curve
from .relevance import relevance_mass_accuracy, relevance_rank_accuracy
from .road import DEFAULT_PERCENTILES, RoadCurve, road, road_curve
from .robustness import Infidelity, MaxSensitivity, infidelity, max_sensitivity
from .sanity import (
    RandomLogitResult,
    SanityResult,
    parameter_randomization,
    random_logit,
    sanity_randomization,
)
from .usage import occlusion_usage_mask
from .complexity import complexity, effective_complexity, sparseness
from .quantus_localisation import attribution_localisation, auc, focus, mosaic, tile_mask, top_k_intersection
from .quantus_robustness import (AvgSensitivity, Continuity, LocalLipschitz, avg_sensitivity, continuity,
                                 local_lipschitz)
from .monotonicity import StepScores, faithfulness_estimate, monotonicity, monotonicity_correlation
from .randomisation import RandomisationScore, discrete_entropy, emprt, smprt
from .removal_curves import RemovalCurve, irof, pixel_flipping, region_perturbation, selectivity
from .sensitivity_n import SensitivityN, sensitivity_n
from .sufficiency import sufficiency

__all__ = [
    "METRICS", "MAP_ONLY_METRICS", "ON_REQUEST", "evaluate",
    "DEFAULT_THRESHOLDS", "DiceSweep", "dice_sweep", "otsu_threshold",
    "SpecificityResult", "specificity_sensitivity", "specificity", "sensitivity", "occlusion_usage_mask",
    "pointing_game", "energy_pointing_game",
    "Preservation", "preservation", "prediction_preserved", "excess_prediction", "image_preserved",
    "relative_foreground",
    "PerturbationCurve", "perturbation_curve", "deletion_auc", "insertion_auc",
    "SanityResult", "sanity_randomization",
    "parameter_randomization", "RandomLogitResult", "random_logit",
    "RoadCurve", "road_curve", "road", "DEFAULT_PERCENTILES",
    "ConfidenceChange", "confidence_change", "average_drop", "increase_in_confidence",
    "FaithfulnessCorrelation", "faithfulness_correlation",
    "MaxSensitivity", "max_sensitivity", "Infidelity", "infidelity",
    "relevance_mass_accuracy", "relevance_rank_accuracy",
    "sparseness", "complexity", "effective_complexity",
    "auc", "top_k_intersection", "attribution_localisation", "focus", "mosaic", "tile_mask",
    "AvgSensitivity", "avg_sensitivity", "LocalLipschitz", "local_lipschitz", "Continuity", "continuity",
    # Quantus's faithfulness and randomisation metrics (issue 24)
    "RemovalCurve", "pixel_flipping", "region_perturbation", "selectivity", "irof",
    "StepScores", "monotonicity", "monotonicity_correlation", "faithfulness_estimate",
    "SensitivityN", "sensitivity_n", "sufficiency", "RandomisationScore", "emprt", "smprt", "discrete_entropy",
]
