"""Sanity check for every method (Adebayo et al., NeurIPS 2018): do maps change with the weights?

Cascading randomisation from the output layer down (``xai.evaluation.sanity_randomization``)
and the Spearman rank correlation between the trained model's map and each
randomised model's map.  Classification methods run on ``ct-phase-2d``;
segmentation-only KWC (and Grad-CAM for comparison) on ``lung-nodule-seg-3d``.
"""
from __future__ import annotations

import numpy as np
import torch

import XAIExplainLib as xai
from XAIExplainLib.engine.registry import CLASSIFICATION, SEGMENTATION
from .common import Context, Figure, Section, Skip, Table, Verdict, fmt, mean
from .data import phase_slices, seg_patches
from .figures import curves

KEY = "sanity"
TITLE = "Sanity check (model randomisation) for every method"
PAPER = ("Adebayo J et al. Sanity checks for saliency maps. NeurIPS 2018 (DESIGN.md section 4: maps must "
         "change when the model's weights are randomised)")
PASS_BELOW = 0.5  # |Spearman| after full randomisation
#: Cheaper settings for the methods that run the model many times (the defaults are for quality).
OPTIONS = {"occlusion": {"window": 16, "stride": 16}, "smoothgrad": {"samples": 8},
           "integrated_gradients": {"steps": 8}}
#: ... and they explain only the first image (each cascade stage is one full explanation).
ONE_IMAGE = {"occlusion", "smoothgrad", "integrated_gradients", "scorecam"}
SEG_ROWS = [("kwc", "decoder.up1.conv2.conv"), ("gradcam", "decoder.up1.conv2.conv")]


def _cascade(model, x, quick: bool):
    order = xai.evaluation.sanity.parameterized_layers(model, x)[::-1]
    return order[:3] if quick else order


def _run_method(model, x, method, target, layer, cascade, options) -> dict:
    result = xai.evaluation.sanity_randomization(model, x, method, target=target, layer=layer, layers=cascade, seed=0,
                                      **options)
    corr = result.correlation.double().numpy()  # (stages, N)
    return {"layers": result.layers, "per_stage": corr.mean(1), "top": corr[0], "full": corr[-1]}


