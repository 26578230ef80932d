"""AJR 2018 (Philbrick et al.): is SAM more specific than guided backprop, CAM and Grad-CAM?

On ``ct-phase-2d`` the phantom knows which voxels carry the contrast phase: the
structures whose attenuation depends on the phase (``PHASE_STRUCTURES``: aorta,
arteries, IVC, portal / hepatic / renal veins, liver, spleen, pancreas, kidney
cortex and medulla, renal pelvis, bowel and stomach walls).  Every other voxel
has the same distribution in every phase, so a map lighting it up points at
voxels that cannot tell the phases apart.
"""
from __future__ import annotations

import numpy as np
import torch

import XAIExplainLib as xai
from .common import (Context, Figure, Section, Table, Verdict, compute_maps, fmt, mean, mean_sd,
                              p_text, paired_test, auroc)
from .data import phase_slices
from .figures import overlay_grid, panel_bars

KEY = "ajr2018"
TITLE = "AJR 2018 - SAM specificity on the contrast-phase classifier"
MODEL = "ct-phase-2d"
DEEP = "features.block4"
SHALLOW = ["features.block3", "features.block2", "features.block1"]
TOP_FRACTION = 0.10  # fixed highlight budget: the top 10 % of each map's pixels


def _rows(quick: bool):
    layers = [DEEP] + (SHALLOW[1:2] if quick else SHALLOW)
    rows = []
    for layer in layers:
        rows.append((f"SAM layer-mode @ {layer}", "sam", layer, {"sam_mode": "layer"}))
        rows.append((f"SAM class-mode @ {layer}", "sam", layer, {"sam_mode": "class"}))
        rows.append((f"Grad-CAM @ {layer}", "gradcam", layer, {}))
    rows.append((f"CAM @ {DEEP}", "cam", DEEP, {}))
    rows.append(("Guided backprop", "guided_backprop", None, {}))
    rows.append(("Saliency (reference)", "saliency", None, {}))
    return rows


def _top_fraction_scores(maps: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Specificity and sensitivity of each map's top ``TOP_FRACTION`` pixels (library metric)."""
    spec, sens = [], []
    for m, u in zip(maps, used):
        low, high = float(m.min()), float(m.max())
        norm = (m - low) / (high - low) if high > low else np.zeros_like(m)
        threshold = min(float(np.quantile(norm, 1 - TOP_FRACTION)), 0.999999)
        result = xai.evaluation.specificity_sensitivity(torch.from_numpy(m[None]), torch.from_numpy(u[None]), threshold)
        spec.append(float(result.specificity[0]))
        sens.append(float(result.sensitivity[0]))
    return np.asarray(spec), np.asarray(sens)


def _scores(maps: np.ndarray, used: np.ndarray) -> dict:
    spec_top, sens_top = _top_fraction_scores(maps, used)
    t_maps, t_used = torch.from_numpy(maps), torch.from_numpy(used)
    otsu = xai.evaluation.specificity_sensitivity(t_maps, t_used, "otsu")
    return {
        "spec_top10": spec_top, "sens_top10": sens_top,
        "spec_otsu": otsu.specificity.double().numpy(), "sens_otsu": otsu.sensitivity.double().numpy(),
        "selected_otsu": np.asarray([float((m > t).mean()) for m, t in
                                     zip(_norm(maps), otsu.threshold.double().numpy())]),
        "energy_in_used": xai.evaluation.energy_pointing_game(t_maps, t_used).double().numpy(),
        "auroc": np.asarray([auroc(m, u) for m, u in zip(maps, used)]),
    }


def _norm(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - low) / np.where(high > low, high - low, 1)).reshape(maps.shape)


