"""Diagnostics 2019 (Kim, Rajaraman, Antani): does CRM localise the discriminative region better?

On ``lung-nodule-2d`` the discriminative region of a "nodule" slice is the
nodule, whose mask the phantom gives (and an expert gave on the real lung1 CT).
"""
from __future__ import annotations

import numpy as np
import torch

import XAIExplainLib as xai
from .common import (Context, Figure, Section, Skip, Table, Verdict, compute_maps, fmt, mean, mean_sd,
                              p_text, paired_test, predict)
from .data import lung1_on_model_grid, nodule_slices
from .figures import map_panels, overlay_grid

KEY = "crm2019"
TITLE = "Diagnostics 2019 - CRM vs CAM and Grad-CAM on the nodule classifier"
PAPER = ("Kim I, Rajaraman S, Antani S. Visual interpretation of convolutional neural network predictions in "
         "classifying medical image modalities. Diagnostics 2019;9(2):38")
MODEL = "lung-nodule-2d"
LAYER = "features.block4"
NODULE = 1
TOLERANCE_MM = 5.0
ROWS = [("CRM (all classes)", "crm", {"crm_classes": "all"}),
        ("CRM (nodule class only)", "crm", {"crm_classes": "target"}),
        ("CAM", "cam", {}),
        ("Grad-CAM", "gradcam", {})]
REFERENCE = "CRM (all classes)"
OCCLUSION = "Occlusion (reference)"
#: Occlusion (the drop of P(nodule) when a window is hidden) shows what the model really uses; it runs
#: the model once per window, so it is computed on one nodule slice per patient only.
OCCLUSION_OPTIONS = {"window": 16, "stride": 8, "baseline": 0.0}


def localisation(maps: np.ndarray, masks: np.ndarray, spacing) -> dict:
    """Pointing game (exact and within TOLERANCE_MM), energy, Dice (best, at 20 % of max, Otsu)."""
    t_maps, t_masks = torch.from_numpy(maps), torch.from_numpy(masks)
    sweep = xai.evaluation.dice_sweep(t_maps, t_masks)
    at20 = [i for i, t in enumerate(sweep.thresholds.tolist()) if abs(t - 0.2) < 1e-6][0]
    return {
        "pointing": xai.evaluation.pointing_game(t_maps, t_masks).double().numpy(),
        "pointing_tol": xai.evaluation.pointing_game(t_maps, t_masks, spacing=spacing, tolerance_mm=TOLERANCE_MM).double().numpy(),
        "energy": xai.evaluation.energy_pointing_game(t_maps, t_masks).double().numpy(),
        "dice_best": sweep.best_dice.double().numpy(),
        "dice_at_0.2": sweep.dice[:, at20].double().numpy(),
        "dice_otsu": sweep.otsu_dice.double().numpy(),
        "sweep_mean": sweep.dice.double().mean(0).numpy(), "thresholds": sweep.thresholds.double().numpy(),
    }


def _table_rows(results: dict, data_label: str) -> list[list]:
    rows = []
    for label, r in results.items():
        rows.append([data_label, label, fmt(mean(r["pointing"])), fmt(mean(r["pointing_tol"])),
                     mean_sd(r["energy"]), mean_sd(r["dice_best"]), mean_sd(r["dice_at_0.2"]),
                     mean_sd(r["dice_otsu"])])
    return rows


