"""``evaluate``: many metrics in one call, returned as a plain table of per-sample numbers.

The result maps a column name to a list of N floats (one per sample), so it
serialises directly to CSV or a Slicer table: rows are samples, columns are
the keys below.  Metrics that share work (PP and excess prediction; the two
confusion scores) share it.

Metric (``metrics=``)   needs           returned keys
---------------------   -------------   ----------------------------------------------
dice_sweep              mask            dice_best, dice_best_threshold, dice_otsu,
                                        dice_otsu_threshold
pointing_game           mask            pointing_game (1.0 hit / 0.0 miss)
energy_pointing_game    mask            energy_pointing_game
specificity             used voxels     specificity (and the threshold used: specificity_threshold)
sensitivity             used voxels     sensitivity (and specificity_threshold)
prediction_preserved    model           prediction_preserved
excess_prediction       model           excess_prediction
image_preserved         (maps only)     image_preserved
relative_foreground     mask            relative_foreground
deletion_auc            model           deletion_auc
insertion_auc           model           insertion_auc
sanity_randomization    model, method   sanity_spearman_top (top layer randomised),
                                        sanity_spearman_full (every layer randomised)
parameter_randomization model, method   parameter_randomization (Spearman, mean over layers
                                        randomised one at a time)
random_logit            model, method   random_logit (Spearman with a random other class's map)
road_morf               model           road_morf (mean target probability, most relevant
                                        imputed first), road_morf_accuracy (classifiers)
road_lerf               model           road_lerf, road_lerf_accuracy (least relevant first)
average_drop            model           average_drop (ReLU(Y - O) / Y)
increase_in_confidence  model           increase_in_confidence (1.0 where O > Y)
faithfulness_correlation model          faithfulness_correlation (Pearson over random subsets)
max_sensitivity         model, method   max_sensitivity
infidelity              model           infidelity
relevance_mass          mask            relevance_mass (positive relevance inside / total)
relevance_rank          mask            relevance_rank (share of the mask-sized top inside)
sparseness, complexity, effective_complexity   (maps only)   the same names (Gini; entropy; voxel count)
auc, top_k_intersection, attribution_localisation   mask     the same names (top-k: k = 1000 or the
                                        map's size when smaller, unless metric_options gives k)
focus                   tiles           focus; the mosaic's target tiles as metric_options={"focus":
                                        {"tiles": (N, 4 or 8) flags}} (see quantus_localisation)
avg_sensitivity, local_lipschitz, continuity   model, method   the same names
pixel_flipping          model           pixel_flipping (mean score as voxels are removed, low = faithful)
region_perturbation     model           region_perturbation (AOPC of the patch removal curve)
selectivity             model           selectivity (mean score as patches are removed, low = faithful)
irof                    model           irof (area over the relative score curve per segment)
monotonicity            model           monotonicity (1.0 where restoring voxels never lowers the score)
monotonicity_correlation model          monotonicity_correlation (Spearman)
faithfulness_estimate   model           faithfulness_estimate (Pearson, one feature removed at a time)
sensitivity_n           model           sensitivity_n (Pearson, mean over the set sizes n)
sufficiency             model           sufficiency (share of covered samples with the same class)
emprt                   model, method   emprt (relative entropy rise, fully randomised model)
smprt                   model, method   smprt (Spearman of noise-averaged maps, fully randomised model)

"used voxels" is ``used_mask`` when given, ``"occlusion"`` to estimate them
with the engine's occlusion method, and otherwise ``mask``.  Options of a
single metric beyond the shared ones below (ROAD's percentiles, the number of
perturbations, a noise level) go in ``metric_options={name: {option: value}}``
and reach that metric's function unchanged.  The metrics from
parameter_randomization down run only when named (``ON_REQUEST``): each
costs many model passes or explanations, or repeats a default metric.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch

from ._checks import as_maps, as_masks
from .confidence import confidence_change
from .faithfulness import image_preserved, preservation, relative_foreground
from .faithfulness_correlation import faithfulness_correlation
from .localisation import dice_sweep, energy_pointing_game, pointing_game, specificity_sensitivity
from .perturbation import perturbation_curve
from .relevance import relevance_mass_accuracy, relevance_rank_accuracy
from .road import road_curve
from .robustness import infidelity, max_sensitivity
from .sanity import parameter_randomization, random_logit, sanity_randomization
from .usage import occlusion_usage_mask
from .complexity import complexity, effective_complexity, sparseness
from .quantus_localisation import attribution_localisation, auc, focus, top_k_intersection
from .quantus_robustness import avg_sensitivity, continuity, local_lipschitz
from .monotonicity import faithfulness_estimate, monotonicity, monotonicity_correlation
from .randomisation import emprt, smprt
from .removal_curves import irof, pixel_flipping, region_perturbation, selectivity
from .sensitivity_n import sensitivity_n
from .sufficiency import sufficiency

__all__ = ["METRICS", "MAP_ONLY_METRICS", "ON_REQUEST", "evaluate"]

#: Every metric name ``evaluate`` accepts, with what it needs besides the maps.
METRICS: Dict[str, tuple] = {
    "dice_sweep": ("mask",),
    "pointing_game": ("mask",),
    "energy_pointing_game": ("mask",),
    "specificity": ("used",),
    "sensitivity": ("used",),
    "prediction_preserved": ("model",),
    "excess_prediction": ("model",),
    "image_preserved": (),
    "relative_foreground": ("mask",),
    "deletion_auc": ("model",),
    "insertion_auc": ("model",),
    "sanity_randomization": ("model", "method"),
    "parameter_randomization": ("model", "method"),
    "random_logit": ("model", "method"),
    "road_morf": ("model",),
    "road_lerf": ("model",),
    "average_drop": ("model",),
    "increase_in_confidence": ("model",),
    "faithfulness_correlation": ("model",),
    "max_sensitivity": ("model", "method"),
    "infidelity": ("model",),
    "relevance_mass": ("mask",),
    "relevance_rank": ("mask",),
    # Quantus's robustness, localisation and complexity metrics (issue 24).
    "sparseness": (), "complexity": (), "effective_complexity": (),
    "auc": ("mask",), "top_k_intersection": ("mask",), "attribution_localisation": ("mask",), "focus": ("tiles",),
    "avg_sensitivity": ("model", "method"), "local_lipschitz": ("model", "method"), "continuity": ("model", "method"),
}

#: The Quantus faithfulness and randomisation metrics (modules removal_curves, monotonicity, sensitivity_n,
#: sufficiency, randomisation): model-based, named on request, each with its own options in metric_options.
_QUANTUS_FAITHFULNESS = {
    "pixel_flipping": (pixel_flipping, ("model",)),
    "region_perturbation": (region_perturbation, ("model",)),
    "selectivity": (selectivity, ("model",)),
    "irof": (irof, ("model",)),
    "monotonicity": (monotonicity, ("model",)),
    "monotonicity_correlation": (monotonicity_correlation, ("model",)),
    "faithfulness_estimate": (faithfulness_estimate, ("model",)),
    "sensitivity_n": (sensitivity_n, ("model",)),
    "sufficiency": (sufficiency, ("model",)),
    "emprt": (emprt, ("model", "method")),
    "smprt": (smprt, ("model", "method")),
}
METRICS.update({name: needs for name, (_, needs) in _QUANTUS_FAITHFULNESS.items()})

#: Computed only when named in ``metrics`` (not by ``metrics=None``): they run the model or the
#: explanation many times over (ROAD, faithfulness correlation, the robustness and randomisation
#: tests), or give a default metric's number under its other name (relevance mass = energy pointing game).
#: Quantus's complexity and localisation metrics are named too, so that ``metrics=None`` keeps its columns;
#: the command line and the Slicer table compute them by default through ``MAP_ONLY_METRICS``.
ON_REQUEST = frozenset({
    "parameter_randomization", "random_logit", "road_morf", "road_lerf", "average_drop", "increase_in_confidence",
    "faithfulness_correlation", "max_sensitivity", "infidelity", "relevance_mass", "relevance_rank",
    "sparseness", "complexity", "effective_complexity", "auc", "top_k_intersection", "attribution_localisation",
    "focus", "avg_sensitivity", "local_lipschitz", "continuity",
    *_QUANTUS_FAITHFULNESS,
})

#: Metrics that need nothing but the map and a mask (what a heatmap table can show without the model).
MAP_ONLY_METRICS = tuple(name for name, needs in METRICS.items() if set(needs) <= {"mask", "used"} or not needs)


def _metric_list(metrics: Union[None, str, Iterable[str]], available: set) -> List[str]:
    if metrics is None:
        return [name for name, needs in METRICS.items() if set(needs) <= available and name not in ON_REQUEST]
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(dict.fromkeys(metrics))
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid metrics: {', '.join(METRICS)}")
    if not metrics:
        raise ValueError(f"no metric requested; valid metrics: {', '.join(METRICS)}")
    for name in metrics:
        missing = [need for need in METRICS[name] if need not in available]
        if missing:
            hint = {"mask": "pass mask=", "used": "pass mask= or used_mask=", "model": "pass the model and x",
                    "method": "pass method= (the method that made the maps)",
                    "tiles": "pass metric_options={'focus': {'tiles': ...}} (the mosaic tiles holding the target)"}
            raise ValueError(f"metric '{name}' needs {', '.join(missing)}: " + "; ".join(hint[m] for m in missing))
    return metrics


def _column(values: torch.Tensor) -> List[float]:
    return [float(v) for v in values.detach().double().cpu().flatten().tolist()]


def evaluate(model, x: Optional[torch.Tensor], maps, target=None, mask=None,
             metrics: Union[None, str, Sequence[str]] = None, *,
             spacing: Optional[Sequence[float]] = None, tolerance_mm: float = 0.0,
             thresholds: Optional[Sequence[float]] = None,
             used_mask=None, specificity_threshold: Union[float, str] = 0.5,
             activation: Optional[str] = "auto", region=None, baseline=0.0,
             steps: int = 20, batch_size: int = 32, seed: int = 0,
             method: Optional[str] = None, layer=None, explain_options: Optional[dict] = None,
             occlusion_options: Optional[dict] = None, metric_options: Optional[Dict[str, dict]] = None,
             ) -> Dict[str, List[float]]:
    """Compute the requested metrics of ``maps`` (N, *S) and return per-sample columns.

    model, x        the model and its input (N, C, *S); both may be None for map-only metrics
    maps            attribution maps on the input grid, one per sample; or one SimpleITK image
                    (what ``explain_image`` returns): one sample, ``spacing`` taken from it
    target          what the maps explain (None: predicted class); frozen on the unperturbed output
    mask            ground-truth mask (N, *S) or (*S), nonzero = inside; or a SimpleITK image on
                    the map image's grid (size, origin, spacing and direction are checked)
    metrics         names from ``METRICS``; None = every metric whose inputs are given, except
                    those in ``ON_REQUEST``
    spacing         voxel size in mm along the tensor's spatial axes (pointing game)
    tolerance_mm    how far outside the mask the map's maximum may fall (pointing game)
    thresholds      dice sweep thresholds on the normalised map (default 0.05 .. 0.95)
    used_mask       voxels the model uses (specificity / sensitivity): a mask, "occlusion"
                    to estimate them, or None to use ``mask``
    specificity_threshold  map threshold for specificity / sensitivity (a number or "otsu")
    activation      how outputs become probabilities: "auto" (the target's activation, else
                    sigmoid for one output channel, softmax for several), "softmax", "sigmoid"
                    or None (the model returns probabilities); never a softmax over one channel
    region          segmentation only: None (all voxels), "predicted" or a mask (PP / EP)
    baseline        value of removed voxels: a number, "mean", "min" or a tensor
    steps, batch_size, seed  deletion / insertion resolution, batching, order of ties;
                    seed also seeds the sanity check's randomisation
    method, layer, explain_options  how the maps were made, for the sanity check
    occlusion_options  window / stride / baseline of the occlusion estimate (used_mask="occlusion");
                    the window should be small next to the structures the model uses
    metric_options  {metric name: {option: value}} for one metric's own options, e.g.
                    {"road_morf": {"percentiles": (10, 50, 90), "noise": 0.0}}

    Returns ``{key: [float] * N}``; the module docstring lists the keys per metric.
    """
    maps, mask, spacing = _from_images(maps, mask, spacing)
    maps = as_maps(maps)
    available = {"maps"}
    if mask is not None:
        mask = as_masks(mask, maps)
        available.add("mask")
    if model is not None and x is not None:
        available.add("model")
    if used_mask is not None or mask is not None:
        available.add("used")
    if method is not None:
        available.add("method")
    if isinstance(metric_options, dict) and isinstance(metric_options.get("focus"), dict) \
            and metric_options["focus"].get("tiles") is not None:
        available.add("tiles")
    requested = _metric_list(metrics, available)
    explain_options = dict(explain_options or {})
    own = _metric_options(metric_options, requested)

    results: Dict[str, List[float]] = {}
    if "dice_sweep" in requested:
        sweep = dice_sweep(maps, mask, thresholds)
        results["dice_best"] = _column(sweep.best_dice)
        results["dice_best_threshold"] = _column(sweep.best_threshold)
        results["dice_otsu"] = _column(sweep.otsu_dice)
        results["dice_otsu_threshold"] = _column(sweep.otsu_threshold)
    if "pointing_game" in requested:
        results["pointing_game"] = _column(pointing_game(maps, mask, spacing, tolerance_mm))
    if "energy_pointing_game" in requested:
        results["energy_pointing_game"] = _column(energy_pointing_game(maps, mask))
    if "specificity" in requested or "sensitivity" in requested:
        if isinstance(used_mask, str) and used_mask == "occlusion":
            if "model" not in available:
                raise ValueError("used_mask='occlusion' runs the model: pass the model and x")
            used = occlusion_usage_mask(model, x, target, **(occlusion_options or {}))
        else:
            used = mask if used_mask is None else used_mask
        confusion = specificity_sensitivity(maps, used, specificity_threshold)
        for name in ("specificity", "sensitivity"):
            if name in requested:
                results[name] = _column(getattr(confusion, name))
        results["specificity_threshold"] = _column(confusion.threshold)
    if "prediction_preserved" in requested or "excess_prediction" in requested:
        kept = preservation(model, x, maps, target, activation, region, baseline)
        for name in ("prediction_preserved", "excess_prediction"):
            if name in requested:
                results[name] = _column(getattr(kept, name))
    if "image_preserved" in requested:
        results["image_preserved"] = _column(image_preserved(maps))
    if "relative_foreground" in requested:
        results["relative_foreground"] = _column(relative_foreground(maps, mask))
    for mode in ("deletion", "insertion"):
        if f"{mode}_auc" in requested:
            curve = perturbation_curve(model, x, maps, target, mode, steps, baseline, activation, batch_size, seed)
            results[f"{mode}_auc"] = _column(curve.auc)
    if "sanity_randomization" in requested:
        sanity = sanity_randomization(model, x, method, target=target, layer=layer, maps=maps, seed=seed,
                                      **explain_options)
        results["sanity_spearman_top"] = _column(sanity.correlation[0])
        results["sanity_spearman_full"] = _column(sanity.correlation[-1])
    shared = {"target": target, "seed": seed}
    model_shared = {**shared, "activation": activation, "batch_size": batch_size}

    def options_for(name: str, base: dict) -> dict:
        return {**base, **own.get(name, {})}

    explained = {**shared, "layer": layer, "maps": maps, **explain_options}
    if "parameter_randomization" in requested:
        independent = parameter_randomization(model, x, method, **options_for("parameter_randomization", explained))
        results["parameter_randomization"] = _column(independent.correlation.mean(dim=0))
    if "random_logit" in requested:
        other = random_logit(model, x, method, **options_for("random_logit", explained))
        results["random_logit"] = _column(other.correlation)
    for order in ("morf", "lerf"):
        name = f"road_{order}"
        if name in requested:
            road = road_curve(model, x, maps, order=order, **options_for(name, model_shared))
            results[name] = _column(road.mean_score)
            if road.accuracy is not None:
                results[f"{name}_accuracy"] = _column(road.accuracy)
    if "average_drop" in requested or "increase_in_confidence" in requested:
        options = {"target": target, "activation": activation, "region": region, "baseline": baseline,
                   **own.get("average_drop", {}), **own.get("increase_in_confidence", {})}
        change = confidence_change(model, x, maps, **options)
        for name, values in (("average_drop", change.drop), ("increase_in_confidence", change.increase)):
            if name in requested:
                results[name] = _column(values)
    if "faithfulness_correlation" in requested:
        options = options_for("faithfulness_correlation", {**model_shared, "baseline": baseline})
        results["faithfulness_correlation"] = _column(faithfulness_correlation(model, x, maps, **options).correlation)
    if "max_sensitivity" in requested:
        options = options_for("max_sensitivity", {**shared, "layer": layer, "batch_size": batch_size,
                                                  **explain_options})
        results["max_sensitivity"] = _column(max_sensitivity(model, x, method, **options).max_sensitivity)
    if "infidelity" in requested:
        options = options_for("infidelity", model_shared)
        results["infidelity"] = _column(infidelity(model, x, maps, **options).infidelity)
    if "relevance_mass" in requested:
        results["relevance_mass"] = _column(relevance_mass_accuracy(maps, mask))
    if "relevance_rank" in requested:
        results["relevance_rank"] = _column(relevance_rank_accuracy(maps, mask, seed=seed))
    for name, score in (("sparseness", sparseness), ("complexity", complexity),
                        ("effective_complexity", effective_complexity)):
        if name in requested:
            results[name] = _column(score(maps, **own.get(name, {})))
    for name, score in (("auc", auc), ("attribution_localisation", attribution_localisation)):
        if name in requested:
            results[name] = _column(score(maps, mask, **own.get(name, {})))
    if "top_k_intersection" in requested:
        options = options_for("top_k_intersection", {"k": min(1000, maps[0].numel()), "seed": seed})
        results["top_k_intersection"] = _column(top_k_intersection(maps, mask, **options))
    if "focus" in requested:
        results["focus"] = _column(focus(maps, **own["focus"]))
    for name, score in (("avg_sensitivity", avg_sensitivity), ("local_lipschitz", local_lipschitz),
                        ("continuity", continuity)):
        if name in requested:
            base = {"target": target, "layer": layer, "batch_size": batch_size, **explain_options}
            if name != "continuity":
                base["seed"] = seed
            results[name] = _column(getattr(score(model, x, method, **options_for(name, base)), name))
    results.update(_quantus_faithfulness(requested, model, x, maps, own, target=target, baseline=baseline,
                                         activation=activation, batch_size=batch_size, seed=seed, method=method,
                                         layer=layer, explain_options=explain_options))
    return results


def _quantus_faithfulness(requested, model, x, maps, own, *, target, baseline, activation, batch_size, seed,
                          method, layer, explain_options) -> Dict[str, List[float]]:
    """The requested ``_QUANTUS_FAITHFULNESS`` metrics, each given evaluate's shared arguments it takes."""
    shared = {"target": target, "baseline": baseline, "activation": activation, "batch_size": batch_size,
              "seed": seed}
    results: Dict[str, List[float]] = {}
    for name, (function, needs) in _QUANTUS_FAITHFULNESS.items():
        if name not in requested:
            continue
        if name == "sufficiency":
            results[name] = _column(sufficiency(model, x, maps, **own.get(name, {})))
        elif "method" in needs:
            options = {"target": target, "layer": layer, "seed": seed, **explain_options, **own.get(name, {})}
            if name == "emprt":
                options["maps"] = maps
            results[name] = _column(function(model, x, method, **options).score)
        else:
            results[name] = _column(function(model, x, maps, **{**shared, **own.get(name, {})}).score)
    return results


