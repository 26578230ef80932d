"""SPIE 2022 (Mullan & Sonka): multi-layer CAM maps and KWC for a segmentation U-Net, PP and IP.

On ``lung-nodule-seg-3d`` (3D U-Net, 32^3 patches): Grad-CAM, Grad-CAM++ and
Score-CAM at the bottleneck, at the last convolution and over all decoder
layers (the multi-layer rule), and KWC over all decoder layers; median
Prediction Preserved (PP) and Image Preserved (IP) per method.
"""
from __future__ import annotations

import time

import numpy as np
import torch

import XAIExplainLib as xai
from .common import Context, Figure, Section, Table, Verdict, compute_maps, fmt, median
from .data import crop_around, seg_patches
from .figures import overlay_grid, scatter

KEY = "spie2022"
TITLE = "SPIE 2022 - multi-layer Grad-CAM/Grad-CAM++/Score-CAM and KWC on the 3D nodule U-Net"
PAPER = ("Mullan S, Sonka M. Kernel-weighted contribution: a method of visual attribution for 3D deep learning "
         "segmentation in medical imaging. SPIE Medical Imaging 2022 (and J. Med. Imaging 2023)")
MODEL = "lung-nodule-seg-3d"
NODULE = 1
LAYERS = {"bottleneck": "bottleneck.conv2.conv", "last conv": "decoder.up1.conv2.conv", "all decoder": "decoder"}
ADAPTED = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "scorecam": "Score-CAM"}
PAPER_KWC_PP = (12.0, 21.0)  # % higher PP than the adapted multi-layer methods
PAPER_KWC_IP = (2.0, 12.0)  # % lower IP


def target():
    """The paper's target: sum of all output probabilities of the nodule class, no threshold."""
    return xai.SegmentationTarget(NODULE, region="all", activation="softmax")


def rows():
    out = [(f"{name} @ {where}", method, layer) for method, name in ADAPTED.items()
           for where, layer in LAYERS.items()]
    return out + [("KWC @ all decoder", "kwc", "decoder")]


def faithfulness(module, x: np.ndarray, maps: np.ndarray, mask: np.ndarray) -> dict:
    t_x, t_maps = torch.from_numpy(x), torch.from_numpy(maps)
    kept = xai.evaluation.preservation(module, t_x, t_maps, target(), activation="softmax")
    return {"pp": kept.prediction_preserved.double().numpy(), "ep": kept.excess_prediction.double().numpy(),
            "ip": xai.evaluation.image_preserved(t_maps).double().numpy(),
            "rfa": xai.evaluation.relative_foreground(t_maps, torch.from_numpy(mask)).double().numpy()}


