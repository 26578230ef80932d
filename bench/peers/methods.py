"""Benchmark of the peer-library methods against the peers that have them (same model, layer and input).

Sections (each in a fresh subprocess; rows interleaved round by round, best round kept,
as in seed_methods.py; peak memory = peak RSS growth during the row, or the CUDA peak):

- cam: Eigen-CAM, KPCA-CAM and Ablation-CAM on a ResNet-like 2D classifier at layer4, against
  plain inference, pytorch-grad-cam's EigenCAM / KPCA_CAM / AblationCAM (where it imports) and a
  straightforward Ablation-CAM loop (one full forward per zeroed channel, same map);
- gradient: FullGrad (pytorch-grad-cam where it imports), Input x Gradient, DeepLIFT,
  GradientSHAP (captum) and LRP (zennit's attributor, EpsilonPlusFlat) on that classifier;
- rise: RISE batched (on the CPU through the engine's inference-optimised copy of the network:
  reused, and built within the call) against one forward per mask (the same masks, same map);
- unet: a 2D U-Net (conv-BN-ReLU x 2 stages): Eigen-CAM at the first convolution of the
  last decoder stage against plain inference, and KWC there now (the convolution after
  the layer fused, replay after it), before (replay from the layer: the fusion turned
  off) and as the authors' per-kernel loop (two full forwards per kernel).

"same map" is the largest difference to the row's reference map relative to the
reference's largest value (pytorch-grad-cam rows: 1 - Pearson r, their maps being
normalised and resized by OpenCV).

    python -m bench.peers.methods             # CPU, one thread, a few minutes
    python -m bench.peers.methods --sections unet
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # bench/

# (section, row, repeats, reference row for "same map")
ROWS = [
    ("cam", "plain inference", 25, None),
    ("cam", "eigencam", 25, None),
    ("cam", "pytorch-grad-cam EigenCAM", 3, "eigencam"),
    ("cam", "kpcacam", 9, None),
    ("cam", "pytorch-grad-cam KPCA_CAM", 3, "kpcacam"),
    ("cam", "ablationcam", 3, None),
    ("cam", "ablation loop (full forwards)", 1, "ablationcam"),
    ("cam", "pytorch-grad-cam AblationCAM", 1, "ablationcam"),
    ("gradient", "plain inference", 5, None),
    ("gradient", "fullgrad", 3, None),
    ("gradient", "pytorch-grad-cam FullGrad", 3, "fullgrad"),
    ("gradient", "input_x_gradient", 3, None),
    ("gradient", "captum InputXGradient", 3, "input_x_gradient"),
    ("gradient", "deeplift", 3, None),
    ("gradient", "captum DeepLift", 3, "deeplift"),
    ("gradient", "gradient_shap", 3, None),
    ("gradient", "captum GradientShap", 3, "gradient_shap"),
    ("gradient", "lrp", 3, None),
    ("gradient", "zennit Gradient attributor", 3, "lrp"),
    ("rise", "plain inference", 5, None),
    ("rise", "rise", 3, None),
    ("rise", "rise, building its optimised copy", 3, None),
    ("rise", "rise loop (one forward per mask)", 1, "rise"),
    ("unet", "plain inference", 25, None),
    ("unet", "eigencam", 25, None),
    ("unet", "kwc (fused convolution)", 3, None),
    ("unet", "kwc replay from the layer (before)", 3, "kwc (fused convolution)"),
    ("unet", "kwc per-kernel loop", 2, "kwc (fused convolution)"),
]
PEARSON_ROWS = {"pytorch-grad-cam EigenCAM", "pytorch-grad-cam KPCA_CAM", "pytorch-grad-cam AblationCAM", "pytorch-grad-cam FullGrad"}
UNET_LAYER = "dec1.0"


def _classifier_setup(args, small=False):
    import torch

    from . import models as bench_models
    width, slices, size = ((args.rise_width, args.rise_slices, args.rise_size) if small
                           else (args.width, args.slices, args.size))
    model = bench_models.build(2, width).to(args.device)
    x = bench_models.synthetic_ct(slices, size)[:, None].to(args.device)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


def _peer_row(row, model, x, target, args):
    """The callable of a peer-library row; ImportError when the peer is not installed."""
    import torch
    if row.startswith("pytorch-grad-cam"):
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        cls = getattr(pytorch_grad_cam, row.split()[-1])
        layers = [] if cls is pytorch_grad_cam.FullGrad else [model.layer4]
        cam = cls(model=model, target_layers=layers)
        targets = [ClassifierOutputTarget(int(c)) for c in target]
        return lambda: torch.from_numpy(cam(input_tensor=x, targets=targets))
    if row.startswith("captum"):
        import captum.attr as attr
        name = row.split()[-1]
        method = getattr(attr, name)(model)
        if name == "GradientShap":
            return _captum_gradient_shap(method, x, target, args.samples, 0.1)
        return lambda: method.attribute(x.clone(), target=target).sum(1)
    if row.startswith("zennit"):
        from XAIExplainLib.engine.methods.lrp import _zennit, make_composite
        _, _, attribution = _zennit()
        grad_output = torch.eye(model.fc.out_features, device=x.device)[target]

        def run():
            with attribution.Gradient(model, make_composite("epsilon_plus_flat", x)) as attributor:
                return attributor(x.clone(), grad_output)[1].sum(1)
        return run
    raise ValueError(row)


def _captum_gradient_shap(method, x, target, samples: int, stdev: float):
    """captum's GradientShap fed the engine's draws for seed 0 (one zero baseline), so the maps are
    comparable: its rows are sample-major (row = sample * samples + s)."""
    from unittest import mock

    import numpy as np
    import torch

    from XAIExplainLib.engine.methods.gradient_shap import gradient_shap_draws
    baselines = torch.zeros((1,) + tuple(x.shape[1:]), device=x.device)
    indices, unit, alphas = gradient_shap_draws(tuple(x.shape[1:]), 1, samples, 0)
    n = x.shape[0]
    noise = (stdev * unit).repeat(n, *([1] * (x.dim() - 1))).to(x.device)

    def run():
        with mock.patch.object(np.random, "choice", lambda count, size: np.tile(indices.numpy(), n)), \
                mock.patch.object(np.random, "uniform", lambda low, high, size: np.tile(alphas.numpy(), n)), \
                mock.patch.object(torch, "normal", lambda mean, std: noise.to(std.dtype)):
            return method.attribute(x, baselines=baselines, n_samples=samples, stdevs=stdev, target=target).sum(1)
    return run


def _uncached(run):
    """``run()`` with the engine's inference-optimised copies forgotten first, so the row pays for
    building its copy (the plain "rise" row reuses the copy its warm-up run built, as the batches
    of a volume do)."""
    from XAIExplainLib.engine import inference_copy
    inference_copy._COPIES.clear()
    return run()


def ablation_loop(model, x, target, layer):
    """One full forward per zeroed channel (hook on the layer), w_k = (y - y_k) / y, ReLU(sum w_k A_k)."""
    import torch
    import torch.nn.functional as F
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(a=o.clone()))
    with torch.no_grad():
        base = model(x).gather(1, target[:, None])[:, 0]
    handle.remove()
    a = store["a"]
    weights = torch.zeros(a.shape[:2])
    for k in range(a.shape[1]):
        def zero(module, args, output, k=k):
            output = output.clone()
            output[:, k] = 0
            return output
        handle = layer.register_forward_hook(zero)
        with torch.no_grad():
            weights[:, k] = (base - model(x).gather(1, target[:, None])[:, 0]) / base
        handle.remove()
    cam = torch.relu((weights[:, :, None, None] * a).sum(1))
    return F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def rise_loop(model, x, target, args):
    """The same masks as the engine's RISE, one forward of the batch per mask."""
    import torch

    from XAIExplainLib.engine.methods.rise import RiseMasks
    masks = RiseMasks(tuple(x.shape[2:]), args.masks, 7, 0.5, seed=0)
    total = torch.zeros((x.shape[0],) + tuple(x.shape[2:]))
    with torch.no_grad():
        for i in range(args.masks):
            mask = masks.batch(i, i + 1)[0]
            probability = torch.softmax(model(x * mask), 1).gather(1, target[:, None])[:, 0]
            total += probability[:, None, None] * mask
    return total / (args.masks * 0.5)