def _metric_options(metric_options: Optional[Dict[str, dict]], requested: List[str]) -> Dict[str, dict]:
    """Check ``metric_options``: requested metrics that take options of their own, mapping to keyword dicts."""
    if metric_options is None:
        return {}
    if not isinstance(metric_options, dict):
        raise TypeError(f"metric_options must be a dict {{metric name: {{option: value}}}}, got "
                        f"{type(metric_options).__name__}")
    unknown = [name for name in metric_options if name not in METRICS]
    if unknown:
        raise ValueError(f"metric_options names unknown metric(s) {unknown}; valid metrics: {', '.join(METRICS)}")
    shared = [name for name in metric_options if name not in ON_REQUEST]
    if shared:
        raise ValueError(f"metric_options is for the metrics with options of their own "
                         f"({', '.join(sorted(ON_REQUEST))}); {shared} take theirs from evaluate's arguments")
    idle = [name for name in metric_options if name not in requested]
    if idle:
        raise ValueError(f"metric_options gives options for {idle}, which are not requested; add them to metrics=")
    for name, options in metric_options.items():
        if not isinstance(options, dict):
            raise TypeError(f"metric_options[{name!r}] must be a dict of keyword arguments, got "
                            f"{type(options).__name__}")
    return dict(metric_options)


