"""Benchmark of the seed-paper and perturbation methods: CRM, KWC, Score-CAM, occlusion.

- CRM: closed form vs the literal forward mode (same map) and their cost over plain
  inference, on a ResNet-like 2D classifier.
- KWC: batched with the prefix replayed vs a straightforward per-kernel loop that runs
  the whole model twice per kernel (same map), on a 2D U-Net, at the last decoder
  convolution and at one two levels up.
- Score-CAM and occlusion: throughput in model evaluations (images) per second, with
  captum's Occlusion (same windows, same images per forward) for reference.

Each section runs in a fresh subprocess; its rows are interleaved round by round and
each row keeps its best round (rows with three or more rounds get a warm-up run first): on a
CPU shared with other work that compares rows under the same load. Peak memory is the
peak RSS growth during a row's run (sampled), or the CUDA peak allocation. Prints a
table and writes JSON (default bench/results/seed.json).

    python -m bench.peers.seed_methods              # CPU, one thread, about 2 minutes
    python -m bench.peers.seed_methods --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # bench/

# (section, row, repeats)
ROWS = [
    ("crm", "plain inference", 5),
    ("crm", "crm closed form", 5),
    ("crm", "crm forward mode", 5),
    ("kwc", "plain inference", 5),
    ("kwc", "kwc batched dec1.3", 3),
    ("kwc", "kwc per-kernel loop dec1.3", 2),
    ("kwc", "kwc batched dec2.3", 3),
    ("kwc", "kwc per-kernel loop dec2.3", 2),
    ("perturbation", "plain inference", 5),
    ("perturbation", "scorecam", 1),
    ("perturbation", "occlusion", 1),
    ("perturbation", "captum Occlusion", 1),
]
SAME_MAP = {"crm forward mode": "crm closed form", "kwc per-kernel loop dec1.3": "kwc batched dec1.3",
            "kwc per-kernel loop dec2.3": "kwc batched dec2.3"}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_unet(width: int = 16, classes: int = 2):
    """A 2D U-Net (3 poolings, conv-BN-ReLU x 2 blocks, transposed-conv upsampling, skips)."""
    import torch
    from torch import nn

    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                             nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.enc1, self.enc2, self.enc3 = block(1, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.bottleneck = block(4 * w, 8 * w)
            self.pool = nn.MaxPool2d(2)
            self.up3, self.dec3 = nn.ConvTranspose2d(8 * w, 4 * w, 2, stride=2), block(8 * w, 4 * w)
            self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), block(4 * w, 2 * w)
            self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), block(2 * w, w)
            self.head = nn.Conv2d(w, classes, 1)

        def forward(self, x):
            s1 = self.enc1(x)
            s2 = self.enc2(self.pool(s1))
            s3 = self.enc3(self.pool(s2))
            b = self.bottleneck(self.pool(s3))
            d3 = self.dec3(torch.cat([self.up3(b), s3], 1))
            d2 = self.dec2(torch.cat([self.up2(d3), s2], 1))
            d1 = self.dec1(torch.cat([self.up1(d2), s1], 1))
            return self.head(d1)

    torch.manual_seed(0)
    model = UNet().eval()
    with torch.no_grad():
        model.head.bias[1] -= 0.5  # a foreground that covers part of the image
    return model


def kwc_loop(model, x, layer_name, target):
    """The definition run literally: per kernel, two full forwards of the model with edited weights."""
    import copy

    import torch
    import torch.nn.functional as F

    from XAIExplainLib.engine.normalize import minmax
    edited = copy.deepcopy(model)
    layer = dict(edited.named_modules())[layer_name]
    original = layer.weight.detach().clone()
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.update(a=o.clone()))
    with torch.no_grad():
        out = edited(x)
    handle.remove()
    bound = target.bind(out)
    p = bound.probabilities(out).flatten(1)
    k_count = original.shape[0]
    dep, ind = torch.zeros(x.shape[0], k_count), torch.zeros(x.shape[0], k_count)
    with torch.no_grad():
        for k in range(k_count):
            layer.weight.copy_(original)
            layer.weight[k] = 0
            p_dep = bound.probabilities(edited(x)).flatten(1)
            layer.weight.zero_()
            layer.weight[k] = original[k]
            p_ind = bound.probabilities(edited(x)).flatten(1)
            dep[:, k] = (p - torch.minimum(p_dep, p)).sum(1)
            ind[:, k] = torch.minimum(p_ind, p).sum(1)
    w = minmax(dep * ind / p.sum(1, keepdim=True))
    layer_map = torch.relu((w[:, :, None, None] * torch.relu(captured["a"])).sum(1))
    return F.interpolate(layer_map[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def _setup(section: str, args):
    """(model, input, evaluations per run of each row) for a section."""
    import torch

    from . import models as bench_models
    device = torch.device(args.device)
    if section == "kwc":
        model = bench_unet(args.unet_width).to(device)
        volume = bench_models.synthetic_ct(args.kwc_slices, args.kwc_size)
    else:
        width = args.width if section == "crm" else args.perturbation_width
        model = bench_models.build(2, width).to(device)
        count = args.slices if section == "crm" else args.perturbation_slices
        volume = bench_models.synthetic_ct(count, args.size)
    return model, volume[:, None].to(device)


def _row_callable(section: str, row: str, model, x, args):
    import torch

    import XAIExplainLib as xai
    seg_target = xai.SegmentationTarget(1, region="all", activation="sigmoid")
    if row == "plain inference":
        def run():
            with torch.inference_mode():
                return model(x)
        return run, 1
    if row.startswith("crm"):
        mode = "closed" if "closed" in row else "forward"
        return (lambda: xai.explain(model, x, "crm", layer="layer4", normalize=False, crm_mode=mode)), None
    if row.startswith("kwc"):
        layer = row.split()[-1]
        kernels = dict(model.named_modules())[layer].out_channels
        if "loop" in row:
            return (lambda: kwc_loop(model, x, layer, seg_target)), 1 + 2 * kernels
        return (lambda: xai.explain(model, x, "kwc", target=seg_target, layer=layer, normalize=False)), 2 * kernels
    if row == "scorecam":
        channels = model.layer4[-1].conv2.out_channels
        return (lambda: xai.explain(model, x, "scorecam", layer="layer4", normalize=False)), channels + 1
    windows = ((args.size - args.window) // args.stride + 1) ** 2
    if row == "occlusion":
        return (lambda: xai.explain(model, x, "occlusion", window=args.window, stride=args.stride,
                                    normalize=False)), windows + 1
    if row == "captum Occlusion":
        from captum.attr import Occlusion
        occlusion = Occlusion(model)

        def run():
            with torch.no_grad():
                target = model(x).argmax(1)
            return occlusion.attribute(x, sliding_window_shapes=(1, args.window, args.window),
                                       strides=(1, args.stride, args.stride), baselines=0.0, target=target,
                                       perturbations_per_eval=args.per_eval)[:, 0]
        return run, windows + 1
    raise ValueError(row)


class _PeakRss:
    """Peak resident memory above the level at entry, sampled every millisecond by a thread.

    Large tensors are mmap-allocated and returned to the system when freed, so rows
    measured one after another in the same process each see their own peak.
    """

    def __enter__(self):
        import threading
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak - self.start


def child(args) -> None:
    """Measure every row of one section in this process, interleaved round by round; print JSON.

    On a CPU shared with other work the load drifts over minutes; interleaving the rows
    and keeping each row's best round compares them under the same conditions.
    """
    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, x = _setup(args.section, args)
    rows = [(row, repeats) for section, row, repeats in ROWS if section == args.section]
    runs, results, maps = {}, {}, {}
    for row, repeats in rows:
        try:
            runs[row] = _row_callable(args.section, row, model, x, args)
        except ImportError as error:
            results[row] = {"row": row, "skipped": f"not installed ({error.name})"}
            continue
        results[row] = {"row": row, "all_seconds": [], "peak_mb": 0.0, "images": int(x.shape[0])}
        if repeats > 2:
            runs[row][0]()  # warm-up: lazy imports, layer probes, allocator
    cuda = args.device == "cuda"
    for round_index in range(max(repeats for _, repeats in rows)):
        for row, repeats in rows:
            if row not in runs or round_index >= repeats:
                continue
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            with _PeakRss() as memory:
                start = time.perf_counter()
                maps[row] = runs[row][0]()
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else memory.growth_mb
            results[row]["all_seconds"].append(round(seconds, 4))
            results[row]["peak_mb"] = round(max(results[row]["peak_mb"], peak), 1)
    for row, evaluations in ((row, runs[row][1]) for row, _ in rows if row in runs):
        result = results[row]
        result["seconds"] = min(result["all_seconds"])
        if evaluations:
            result["evaluations_per_image"] = evaluations
            result["images_per_second"] = round(evaluations * x.shape[0] / result["seconds"], 1)
    for row, reference in SAME_MAP.items():
        if row in maps and reference in maps:
            a, b = maps[row].detach().float().cpu(), maps[reference].detach().float().cpu()
            results[row]["max_relative_difference"] = float((a - b).abs().max() / b.abs().max())
    print(json.dumps([results[row] for row, _ in rows]))


def measure(section: str, args) -> list[dict]:
    cmd = [sys.executable, "-m", "bench.peers.seed_methods", "--child", "--section", section]
    for key in ("device", "threads", "width", "slices", "size", "unet_width", "kwc_slices", "kwc_size",
                "perturbation_width", "perturbation_slices", "window", "stride", "per_eval"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", cwd=HERE.parent)
    if done.returncode != 0:
        reason = "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        return [{"row": row, "skipped": reason} for s, row, _ in ROWS if s == section]
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(title: str, rows: list[dict]) -> str:
    base = next((r["seconds"] for r in rows if r["row"] == "plain inference" and "seconds" in r), None)
    loops = {r["row"].replace("per-kernel loop", "batched"): r["seconds"] for r in rows
             if "loop" in r["row"] and "seconds" in r}
    lines = [title, f"{'row':28} {'seconds':>9} {'x plain':>8} {'speedup':>8} {'images/s':>9} {'peak MB':>8} "
                    f"{'same map (max rel diff)':>24}"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"{r['row']:28} {'-':>9}  ({r['skipped']})")
            continue
        ratio = r["seconds"] / base if base else float("nan")
        r["ratio_to_plain"] = round(ratio, 3)
        speedup = loops.get(r["row"], 0) / r["seconds"] if r["row"] in loops else None
        if speedup:
            r["speedup_over_loop"] = round(speedup, 2)
        diff = r.get("max_relative_difference")
        lines.append(f"{r['row']:28} {r['seconds']:9.3f} {ratio:8.2f} {(f'{speedup:.1f}x' if speedup else ''):>8} "
                     f"{r.get('images_per_second', ''):>9} {r['peak_mb']:8.1f} "
                     f"{(f'{diff:.1e}' if diff is not None else ''):>24}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per row (default 1: intra-op threads on an oversubscribed CPU "
                             "slow down by orders of magnitude; 0 keeps torch's default)")
    parser.add_argument("--width", type=int, default=32, help="CRM: ResNet-like base width")
    parser.add_argument("--slices", type=int, default=32, help="CRM: slices per batch")
    parser.add_argument("--size", type=int, default=128, help="CRM / perturbation: slice size")
    parser.add_argument("--unet-width", type=int, default=16, help="KWC: U-Net base width")
    parser.add_argument("--kwc-slices", type=int, default=2, help="KWC: slices per batch")
    parser.add_argument("--kwc-size", type=int, default=96, help="KWC: slice size")
    parser.add_argument("--perturbation-width", type=int, default=8, help="Score-CAM / occlusion: ResNet width")
    parser.add_argument("--perturbation-slices", type=int, default=4, help="Score-CAM / occlusion: slices")
    parser.add_argument("--window", type=int, default=16, help="occlusion window")
    parser.add_argument("--stride", type=int, default=8, help="occlusion stride")
    parser.add_argument("--per-eval", type=int, default=64, help="captum perturbations_per_eval")
    parser.add_argument("--sections", nargs="+", default=["crm", "kwc", "perturbation"],
                        choices=["crm", "kwc", "perturbation"], help="which tables to measure")
    parser.add_argument("--out", default=str(HERE / "results" / "seed.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import torch
    threads = args.threads if args.threads > 0 else torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    result = {"device": args.device, "torch": torch.__version__, "machine": platform.machine(), "threads": threads,
              "gpu": gpu, "settings": vars(args).copy()}
    titles = {
        "crm": f"CRM: ResNet-like 2D (width {args.width}), {args.slices} x {args.size}^2, layer4, {args.device}",
        "kwc": f"KWC: U-Net 2D (width {args.unet_width}), {args.kwc_slices} x {args.kwc_size}^2, target = sum of "
               f"sigmoid(class 1), {args.device}",
        "perturbation": f"Score-CAM (layer4) / occlusion (window {args.window}, stride {args.stride}): ResNet-like 2D "
                        f"(width {args.perturbation_width}), {args.perturbation_slices} x {args.size}^2, {args.device}",
    }
    for section in args.sections:
        rows = measure(section, args)
        print(table(titles[section], rows))
        print()
        result[section] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
