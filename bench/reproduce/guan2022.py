"""arXiv 2201.02771 (Guan & Loew): classifier heatmaps as segmentations, and retraining on filtered images."""
from __future__ import annotations

import numpy as np
import torch

import XAIExplainLib as xai
from . import roar as roar
from .common import Context, Figure, Section, Skip, Table, Verdict, compute_maps, fmt, mean, mean_sd, std
from .data import lung1_on_model_grid, nodule_slices
from .figures import bar_chart, curves, overlay_grid

KEY = "guan2022"
TITLE = "arXiv 2201.02771 - Grad-CAM heatmaps of the nodule classifier as segmentations; retraining on filtered images"
PAPER = ("Guan S, Loew M. A sneak attack on segmentation of medical images using deep neural network "
         "classifiers. arXiv 2201.02771 (IEEE AIPR 2021)")
MODEL = "lung-nodule-2d"
LAYER = "features.block4"
NODULE = 1
TOLERANCE_MM = 5.0
LOCATE_RATE = 0.5  # "locates": the map's peak within TOLERANCE_MM of the nodule in most slices
POOR_DICE = 0.5  # "not an optimal segmentation": mean Dice at the best common threshold below this


def sweep_stats(maps: np.ndarray, masks: np.ndarray, spacing) -> dict:
    t_maps, t_masks = torch.from_numpy(maps), torch.from_numpy(masks)
    sweep = xai.evaluation.dice_sweep(t_maps, t_masks)
    curve = sweep.dice.double().numpy()  # (N, T)
    best_index = int(np.argmax(curve.mean(0)))
    return {"thresholds": sweep.thresholds.double().numpy(), "curve_mean": curve.mean(0),
            "curve_sd": curve.std(0), "best_common_t": float(sweep.thresholds[best_index]),
            "dice_best_common_t": curve[:, best_index], "dice_oracle_t": sweep.best_dice.double().numpy(),
            "dice_otsu": sweep.otsu_dice.double().numpy(), "otsu_t": sweep.otsu_threshold.double().numpy(),
            "pointing_tol": xai.evaluation.pointing_game(t_maps, t_masks, spacing=spacing,
                                              tolerance_mm=TOLERANCE_MM).double().numpy(),
            "energy": xai.evaluation.energy_pointing_game(t_maps, t_masks).double().numpy(),
            "chance_dice": 2 * masks.reshape(len(masks), -1).mean(1) / (1 + masks.reshape(len(masks), -1).mean(1))}