def run(ctx: Context) -> Section:
    section = Section(
        KEY, TITLE, PAPER,
        claim="Adapted multi-layer methods (the map averaged over every post-bottleneck layer) beat single-layer "
              "ones on both median Prediction Preserved (higher) and Image Preserved (lower); KWC over the "
              "decoder has 12-21 % higher PP and 2-12 % lower IP than the adapted multi-layer Grad-CAM, "
              "Grad-CAM++ and Score-CAM.")
    loaded = ctx.model(MODEL)
    module = loaded.module
    data = seg_patches(ctx, ctx.size(1, 2))
    volumes = data["mask"].reshape(len(data["mask"]), -1).sum(1)
    chosen = np.flatnonzero(volumes >= 30)[:ctx.size(1, 8)]
    x, mask = data["x"][chosen], data["mask"][chosen]
    if ctx.quick:  # Score-CAM and KWC run the U-Net hundreds of times: a 16^3 crop keeps the check fast
        x, mask = crop_around(x, mask, 16)
    section.protocol = [
        f"{len(chosen)} fresh {x.shape[-1]}^3 patches (1.25 mm) around phantom nodules (seed {data['seed']}; nodules of "
        f"{int(volumes[chosen].min())}-{int(volumes[chosen].max())} voxels).",
        "Target (the paper's): T = sum over all voxels of the nodule-class softmax probability, no threshold.",
        f"Layers: bottleneck = `{LAYERS['bottleneck']}`, last conv = `{LAYERS['last conv']}` (the last "
        f"convolution before the 1x1 head), all decoder = every post-bottleneck convolution "
        f"({', '.join(xai.engine.decoder_layers(module, torch.from_numpy(x[:1])))}), each map resized to the "
        "input, min-max scaled and averaged (equal weights).",
        "PP = sum min(P, P~) / sum P with P~ = model(x * M), M the min-max normalised map (continuous); IP = "
        "mean(M). Also Excess Prediction (EP) and Relative Foreground Attribution against the nodule mask "
        "(RFA). Medians over patches, as in the paper.",
        "KWC: empty (zero) kernels, per-layer min-max of the weights (the SPIE variant), over the same decoder "
        "layers.",
    ]
    results, all_maps = {}, {}
    for label, method, layer in rows():
        started = time.perf_counter()
        maps = compute_maps(module, x, method, layer=layer, target=target(), batch=4)
        all_maps[label] = maps
        results[label] = faithfulness(module, x, maps, mask)
        ctx.log(f"    {label}: median PP {median(results[label]['pp']):.3f}, IP {median(results[label]['ip']):.3f} "
                f"({time.perf_counter() - started:.1f} s)")
    section.tables.append(Table(
        f"Median over {len(chosen)} patches", ["method @ layer(s)", "PP (higher better)", "IP (lower better)",
                                               "EP", "RFA"],
        [[label, fmt(median(r["pp"])), fmt(median(r["ip"])), fmt(median(r["ep"])), fmt(median(r["rfa"]))]
         for label, r in results.items()]))

    # ---- claim 1: multi-layer vs single-layer ----------------------------------------------
    pp_ok, ip_ok, lines = [], [], []
    for method, name in ADAPTED.items():
        multi = results[f"{name} @ all decoder"]
        for where in ("bottleneck", "last conv"):
            single = results[f"{name} @ {where}"]
            pp_ok.append(median(multi["pp"]) > median(single["pp"]))
            ip_ok.append(median(multi["ip"]) < median(single["ip"]))
            lines.append([name, where, fmt(median(multi["pp"])), fmt(median(single["pp"])),
                          "yes" if pp_ok[-1] else "no", fmt(median(multi["ip"])), fmt(median(single["ip"])),
                          "yes" if ip_ok[-1] else "no"])
    section.tables.append(Table("Multi-layer (all decoder) vs single-layer maps", [
        "method", "single layer", "PP multi", "PP single", "multi higher PP", "IP multi", "IP single",
        "multi lower IP"], lines))
    section.verdicts.append(Verdict("Multi-layer maps have higher median PP than single-layer ones", all(pp_ok),
                                    f"{sum(pp_ok)} of {len(pp_ok)} comparisons"))
    section.verdicts.append(Verdict("Multi-layer maps have lower median IP than single-layer ones", all(ip_ok),
                                    f"{sum(ip_ok)} of {len(ip_ok)} comparisons"))

    # ---- claim 2: KWC vs adapted multi-layer methods ---------------------------------------
    kwc = results["KWC @ all decoder"]
    pp_rel, ip_rel, lines = {}, {}, []
    for name in ADAPTED.values():
        other = results[f"{name} @ all decoder"]
        pp_rel[name] = 100 * (median(kwc["pp"]) / median(other["pp"]) - 1)
        ip_rel[name] = 100 * (1 - median(kwc["ip"]) / median(other["ip"]))
        lines.append([name, fmt(median(other["pp"])), fmt(pp_rel[name], 1),
                      fmt(100 * (median(kwc["pp"]) - median(other["pp"])), 1), fmt(median(other["ip"])),
                      fmt(ip_rel[name], 1), fmt(100 * (median(other["ip"]) - median(kwc["ip"])), 1)])
    section.tables.append(Table(
        f"KWC (median PP {median(kwc['pp']):.3f}, IP {median(kwc['ip']):.3f}) against the adapted multi-layer "
        f"methods: relative differences in % (paper: PP +{PAPER_KWC_PP[0]:g} to +{PAPER_KWC_PP[1]:g} %, IP "
        f"-{PAPER_KWC_IP[0]:g} to -{PAPER_KWC_IP[1]:g} %) and absolute differences in percentage points",
        ["adapted method", "its PP", "KWC PP higher by %", "(points)", "its IP", "KWC IP lower by %", "(points)"],
        lines))
    pp_text = ", ".join(f"{k} {v:+.1f} %" for k, v in pp_rel.items())
    ip_text = ", ".join(f"{k} {v:+.1f} %" for k, v in ip_rel.items())
    section.verdicts.append(Verdict("KWC has higher median PP than every adapted multi-layer method",
                                    all(v > 0 for v in pp_rel.values()), f"KWC PP higher by: {pp_text}"))
    section.verdicts.append(Verdict(
        f"... by at least the paper's margin (paper: +{PAPER_KWC_PP[0]:g} to +{PAPER_KWC_PP[1]:g} %)",
        all(v >= PAPER_KWC_PP[0] for v in pp_rel.values()), pp_text))
    section.verdicts.append(Verdict("KWC has lower median IP than every adapted multi-layer method",
                                    all(v > 0 for v in ip_rel.values()), f"KWC IP lower by: {ip_text}"))
    section.verdicts.append(Verdict(
        f"... by at least the paper's margin (paper: {PAPER_KWC_IP[0]:g} to {PAPER_KWC_IP[1]:g} % lower)",
        all(v >= PAPER_KWC_IP[0] for v in ip_rel.values()), ip_text))

    # ---- figures ---------------------------------------------------------------------------
    path = scatter(ctx.figure_path("spie2022_pp_ip.png"),
                   {label: (median(r["ip"]), median(r["pp"])) for label, r in results.items()},
                   "median Image Preserved (lower = smaller mask)", "median Prediction Preserved",
                   "lung-nodule-seg-3d: faithfulness of each map as a soft mask (top-left is best)")
    section.figures.append(Figure(path.name, "Median PP against median IP per method and layer choice."))
    cells, titles = [], []
    for i in range(min(2, len(x))):
        z = int(np.argmax(mask[i].reshape(mask.shape[1], -1).sum(1)))
        row = [{"image": x[i, 0, z], "contour": mask[i, z]}]
        row += [{"image": x[i, 0, z], "map": all_maps[label][i, z]} for label, _, _ in rows()]
        cells.append(row)
        titles.append(f"patch {i + 1}, z={z}")
    path = overlay_grid(ctx.figure_path("spie2022_overlays.png"), cells,
                        ["image + nodule"] + [label.replace(" @ ", "\n@ ") for label, _, _ in rows()], titles,
                        "lung-nodule-seg-3d: axial slice through the nodule (cyan: ground truth)", size=1.5)
    section.figures.append(Figure(path.name, "Axial slices of two patches with every map (each scaled to its "
                                             "99.5th percentile for display)."))
    section.measured = (
        "median PP / IP: " + ", ".join(f"{name} bottleneck {median(results[f'{name} @ bottleneck']['pp']):.2f}/"
                                      f"{median(results[f'{name} @ bottleneck']['ip']):.2f}, last conv "
                                      f"{median(results[f'{name} @ last conv']['pp']):.2f}/"
                                      f"{median(results[f'{name} @ last conv']['ip']):.2f}, decoder "
                                      f"{median(results[f'{name} @ all decoder']['pp']):.2f}/"
                                      f"{median(results[f'{name} @ all decoder']['ip']):.2f}"
                                      for name in ADAPTED.values())
        + f"; KWC {median(kwc['pp']):.2f}/{median(kwc['ip']):.2f} (PP {pp_text}; IP lower by {ip_text}; "
          f"{len(chosen)} patches)")
    section.data = {"patches": int(len(chosen)), "seed": data["seed"],
                    "median": {label: {k: median(v) for k, v in r.items()} for label, r in results.items()},
                    "kwc_pp_higher_percent": pp_rel, "kwc_ip_lower_percent": ip_rel}
    return section