def _rows(section, args):
    """{row: callable} for one section (rows whose peer is missing map to the ImportError)."""
    import torch

    import XAIExplainLib as xai
    if section == "unet":
        from XAIExplainLib.engine.methods import kwc

        from . import models as bench_models
        from .seed_methods import bench_unet, kwc_loop
        model = bench_unet(args.unet_width).to(args.device)
        x = bench_models.synthetic_ct(args.unet_slices, args.unet_size)[:, None].to(args.device)
        seg = xai.SegmentationTarget(1, region="all", activation="sigmoid")

        def unfused():
            fused = kwc.following_convolution
            kwc.following_convolution = lambda *a: None
            try:
                return xai.explain(model, x, "kwc", target=seg, layer=UNET_LAYER, normalize=False)
            finally:
                kwc.following_convolution = fused

        def plain():
            with torch.inference_mode():
                return model(x)
        return x, {
            "plain inference": plain,
            "eigencam": lambda: xai.explain(model, x, "eigencam", target=seg, layer=UNET_LAYER, normalize=False),
            "kwc (fused convolution)": lambda: xai.explain(model, x, "kwc", target=seg, layer=UNET_LAYER,
                                                           normalize=False),
            "kwc replay from the layer (before)": unfused,
            "kwc per-kernel loop": lambda: kwc_loop(model, x, UNET_LAYER, seg),
        }
    model, x, target = _classifier_setup(args, small=section == "rise")

    def plain():
        with torch.inference_mode():
            return model(x)
    rows = {"plain inference": plain}
    ours = {"eigencam": {"layer": "layer4"}, "kpcacam": {"layer": "layer4"}, "ablationcam": {"layer": "layer4"}, "fullgrad": {},
            "input_x_gradient": {}, "deeplift": {}, "lrp": {},
            "gradient_shap": {"samples": args.samples, "stdev": 0.1, "baselines": 0.0},
            "rise": {"masks": args.masks, "cells": 7}}
    for section_name, row, _, _ in ROWS:
        if section_name != section or row in rows:
            continue
        if row in ours:
            rows[row] = (lambda row=row: xai.explain(model, x, row, target=target, normalize=row in ("fullgrad",),
                                                     **ours[row]))
        elif row.startswith("ablation loop"):
            rows[row] = lambda: ablation_loop(model, x, target, model.layer4)
        elif row.startswith("rise loop"):
            rows[row] = lambda: rise_loop(model, x, target, args)
        elif row.startswith("rise, building"):
            rows[row] = lambda: _uncached(lambda: xai.explain(model, x, "rise", target=target, normalize=False,
                                                              **ours["rise"]))
        else:
            try:
                rows[row] = _peer_row(row, model, x, target, args)
            except ImportError as error:
                rows[row] = error
    return x, rows