def run(ctx: Context) -> Section:
    section = Section(
        KEY, TITLE, PAPER,
        claim="Grad-CAM heatmaps of a CNN classifier can locate and segment partial tumour areas, but heatmaps "
              "alone may not be an optimal segmentation (mean Dice); retraining the classifier on images "
              "filtered by the heatmaps shows that its predictions mainly depend on the tumour areas, and that "
              "the dark regions of the heatmaps also contribute to classification.")
    loaded = ctx.model(MODEL)
    module = loaded.module
    data = nodule_slices(ctx, ctx.size(1, 20), ctx.size(6, 14))
    x, y, masks, spacing = data["x"], data["y"], data["mask"], data["spacing_mm"]
    positives = data["positive"]
    maps = compute_maps(module, x[positives], "gradcam", layer=LAYER, target=NODULE)
    phantom = sweep_stats(maps, masks[positives], (spacing, spacing))
    stats = {"phantoms": phantom}
    real = None
    try:
        real = lung1_on_model_grid(ctx, loaded)
        real_maps = compute_maps(module, real["x"][real["slices"]], "gradcam", layer=LAYER, target=NODULE)
        stats["real lung1"] = sweep_stats(real_maps, real["mask"][real["slices"]], tuple(real["spacing_mm"]))
    except Skip as reason:
        section.notes.append(f"Real CT (lung1) part skipped: {reason}")
    default = loaded.default_layer
    if default and default != LAYER:  # the model card suggests another layer: show it too
        tag = f", card default layer {default}"
        stats["phantoms" + tag] = sweep_stats(compute_maps(module, x[positives], "gradcam", layer=default,
                                                           target=NODULE), masks[positives], (spacing, spacing))
        if real is not None:
            stats["real lung1" + tag] = sweep_stats(
                compute_maps(module, real["x"][real["slices"]], "gradcam", layer=default, target=NODULE),
                real["mask"][real["slices"]], tuple(real["spacing_mm"]))

    epochs, seeds = ctx.size(1, 2), [ctx.seed_for(5) + k for k in range(ctx.size(1, 3))]
    section.protocol = [
        f"Grad-CAM of the 'nodule' class at the last conv block `{LAYER}` (the usual Grad-CAM layer; rows "
        f"marked 'card default layer' use the layer the model card suggests, `{loaded.default_layer}`) on the "
        f"{len(positives)} nodule slices of {len(y)} fresh "
        f"phantom slices (seed {data['seed']}) and on the real lung1 nodule slices (resampled to the model grid, "
        "the expert mask resampled alongside); map normalised to [0, 1], mask = map > t for t = 0.05..0.95 "
        "(the paper's mean-Dice evaluation), plus Otsu's t per map. 'Best common t' maximises the mean Dice "
        "over slices; 'oracle t' is the best t of each slice (an upper bound).",
        f"Locating: the map's maximum within {TOLERANCE_MM:g} mm of the nodule (pointing game); energy share "
        "inside the nodule. Chance Dice = Dice of a map selecting the whole slice.",
        f"Retraining (reduced, CPU): the same slices split by patient (last quarter of the patients for "
        f"testing); Grad-CAM of the bundled model's predicted class at `{LAYER}`; for each variant "
        f"({', '.join(roar.VARIANTS)}; t = {roar.THRESHOLD}) a copy of the bundled model is fine-tuned "
        f"({', '.join(roar.TRAINABLE)}) on the filtered training slices for {epochs} epoch(s) (AdamW, lr {roar.LEARNING_RATE:g}, {len(seeds)} "
        "training seed(s)) and tested on the filtered test slices; the bundled model's score on the filtered "
        "test slices without retraining is shown too. Retraining from scratch, as the paper does, does not "
        "fit the CPU budget" + (" (see the from-scratch baseline below)." if not ctx.quick else "."),
    ]
    rows = []
    for name, s in stats.items():
        rows.append([name, len(s["dice_oracle_t"]), fmt(mean(s["pointing_tol"])), mean_sd(s["energy"]),
                     fmt(s["best_common_t"], 2), mean_sd(s["dice_best_common_t"]), mean_sd(s["dice_otsu"]),
                     mean_sd(s["dice_oracle_t"]), fmt(mean(s["chance_dice"]), 4)])
    section.tables.append(Table("Grad-CAM heatmaps as nodule segmentations (mean ± SD over nodule slices)",
                                ["data (layer)", "slices", f"pointing game ±{TOLERANCE_MM:g} mm", "energy in nodule",
                                 "best common t", "Dice @ best common t", "Dice @ Otsu", "Dice @ oracle t",
                                 "chance Dice"], rows))
    series = {f"{name} (mean ± SD)": (s["curve_mean"], s["curve_sd"]) for name, s in stats.items()}
    markers = {f"{name}: Otsu (mean t, mean Dice)": (mean(s["otsu_t"]), mean(s["dice_otsu"]))
               for name, s in stats.items()}
    path = curves(ctx.figure_path("guan2022_threshold_dice.png"), phantom["thresholds"], series,
                  "threshold t on the normalised Grad-CAM map", "Dice with the nodule mask",
                  "lung-nodule-2d: Dice of Grad-CAM > t against the nodule", markers=markers, ylim=(0, 1))
    section.figures.append(Figure(path.name, "Threshold-Dice curves of Grad-CAM heatmaps (phantoms and real "
                                             "lung1), with Otsu's threshold marked."))

    locate = mean(phantom["pointing_tol"]) > LOCATE_RATE
    poor = mean(phantom["dice_best_common_t"]) < POOR_DICE
    partial = mean(phantom["dice_best_common_t"]) > 2 * mean(phantom["chance_dice"])
    real_text = ""
    if "real lung1" in stats:
        r = stats["real lung1"]
        real_text = (f"; lung1: pointing {mean(r['pointing_tol']):.2f}, Dice {mean(r['dice_best_common_t']):.3f} "
                     f"at t = {r['best_common_t']:.2f}")
    for name, r in stats.items():
        if "card default" in name:
            real_text += (f"; {name}: pointing {mean(r['pointing_tol']):.2f}, Dice "
                          f"{mean(r['dice_best_common_t']):.3f} at t = {r['best_common_t']:.2f}")
    section.verdicts.append(Verdict(
        f"Heatmaps locate the nodule (pointing game within {TOLERANCE_MM:g} mm above {LOCATE_RATE})", locate,
        f"phantoms: {mean(phantom['pointing_tol']):.2f}{real_text}"))
    section.verdicts.append(Verdict(
        f"Heatmaps segment part of the nodule but are not an optimal segmentation (mean Dice at the best "
        f"common t above twice chance and below {POOR_DICE})", bool(partial and poor),
        f"phantoms: Dice {mean(phantom['dice_best_common_t']):.3f} at t = {phantom['best_common_t']:.2f} "
        f"(chance {mean(phantom['chance_dice']):.4f}, oracle per-slice t {mean(phantom['dice_oracle_t']):.3f})"))

    for name, r in stats.items():
        if not (name.startswith("phantoms") and "card default" in name):
            continue
        layer = name.split("card default layer ")[-1]
        lung = stats.get(name.replace("phantoms", "real lung1", 1))
        lung_text = (f"; lung1: pointing {mean(lung['pointing_tol']):.2f}, Dice {mean(lung['dice_best_common_t']):.3f}"
                     if lung else "")
        section.verdicts.append(Verdict(
            f"... at the card's default layer {layer}: heatmaps locate the nodule (pointing game within "
            f"{TOLERANCE_MM:g} mm above {LOCATE_RATE})", mean(r["pointing_tol"]) > LOCATE_RATE,
            f"phantoms: {mean(r['pointing_tol']):.2f}{lung_text}"))
        section.verdicts.append(Verdict(
            f"... at {layer}: they segment part of the nodule but are not an optimal segmentation",
            bool(2 * mean(r["chance_dice"]) < mean(r["dice_best_common_t"]) < POOR_DICE),
            f"phantoms: Dice {mean(r['dice_best_common_t']):.3f} at t = {r['best_common_t']:.2f} (oracle per-slice "
            f"t {mean(r['dice_oracle_t']):.3f})"))

    # ---- retraining ----------------------------------------------------------------------
    retrain = roar.run(module, LAYER, x, y, data["patient"], epochs, seeds, ctx.seed_for(6),
                       scratch_epochs=0 if ctx.quick else 6)
    res = retrain["results"]
    section.tables.append(Table(
        f"Retraining on filtered images: test accuracy / AUC ({retrain['train_slices']} training and "
        f"{retrain['test_slices']} test slices, {100 * retrain['test_positive_share']:.0f} % positive; mean ± SD "
        f"over {len(seeds)} training seed(s))",
        ["training and test images", "test accuracy (fine-tuned)", "test AUC (fine-tuned)",
         "accuracy without retraining", "AUC without retraining"],
        [[name, mean_sd(r["accuracy"]), mean_sd(r["auc"]), fmt(r["accuracy_without_retraining"]),
          fmt(r["auc_without_retraining"])] for name, r in res.items()]))
    if "from_scratch_original" in retrain:
        scratch = retrain["from_scratch_original"]
        section.notes.append(
            f"From-scratch baseline on the unfiltered slices: a SliceClassifier (widths {scratch['widths']}) on "
            f"{scratch['input']} inputs trained for {scratch['epochs']} epochs reaches test accuracy "
            f"{scratch['accuracy']:.3f} (AUC {scratch['auc']:.3f})"
            + ("; it does not learn the task within this budget, which is why the reduced experiment fine-tunes "
               "the bundled model instead." if scratch["auc"] < 0.75 else
               "; from-scratch retraining would have been feasible here, the fine-tuned numbers are still the "
               "ones reported."))
    acc = {name: mean(r["accuracy"]) for name, r in res.items()}
    section.notes.append(
        f"Retraining caveat: the filter itself can carry the label (ROAR's known leak): the binary mask keeps "
        f"{100 * retrain['kept_share_binary']:.1f} % of the pixels on average and is empty for "
        f"{100 * retrain['blank_binary_masks']:.1f} % of slices; the permuted-map control shows how much "
        "accuracy a map of the wrong place still allows.")
    depends = acc["x * M"] >= acc["x * (1 - M)"] and acc["x * 1[M > t]"] >= acc["x * M_perm (control)"]
    section.verdicts.append(Verdict(
        "Predictions mainly depend on the highlighted (nodule) areas: keeping them (x * M, x * 1[M > t]) "
        "retrains at least as well as removing them (x * (1 - M)) or keeping misplaced maps (control)", depends,
        ", ".join(f"{name} {value:.3f}" for name, value in acc.items())))
    chance = max(retrain["test_positive_share"], 1 - retrain["test_positive_share"])
    dark = acc["x * (1 - M)"] > chance + 0.05
    section.verdicts.append(Verdict(
        "Dark regions also contribute: x * (1 - M) still trains well above chance", dark,
        f"x * (1 - M) accuracy {acc['x * (1 - M)']:.3f} vs majority-class rate {chance:.3f}"))
    labels = list(res)
    path = bar_chart(ctx.figure_path("guan2022_retraining.png"), labels,
                     {"test accuracy": ([mean(res[n]["accuracy"]) for n in labels],
                                        [std(res[n]["accuracy"]) for n in labels]),
                      "test AUC": ([mean(res[n]["auc"]) for n in labels], [std(res[n]["auc"]) for n in labels])},
                     "score", "Retraining a small classifier on Grad-CAM-filtered slices", reference=chance,
                     reference_label="majority-class rate", ylim=(0, 1.05))
    section.figures.append(Figure(path.name, "Test accuracy and AUC of a classifier retrained on each filtered "
                                             "variant."))
    cells = [[{"image": retrain["examples"][name]} for name in roar.VARIANTS] +
             [{"image": retrain["examples"]["original"], "map": retrain["example_map"]}]]
    path = overlay_grid(ctx.figure_path("guan2022_filtered.png"), cells, list(roar.VARIANTS) + ["Grad-CAM"],
                        ["nodule slice"], "Images seen by the retrained classifiers", stretch=False, size=2.2)
    section.figures.append(Figure(path.name, "One nodule slice under each filter and its Grad-CAM map."))
    section.measured = (
        f"phantoms: pointing ±{TOLERANCE_MM:g} mm {mean(phantom['pointing_tol']):.2f}, Dice "
        f"{mean(phantom['dice_best_common_t']):.3f} at t = {phantom['best_common_t']:.2f} (oracle t "
        f"{mean(phantom['dice_oracle_t']):.3f}){real_text}; retrained test accuracy: "
        + ", ".join(f"{name} {value:.2f}" for name, value in acc.items()))
    section.data = {
        "seed": data["seed"], "positive_slices": int(len(positives)),
        "heatmap_segmentation": {name: {"pointing_tol": mean(s["pointing_tol"]), "energy": mean(s["energy"]),
                                        "best_common_t": s["best_common_t"],
                                        "dice_best_common_t": mean(s["dice_best_common_t"]),
                                        "dice_otsu": mean(s["dice_otsu"]), "dice_oracle_t": mean(s["dice_oracle_t"]),
                                        "chance_dice": mean(s["chance_dice"]),
                                        "curve": {f"{t:.2f}": float(d) for t, d in zip(s["thresholds"],
                                                                                      s["curve_mean"])}}
                                 for name, s in stats.items()},
        "retraining": {k: v for k, v in retrain.items() if k not in ("examples", "example_map")},
    }
    return section