def run(ctx: Context) -> Section:
    section = Section(
        KEY, TITLE, paper="Philbrick KA et al., What does deep learning see? AJR 2018;211(6):1184-1193",
        claim="SAM (saliency activation map) identifies the input voxels a layer uses and is more specific "
              "than guided backpropagation, CAM and Grad-CAM, also at shallow layers. (The full text was not "
              "available to us; SAM is implemented as our reading of the abstract, see DESIGN.md section 3.)")
    loaded = ctx.model(MODEL)
    module = loaded.module
    count = ctx.size(4, 64)
    data = phase_slices(count, ctx.seed_for(0))
    x, y, used = data["x"], data["y"], data["used"]
    logits = torch.from_numpy(np.concatenate([module(torch.from_numpy(x[i:i + 32])).detach().numpy()
                                              for i in range(0, len(x), 32)]))
    predicted = logits.argmax(1).numpy()
    accuracy = float(np.mean(predicted == y))
    section.protocol = [
        f"{count} fresh abdominal phantom slices on the model grid (128 x 128, 3 mm; balanced over the 4 phases; "
        f"seed {ctx.seed_for(0)}, never used in training). Model accuracy on them: {accuracy:.3f}.",
        "Voxels the classifier can use = union of the masks of the phase-dependent structures "
        f"({', '.join(data['structures'])}); on average {100 * used.mean():.1f} % of a slice. All other "
        "structures have phase-independent attenuation.",
        "Each map explains the predicted class and is min-max normalised. Primary protocol (fixed budget): "
        f"the top {int(TOP_FRACTION * 100)} % of each map's pixels are 'highlighted'; specificity = TN/(TN+FP) "
        "and sensitivity = TP/(TP+FN) against the used voxels. A random choice of pixels scores specificity "
        f"{1 - TOP_FRACTION:.2f}. Secondary: Otsu's threshold per map (then each map picks its own area, so "
        "specificity must be read with sensitivity and the selected share), the share of map energy inside "
        "the used voxels, and the ROC AUC of the map as a detector of used voxels (threshold-free).",
        "CAM is ReLU(raw CAM) min-max normalised (the engine's display of signed maps takes the magnitude); "
        "guided backprop and saliency are magnitudes. SAM layer-mode = |d sum ReLU(A_l) / dx| "
        "(class-agnostic); SAM class-mode uses the Grad-CAM weights of the predicted class.",
        "Comparisons are paired over slices (mean difference, share of slices where SAM is higher, Wilcoxon "
        "signed-rank p).",
    ]
    results, maps_by_row = {}, {}
    for label, method, layer, options in _rows(ctx.quick):
        maps = compute_maps(module, x, method, layer=layer, **options)
        maps_by_row[label] = maps
        results[label] = _scores(maps, used)
        ctx.log(f"    {label}: specificity@top10 {mean(results[label]['spec_top10']):.3f}")

    columns = ["method @ layer", "specificity (top 10 %)", "sensitivity (top 10 %)", "specificity (Otsu)",
               "sensitivity (Otsu)", "share selected (Otsu)", "energy in used voxels", "ROC AUC"]
    rows = []
    for label, r in results.items():
        rows.append([label, mean_sd(r["spec_top10"]), mean_sd(r["sens_top10"]), mean_sd(r["spec_otsu"]),
                     mean_sd(r["sens_otsu"]), fmt(mean(r["selected_otsu"])), mean_sd(r["energy_in_used"]),
                     mean_sd(r["auroc"])])
    section.tables.append(Table(f"Specificity of maps against the phase-informative voxels ({count} slices, "
                                "mean ± SD)", columns, rows))

    # ---- the claim, paired ---------------------------------------------------------------
    layers = [DEEP] + [layer for layer in SHALLOW if f"Grad-CAM @ {layer}" in results]
    comparisons, verdicts, wins = [], {}, {}
    for mode in ("layer", "class"):
        for layer in layers:
            sam = f"SAM {mode}-mode @ {layer}"
            others = ["Guided backprop", f"CAM @ {DEEP}", f"Grad-CAM @ {layer}"]
            outcomes = []
            for other in others:
                test = paired_test(results[sam]["spec_top10"], results[other]["spec_top10"])
                auc_test = paired_test(results[sam]["auroc"], results[other]["auroc"])
                better = test["mean_diff"] > 0 and (test["p"] < 0.05 if np.isfinite(test["p"]) else True)
                outcomes.append(better)
                wins[(mode, layer, other)] = better
                comparisons.append([sam, other, fmt(test["mean_diff"], 4), fmt(test["win_rate"], 2),
                                    p_text(test["p"]), fmt(auc_test["mean_diff"], 4), "yes" if better else "no"])
            verdicts[(mode, layer)] = all(outcomes)
    section.tables.append(Table(
        "Paired comparison of specificity at the fixed 10 % budget (SAM minus other; 'more specific' needs a "
        "positive difference and Wilcoxon p < 0.05 when n >= 5); the ROC AUC difference is shown alongside",
        ["SAM", "compared with", "Δ specificity", "share of slices SAM higher", "p", "Δ ROC AUC",
         "SAM more specific"], comparisons))
    for mode in ("layer", "class"):
        sam = f"SAM {mode}-mode @ {DEEP}"
        spec = {label: mean(results[label]["spec_top10"]) for label in results}
        section.verdicts.append(Verdict(
            f"SAM ({mode} mode) is more specific than CAM and Grad-CAM at the deep layer ({DEEP})",
            wins[(mode, DEEP, f"CAM @ {DEEP}")] and wins[(mode, DEEP, f"Grad-CAM @ {DEEP}")],
            f"specificity@top10: SAM {spec[sam]:.3f} vs CAM {spec[f'CAM @ {DEEP}']:.3f}, Grad-CAM "
            f"{spec[f'Grad-CAM @ {DEEP}']:.3f}"))
        section.verdicts.append(Verdict(
            f"SAM ({mode} mode) is more specific than guided backprop", wins[(mode, DEEP, "Guided backprop")],
            f"specificity@top10: SAM {spec[sam]:.3f} vs guided backprop {spec['Guided backprop']:.3f} (ROC AUC "
            f"{mean(results[sam]['auroc']):.3f} vs {mean(results['Guided backprop']['auroc']):.3f})"))
        section.verdicts.append(Verdict(
            f"SAM ({mode} mode) stays more specific than Grad-CAM at shallow layers ({', '.join(layers[1:])})",
            all(wins[(mode, layer, f"Grad-CAM @ {layer}")] for layer in layers[1:]),
            "; ".join(f"{layer}: SAM {spec[f'SAM {mode}-mode @ {layer}']:.3f} vs Grad-CAM "
                      f"{spec[f'Grad-CAM @ {layer}']:.3f}" for layer in layers[1:])))
    section.notes.append(
        "On this GAP + linear head Grad-CAM at the last block equals CAM (its weights are the class weights "
        "divided by the number of positions), so their rows coincide; SAM class mode at the last block "
        "differs from plain saliency only by the ReLU inside its spatial sum, and their rows are close.")

    # ---- figures -------------------------------------------------------------------------
    figure_rows = [f"SAM layer-mode @ {DEEP}", f"SAM layer-mode @ {layers[-1]}", f"SAM class-mode @ {DEEP}",
                   "Guided backprop", f"CAM @ {DEEP}", f"Grad-CAM @ {DEEP}", f"Grad-CAM @ {layers[-1]}"]
    examples = [int(np.flatnonzero(y == c)[0]) for c in range(4) if np.any(y == c)]
    cells = []
    for i in examples:
        row = [{"image": x[i, 0], "map": None, "contour": used[i]}]
        row += [{"image": x[i, 0], "map": maps_by_row[label][i], "contour": None} for label in figure_rows]
        cells.append(row)
    names = ["image + used voxels"] + [label.replace(" @ ", "\n@ ").replace("features.", "") for label in figure_rows]
    path = overlay_grid(ctx.figure_path("ajr2018_overlays.png"), cells, names,
                        [data["classes"][y[i]] for i in examples],
                        "ct-phase-2d: maps of the predicted phase (cyan: phase-informative voxels)")
    section.figures.append(Figure(path.name, "One slice per phase: the voxels that carry the phase (cyan "
                                             "contour) and the maps of each method (each map scaled to its "
                                             "99.5th percentile for display)."))
    labels = list(results)
    path = panel_bars(ctx.figure_path("ajr2018_specificity.png"), [l.replace("features.", "") for l in labels], [
        {"name": "specificity, top 10 % (dashed: random)", "means": [mean(results[l]["spec_top10"]) for l in labels],
         "sds": [float(np.std(results[l]["spec_top10"])) for l in labels], "xlim": (0.85, 1.0), "reference": 0.9},
        {"name": "sensitivity, top 10 %", "means": [mean(results[l]["sens_top10"]) for l in labels],
         "sds": [float(np.std(results[l]["sens_top10"])) for l in labels], "xlim": (0, 1), "color": "tab:orange"},
        {"name": "ROC AUC (threshold-free)", "means": [mean(results[l]["auroc"]) for l in labels],
         "sds": [float(np.std(results[l]["auroc"])) for l in labels], "xlim": (0.4, 1.0), "reference": 0.5,
         "color": "tab:green"}],
        "ct-phase-2d: maps against the phase-informative voxels (mean ± SD over slices)")
    section.figures.append(Figure(path.name, "Specificity and sensitivity at the fixed 10 % budget and ROC AUC "
                                             "per method and layer (mean ± SD over slices)."))
    shallow_layer = layers[-1]
    section.measured = (
        f"specificity of the top 10 % at {DEEP.split('.')[-1]}: SAM {mean(results[f'SAM layer-mode @ {DEEP}']['spec_top10']):.3f} "
        f"(class mode {mean(results[f'SAM class-mode @ {DEEP}']['spec_top10']):.3f}), guided backprop "
        f"{mean(results['Guided backprop']['spec_top10']):.3f}, CAM {mean(results[f'CAM @ {DEEP}']['spec_top10']):.3f}, "
        f"Grad-CAM {mean(results[f'Grad-CAM @ {DEEP}']['spec_top10']):.3f}; at {shallow_layer.split('.')[-1]}: SAM "
        f"{mean(results[f'SAM layer-mode @ {shallow_layer}']['spec_top10']):.3f} vs Grad-CAM "
        f"{mean(results[f'Grad-CAM @ {shallow_layer}']['spec_top10']):.3f} (random: 0.900; {count} slices)")
    section.data = {
        "slices": count, "seed": ctx.seed_for(0), "model_accuracy": accuracy,
        "used_fraction": float(used.mean()),
        "per_method": {label: {k: float(mean(v)) for k, v in r.items()} for label, r in results.items()},
        "verdicts": {f"{mode}@{layer}": bool(v) for (mode, layer), v in verdicts.items()},
    }
    return section