def run(ctx: Context) -> Section:
    section = Section(
        KEY, TITLE, PAPER,
        claim="CRM (class-selective relevance mapping: the squared change of every output score when one "
              "location of the last conv map is removed) localises the discriminative region of the image "
              "better than CAM and Grad-CAM; the class-specific mean CRM map shows where each class's "
              "evidence usually lies.")
    loaded = ctx.model(MODEL)
    module = loaded.module
    data = nodule_slices(ctx, ctx.size(1, 20), ctx.size(6, 14))
    x, y, masks, spacing = data["x"], data["y"], data["mask"], data["spacing_mm"]
    scores = torch.softmax(torch.from_numpy(predict(module, x)), 1)[:, NODULE].numpy()
    positives = data["positive"]
    xp, mp = x[positives], masks[positives]
    section.protocol = [
        f"{len(y)} fresh chest phantom slices on the model grid (160 x 160, {spacing} mm) from "
        f"{len(np.unique(data['patient']))} simulated patients (seed {data['seed']}); the {len(positives)} slices "
        f"through a nodule are scored against the nodule mask (mean {mp.reshape(len(mp), -1).sum(1).mean():.0f} "
        f"pixels, {100 * mp.mean():.2f} % of a slice). Slice-level AUC of P(nodule): "
        f"{_auc(y, scores):.3f}.",
        f"Maps explain the 'nodule' class at the last conv block ({LAYER}, 20 x 20), min-max normalised. CRM "
        "in closed form (equal to the literal removal on this linear head); 'all classes' sums the squared "
        "score changes over both output nodes as in the paper, 'nodule class only' keeps one. CAM is "
        "ReLU(raw CAM).",
        f"Metrics: pointing game (the map's maximum inside the mask; also within {TOLERANCE_MM:g} mm), energy "
        "pointing game (share of map mass inside the mask; chance = the mask's area share), Dice of the "
        "thresholded map: best over t = 0.05..0.95, at t = 0.2 (the paper shows CRM values >= 20 % of the "
        "maximum) and at Otsu's t.",
        "Class-specific ROI maps: mean of max-normalised CRM over all slices of each class (crm_roi_map).",
        "Reference for what the model really uses: occlusion (ReLU of the drop of the nodule logit when a "
        f"{OCCLUSION_OPTIONS['window']} x {OCCLUSION_OPTIONS['window']} window, stride "
        f"{OCCLUSION_OPTIONS['stride']}, is set to 0 = air) on one nodule slice per patient.",
    ]
    maps_for_figure = {label: compute_maps(module, xp, method, layer=LAYER, target=NODULE, **options)
                       for label, method, options in ROWS}
    results = {label: localisation(maps, mp, (spacing, spacing)) for label, maps in maps_for_figure.items()}
    columns = ["data", "method", "pointing game", f"pointing game ±{TOLERANCE_MM:g} mm", "energy in nodule",
               "Dice best t", "Dice t = 0.2", "Dice Otsu"]
    rows = _table_rows(results, f"phantoms ({len(positives)} slices)")
    # one nodule slice per patient: the occlusion reference and the figure's examples
    first = np.asarray([np.flatnonzero(data["patient"][positives] == p)[0]
                        for p in np.unique(data["patient"][positives])])[:ctx.size(1, 12)]
    occlusion = _occlusion(module, xp[first], ctx.quick)
    subset = {label: localisation(maps_for_figure[label][first], mp[first], (spacing, spacing))
              for label, _, _ in ROWS}
    subset[OCCLUSION] = localisation(occlusion, mp[first], (spacing, spacing))
    rows += _table_rows(subset, f"phantoms, one slice per patient ({len(first)} slices)")

    real = None
    try:
        real = lung1_on_model_grid(ctx, loaded)
    except Skip as reason:
        section.notes.append(f"Real CT (lung1) part skipped: {reason}")
    real_results, real_maps = {}, {}
    if real is not None:
        xr, mr = real["x"][real["slices"]], real["mask"][real["slices"]]
        real_maps = {label: compute_maps(module, xr, method, layer=LAYER, target=NODULE, **options)
                     for label, method, options in ROWS}
        real_results = {label: localisation(maps, mr, tuple(real["spacing_mm"])) for label, maps in real_maps.items()}
        rows += _table_rows(real_results, f"real lung1 ({len(real['slices'])} nodule slices)")
    section.tables.append(Table("Localisation of the nodule (mean, ± SD over slices)", columns, rows))

    # ---- verdicts: CRM vs CAM and Grad-CAM on the phantoms -------------------------------------
    comparisons = []
    claims = {"pointing game": "pointing", "energy pointing game": "energy", "Dice (best t)": "dice_best",
              "Dice (t = 0.2)": "dice_at_0.2"}
    wins = {}
    for title, key in claims.items():
        ok = []
        for other in ("CAM", "Grad-CAM"):
            test = paired_test(results[REFERENCE][key], results[other][key])
            continuous = key != "pointing"
            better = test["mean_diff"] > 0 and (not continuous or not np.isfinite(test["p"]) or test["p"] < 0.05)
            ok.append(better)
            comparisons.append([title, other, fmt(mean(results[REFERENCE][key])), fmt(mean(results[other][key])),
                                fmt(test["mean_diff"]), fmt(test["win_rate"], 2), p_text(test["p"]),
                                "yes" if better else "no"])
        wins[title] = all(ok)
    section.tables.append(Table(
        f"{REFERENCE} against CAM and Grad-CAM on the phantoms (paired over slices; 'better' needs a higher mean "
        "and, for continuous metrics, Wilcoxon p < 0.05)",
        ["metric", "compared with", "CRM", "other", "Δ", "share CRM higher", "p", "CRM better"], comparisons))
    for title, ok in wins.items():
        key = claims[title]
        evidence = (f"phantoms: CRM {mean(results[REFERENCE][key]):.3f}, CAM {mean(results['CAM'][key]):.3f}, "
                    f"Grad-CAM {mean(results['Grad-CAM'][key]):.3f}")
        if real_results:
            evidence += (f"; lung1: CRM {mean(real_results[REFERENCE][key]):.3f}, CAM "
                         f"{mean(real_results['CAM'][key]):.3f}, Grad-CAM {mean(real_results['Grad-CAM'][key]):.3f}")
        section.verdicts.append(Verdict(f"CRM localises the nodule better than CAM and Grad-CAM by {title}", ok,
                                        evidence))

    # ---- class-specific ROI maps ------------------------------------------------------------
    roi = {}
    for c, name in enumerate(loaded.card.class_names):
        members = x[y == c]
        if len(members):
            roi[name] = xai.engine.crm_roi_map(module, torch.from_numpy(members), class_index=c, layer=LAYER).numpy()
    frequency = masks[y == NODULE].mean(0) if np.any(y == NODULE) else np.zeros(x.shape[2:])
    body = x[:, 0].mean(0)
    roi_stats = {}
    for name, m in roi.items():
        roi_stats[name] = {"corr_with_nodule_frequency": _corr(m, frequency),
                           "corr_with_mean_image": _corr(m, body), "mean": float(m.mean())}
    if len(roi) == 2:
        a, b = roi.values()
        roi_stats["mean_abs_difference_between_classes"] = float(np.abs(a - b).mean())
    section.tables.append(Table(
        "Class-specific mean CRM maps: Pearson correlation with where nodules are (mean nodule mask over the "
        "positive slices) and with the mean image",
        ["class", "slices", "corr. with nodule frequency", "corr. with mean image"],
        [[name, int(np.sum(y == c)), fmt(roi_stats[name]["corr_with_nodule_frequency"]),
          fmt(roi_stats[name]["corr_with_mean_image"])] for c, name in enumerate(roi)]))
    panels = [{"map": m / max(float(m.max()), 1e-12), "title": f"mean CRM: {name}"} for name, m in roi.items()]
    panels.append({"map": frequency / max(float(frequency.max()), 1e-12), "title": "nodule frequency"})
    panels.append({"map": body, "title": "mean image"})
    path = map_panels(ctx.figure_path("crm2019_class_maps.png"), panels,
                      "lung-nodule-2d: class-specific mean CRM maps (each max-normalised)")
    section.figures.append(Figure(path.name, "Class-specific ROI maps (mean max-normalised CRM per class) beside "
                                             "the nodule frequency and the mean image."))

    cells, row_titles = [], []
    for j, i in enumerate(first[:4]):
        row = [{"image": xp[i, 0], "contour": mp[i]}]
        row += [{"image": xp[i, 0], "map": maps_for_figure[label][i]} for label, _, _ in ROWS]
        row.append({"image": xp[i, 0], "map": occlusion[j]})
        cells.append(row)
        row_titles.append(f"phantom patient {j + 1}")
    if real is not None:
        xr, mr = real["x"][real["slices"]], real["mask"][real["slices"]]
        middle = int(np.argmax(mr.reshape(len(mr), -1).sum(1)))
        cells.append([{"image": xr[middle, 0], "contour": mr[middle]}] +
                     [{"image": xr[middle, 0], "map": real_maps[label][middle]} for label, _, _ in ROWS]
                     + [{"image": xr[middle, 0], "map": _occlusion(module, xr[middle:middle + 1], ctx.quick)[0]}])
        row_titles.append("lung1 (real)")
    path = overlay_grid(ctx.figure_path("crm2019_overlays.png"), cells,
                        ["image + nodule"] + [label for label, _, _ in ROWS] + [OCCLUSION], row_titles,
                        "lung-nodule-2d: maps of the 'nodule' class (cyan: nodule mask)")
    section.figures.append(Figure(path.name, "Nodule slices (cyan: ground truth) with CRM, CAM, Grad-CAM and the "
                                             "occlusion reference (each map scaled to its 99.5th percentile for "
                                             "display)."))
    section.notes.append(
        f"What the model uses, by occlusion (one slice per patient): pointing game "
        f"{mean(subset[OCCLUSION]['pointing']):.2f}, energy in nodule {mean(subset[OCCLUSION]['energy']):.3f}, "
        f"against CRM {mean(subset[REFERENCE]['pointing']):.2f} / {mean(subset[REFERENCE]['energy']):.3f}, "
        f"CAM {mean(subset['CAM']['pointing']):.2f} / {mean(subset['CAM']['energy']):.3f} and Grad-CAM "
        f"{mean(subset['Grad-CAM']['pointing']):.2f} / {mean(subset['Grad-CAM']['energy']):.3f} on the same "
        "slices: the maps computed from the last conv block differ from what occluding the image shows.")
    section.measured = "; ".join(
        f"{title}: CRM {mean(results[REFERENCE][key]):.3f} / CAM {mean(results['CAM'][key]):.3f} / Grad-CAM "
        f"{mean(results['Grad-CAM'][key]):.3f}" for title, key in claims.items()) + f" ({len(positives)} phantom nodule slices)"
    section.data = {
        "slices": int(len(y)), "positive_slices": int(len(positives)), "seed": data["seed"],
        "slice_auc": _auc(y, scores),
        "phantoms": {label: {k: float(mean(v)) for k, v in r.items() if k not in ("sweep_mean", "thresholds")}
                     for label, r in results.items()},
        "lung1": {label: {k: float(mean(v)) for k, v in r.items() if k not in ("sweep_mean", "thresholds")}
                  for label, r in real_results.items()},
        "one_slice_per_patient_with_occlusion": {
            label: {k: float(mean(v)) for k, v in r.items() if k not in ("sweep_mean", "thresholds")}
            for label, r in subset.items()},
        "roi_maps": roi_stats, "verdicts": wins,
    }
    return section


def _occlusion(module, x: np.ndarray, quick: bool) -> np.ndarray:
    """Positive part of the occlusion map (the nodule evidence a window removes), max-normalised."""
    options = dict(OCCLUSION_OPTIONS, window=32, stride=16) if quick else OCCLUSION_OPTIONS
    raw = xai.explain(module, torch.from_numpy(x), "occlusion", target=NODULE, normalize=False, **options)
    positive = torch.relu(raw).reshape(len(x), -1)
    peak = positive.max(1, keepdim=True).values.clamp_min(1e-12)
    return (positive / peak).reshape(raw.shape).numpy().astype(np.float32)


def _auc(labels, scores) -> float:
    from .common import auroc
    return auroc(scores, np.asarray(labels) == NODULE)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