def _is_image(value) -> bool:
    """A SimpleITK image, recognised without importing SimpleITK for torch-only callers."""
    return type(value).__module__.split(".")[0] == "SimpleITK" and hasattr(value, "GetSpacing")


def _from_images(maps, mask, spacing):
    """SimpleITK maps / mask -> arrays, their grids checked, the map's spacing (mm) used by default.

    ``explain_image`` returns maps as SimpleITK images on the input's grid and masks are read
    as images; a mask on another grid would silently score the wrong voxels, so it is refused.
    """
    import numpy as np

    if not _is_image(maps) and not _is_image(mask):
        return maps, mask, spacing
    import SimpleITK as sitk

    reference = maps if _is_image(maps) else mask
    if _is_image(maps) and _is_image(mask):
        problem = _grid_difference(maps, mask)
        if problem:
            raise ValueError(f"mask is not on the map's grid ({problem}); resample it onto the map "
                             "(sitk.Resample(mask, map, sitk.Transform(), sitk.sitkNearestNeighbor)) first")
    if spacing is None:
        spacing = tuple(float(v) for v in reversed(reference.GetSpacing()))
    if _is_image(maps):
        if maps.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("maps must be a scalar SimpleITK image (one value per voxel), got "
                             f"{maps.GetNumberOfComponentsPerPixel()} components")
        maps = sitk.GetArrayFromImage(maps).astype(np.float32)[None]
    if _is_image(mask):
        mask = sitk.GetArrayFromImage(mask) != 0
    return maps, mask, spacing


def _grid_difference(a, b) -> str:
    """What differs between two images' grids ("" when they match to 1e-4 relative)."""
    import numpy as np

    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} vs {b.GetSize()}"
    for name in ("Spacing", "Origin", "Direction"):
        first, second = (np.asarray(getattr(image, f"Get{name}")(), dtype=float) for image in (a, b))
        scale = max(1.0, float(np.abs(first).max(initial=0.0)))
        if not np.allclose(first, second, rtol=0.0, atol=1e-4 * scale):
            return f"{name.lower()} {tuple(first.round(4))} vs {tuple(second.round(4))}"
    return ""