def run(ctx: Context) -> Section:
    section = Section(
        KEY, TITLE, PAPER,
        claim="A map that explains the model must change when the model's weights are replaced by random ones; "
              "Adebayo et al. found that some methods (notably guided backpropagation) barely change and so "
              "reflect the image more than the model.")
    results, cascades = {}, {}
    try:
        loaded = ctx.model("ct-phase-2d")
        data = phase_slices(ctx.size(1, 4), ctx.seed_for(3))
        x = torch.from_numpy(data["x"])
        cascade = _cascade(loaded.module, x, ctx.quick)
        cascades["ct-phase-2d"] = cascade
        methods = [m for m, info in sorted(xai.METHODS.items())
                   if info.applicable(CLASSIFICATION, 2, module=loaded.module) is None]
        for method in methods:
            images = x[:1] if method in ONE_IMAGE else x
            results[("ct-phase-2d", method, "default")] = _run_method(
                loaded.module, images, method, None, None, cascade, OPTIONS.get(method, {}))
            ctx.log(f"    ct-phase-2d {method}: rho after full cascade "
                    f"{mean(results[('ct-phase-2d', method, 'default')]['full']):.3f}")
    except Skip as reason:
        section.notes.append(f"ct-phase-2d part skipped: {reason}")
    try:
        seg = ctx.model("lung-nodule-seg-3d")
        patches = seg_patches(ctx, ctx.size(1, 2))
        volumes = patches["mask"].reshape(len(patches["mask"]), -1).sum(1)
        x3 = torch.from_numpy(patches["x"][np.argsort(-volumes)[:1]])
        cascade = _cascade(seg.module, x3, ctx.quick)
        cascades["lung-nodule-seg-3d"] = cascade
        target = xai.SegmentationTarget(1, region="all", activation="softmax")
        for method, layer in SEG_ROWS:
            results[("lung-nodule-seg-3d", method, layer)] = _run_method(seg.module, x3, method, target, layer,
                                                                         cascade, {})
    except Skip as reason:
        section.notes.append(f"lung-nodule-seg-3d part skipped: {reason}")
    if not results:
        raise Skip("; ".join(section.notes))
    segmentation_only = sorted(m for m, info in xai.METHODS.items() if CLASSIFICATION not in info.tasks
                               and SEGMENTATION in info.tasks)
    section.protocol = [
        "ct-phase-2d: fresh abdominal slices (one per phase in the full run, one in the quick run); every classification method with "
        "its default layer and the predicted class of the trained model (frozen for the randomised ones); "
        f"cheaper settings for the expensive methods: {OPTIONS}, which also explain only the first image.",
        f"lung-nodule-seg-3d: one fresh 32^3 nodule patch, target = sum of the nodule probabilities; "
        f"segmentation-only methods ({', '.join(segmentation_only)}) and Grad-CAM at the last decoder conv.",
        "Cascade: the modules that own parameters are re-initialised one after another from the output side "
        + ("(quick run: only the top 3)" if ctx.quick else "(all of them)") +
        f"; Spearman rank correlation with the trained model's map after the top layer and after the whole "
        f"cascade. A method passes when the mean |Spearman| (over images) after the whole cascade is below "
        f"{PASS_BELOW}: a strongly negative correlation also means the map still follows the image.",
    ]
    rows, failures = [], []
    for (model, method, layer), r in results.items():
        passed = mean(np.abs(r["full"])) < PASS_BELOW
        if not passed:
            failures.append(f"{method} ({model})")
        rows.append([model, method, layer, fmt(mean(r["top"])), fmt(mean(r["full"])), fmt(mean(np.abs(r["full"]))),
                     fmt(float(np.max(np.abs(r["per_stage"])))), "pass" if passed else "FAIL"])
    section.tables.append(Table("Spearman correlation between the trained and randomised models' maps (mean over "
                                "images)", ["model", "method", "layer", "after top layer", "after full cascade",
                                            "mean |rho| after full cascade", "max |rho| along cascade", "sanity"], rows))
    section.verdicts.append(Verdict(
        "Every method's map changes when the weights are randomised", not failures,
        "fail: " + ", ".join(failures) if failures else f"all {len(results)} methods below {PASS_BELOW}"))
    section.notes.append(
        "At ct-phase-2d's default layer (the last block, feeding global average pooling and a linear head) the "
        "class-score gradient is constant over space, so Grad-CAM, HiResCAM and XGrad-CAM give the same map, "
        "and Grad-CAM++ is close to LayerCAM (its weights tend to ReLU(g)/2 when sum_s(A) g is small); equal "
        "rows in the table are expected.")
    gbp = results.get(("ct-phase-2d", "guided_backprop", "default"))
    if gbp is not None:
        section.verdicts.append(Verdict(
            "Guided backprop is insensitive to the weights (Adebayo et al.'s negative finding)",
            mean(np.abs(gbp["full"])) >= PASS_BELOW,
            f"guided backprop Spearman after the full cascade {mean(gbp['full']):.3f} (after the top layer "
            f"{mean(gbp['top']):.3f})"))
    for model, cascade in cascades.items():
        series = {method: r["per_stage"] for (m, method, layer), r in results.items() if m == model}
        if not series:
            continue
        path = curves(ctx.figure_path(f"sanity_{model}.png"), list(range(len(cascade))), series,
                      "randomised down to (cascade from the output)", "Spearman with the trained map",
                      f"{model}: cascading randomisation", ylim=(-1.05, 1.05),
                      xticklabels=[name.replace("features.", "") for name in cascade])
        section.figures.append(Figure(path.name, f"{model}: rank correlation with the trained model's map as the "
                                                 "layers are randomised from the output down."))
    section.measured = (f"{len(results) - len(failures)} of {len(results)} maps change (|Spearman| < {PASS_BELOW} "
                        "after randomising every layer); " + ("unchanged: " + ", ".join(failures) if failures
                                                               else "none unchanged"))
    section.data = {f"{model}/{method}@{layer}": {"top": mean(r["top"]), "full": mean(r["full"]),
                                                  "per_stage": r["per_stage"], "layers": r["layers"]}
                    for (model, method, layer), r in results.items()}
    return section