def _pearson(a, b) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def child(args) -> None:
    import torch

    from .seed_methods import _PeakRss
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, runs = _rows(args.section, args)
    rows = [(row, repeats, reference) for section, row, repeats, reference in ROWS if section == args.section]
    results, maps = {}, {}
    for row, repeats, _ in rows:
        if isinstance(runs[row], ImportError):
            results[row] = {"row": row, "skipped": f"not installed ({runs[row].name})"}
            continue
        results[row] = {"row": row, "all_seconds": [], "peak_mb": 0.0, "images": int(x.shape[0])}
        if repeats > 2:
            try:
                runs[row]()  # warm-up: lazy imports, layer probes, allocator
            except Exception as error:  # a peer that fails on this model: reported, not fatal
                results[row] = {"row": row, "skipped": f"failed: {type(error).__name__}: {str(error)[:120]}"}
    cuda = args.device == "cuda"
    for round_index in range(max(repeats for _, repeats, _ in rows)):
        for row, repeats, _ in rows:
            if "skipped" in results[row] or round_index >= repeats:
                continue
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            try:
                with _PeakRss() as memory:
                    start = time.perf_counter()
                    maps[row] = runs[row]()
                    if cuda:
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - start
            except Exception as error:
                results[row] = {"row": row, "skipped": f"failed: {type(error).__name__}: {str(error)[:120]}"}
                continue
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else memory.growth_mb
            results[row]["all_seconds"].append(round(seconds, 4))
            results[row]["peak_mb"] = round(max(results[row]["peak_mb"], peak), 1)
    for row, _, reference in rows:
        result = results[row]
        if "all_seconds" in result and result["all_seconds"]:
            result["seconds"] = min(result["all_seconds"])
        if reference and row in maps and reference in maps:
            a = maps[row].detach().float().cpu().reshape(maps[reference].shape)
            b = maps[reference].detach().float().cpu()
            if row in PEARSON_ROWS:
                result["one_minus_r"] = float(1 - min(_pearson(a[i], b[i]) for i in range(b.shape[0])))
            else:
                result["max_relative_difference"] = float((a - b).abs().max() / b.abs().max())
    print(json.dumps([results[row] for row, _, _ in rows]))


def measure(section: str, args) -> list[dict]:
    cmd = [sys.executable, "-m", "bench.peers.methods", "--child", "--section", section]
    for key in ("device", "threads", "width", "slices", "size", "samples", "masks", "rise_width", "rise_slices",
                "rise_size", "unet_width", "unet_slices", "unet_size"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", cwd=HERE.parent)
    if done.returncode != 0:
        reason = "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        return [{"row": row, "skipped": reason} for s, row, _, _ in ROWS if s == section]
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(title: str, rows: list[dict], references: dict) -> str:
    seconds = {r["row"]: r["seconds"] for r in rows if "seconds" in r}
    base = seconds.get("plain inference")
    lines = [title, f"{'row':38} {'seconds':>9} {'x plain':>8} {'ours faster':>12} {'peak MB':>8} {'same map':>18}"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"{r['row']:38} {'-':>9}  ({r['skipped']})")
            continue
        r["ratio_to_plain"] = round(r["seconds"] / base, 3) if base else None
        reference = references.get(r["row"])
        faster = ""
        if reference in seconds:
            r["ours_faster"] = round(r["seconds"] / seconds[reference], 2)
            faster = f"{r['ours_faster']:.1f}x"
        same = (f"1-r {r['one_minus_r']:.1e}" if "one_minus_r" in r else
                f"{r['max_relative_difference']:.1e}" if "max_relative_difference" in r else "")
        lines.append(f"{r['row']:38} {r['seconds']:9.3f} {r['ratio_to_plain'] or float('nan'):8.2f} {faster:>12} "
                     f"{r['peak_mb']:8.1f} {same:>18}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 keeps torch's default)")
    parser.add_argument("--width", type=int, default=32, help="classifier: ResNet-like base width")
    parser.add_argument("--slices", type=int, default=16, help="classifier: slices per batch")
    parser.add_argument("--size", type=int, default=128, help="classifier: slice size")
    parser.add_argument("--samples", type=int, default=16, help="GradientSHAP samples")
    parser.add_argument("--masks", type=int, default=500, help="RISE masks")
    parser.add_argument("--rise-width", type=int, default=16, help="RISE: ResNet-like base width")
    parser.add_argument("--rise-slices", type=int, default=4, help="RISE: slices per batch")
    parser.add_argument("--rise-size", type=int, default=96, help="RISE: slice size")
    parser.add_argument("--unet-width", type=int, default=16, help="U-Net base width")
    parser.add_argument("--unet-slices", type=int, default=2, help="U-Net: slices per batch")
    parser.add_argument("--unet-size", type=int, default=96, help="U-Net: slice size")
    parser.add_argument("--sections", nargs="+", default=["cam", "gradient", "rise", "unet"],
                        choices=["cam", "gradient", "rise", "unet"])
    parser.add_argument("--out", default=str(HERE / "results" / "methods.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--section", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import torch
    result = {"device": args.device, "torch": torch.__version__, "machine": platform.machine(),
              "threads": args.threads if args.threads > 0 else torch.get_num_threads(), "settings": vars(args).copy()}
    classifier = f"ResNet-like 2D (width {args.width}), {args.slices} x {args.size}^2, {args.device}"
    titles = {
        "cam": f"Eigen-CAM / KPCA-CAM / Ablation-CAM at layer4: {classifier}",
        "gradient": f"FullGrad, Input x Gradient, DeepLIFT, GradientSHAP ({args.samples} samples), LRP: {classifier}",
        "rise": f"RISE ({args.masks} masks, 7 cells): ResNet-like 2D (width {args.rise_width}), {args.rise_slices} x "
                f"{args.rise_size}^2, {args.device}",
        "unet": f"Eigen-CAM / KWC at {UNET_LAYER}: U-Net 2D (width {args.unet_width}), {args.unet_slices} x "
                f"{args.unet_size}^2, target = sum of sigmoid(class 1), {args.device}",
    }
    references = {row: reference for _, row, _, reference in ROWS if reference}
    for section in args.sections:
        rows = measure(section, args)
        print(table(titles[section], rows, references))
        print()
        result[section] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
