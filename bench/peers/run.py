"""Engine benchmark: XAIExplain against plain inference and peer libraries on the same model and volume.

Each row runs in a fresh subprocess so that its peak memory is its own (peak RSS growth
on CPU, ``torch.cuda.max_memory_allocated`` on CUDA). Prints a table and writes JSON.

    python -m bench.peers.run                      # CPU: 64 slices of 256 x 256, ResNet-like 2D + small 3D
    python -m bench.peers.run --device cuda        # GPU: 300 slices of 512 x 512 by default
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # bench/

CAM5 = ["gradcam", "gradcampp", "hirescam", "xgradcam", "layercam"]
ROWS_2D = ["plain inference", "xaiexplain gradcam", "xaiexplain 5 CAM maps", "captum LayerGradCam",
           "monai GradCAM", "pytorch-grad-cam GradCAM"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batches(volume, batch):
    for start in range(0, volume.shape[0], batch):
        yield volume[start:start + batch]


def _row_callable(row: str, model, volume, layer_name: str, batch: int, device, dims: int):
    """A function computing the row's full-volume result once."""
    import torch

    import XAIExplainLib as xai
    layer = dict(model.named_modules())[layer_name]
    mode = "bilinear" if dims == 2 else "trilinear"
    xai_mode = "slices" if dims == 2 else "volume"

    def prepared():
        data = volume if dims == 2 else volume[None]
        for chunk in _batches(data, batch):
            yield chunk.unsqueeze(1).to(device)

    if row == "plain inference":
        def run():
            with torch.inference_mode():
                return [model(x).cpu() for x in prepared()]
    elif row == "xaiexplain gradcam":
        def run():
            return xai.explain_volume(model, volume, "gradcam", mode=xai_mode, layer=layer_name,
                                      batch_size=batch, device=device)
    elif row == "xaiexplain 5 CAM maps":
        def run():
            return xai.explain_volume(model, volume, CAM5, mode=xai_mode, layer=layer_name,
                                      batch_size=batch, device=device)
    elif row == "captum LayerGradCam":
        from captum.attr import LayerAttribution, LayerGradCam
        explainer = LayerGradCam(model, layer)

        def run():
            out = []
            for x in prepared():
                with torch.no_grad():
                    target = model(x).argmax(1)
                cam = explainer.attribute(x, target=target, relu_attributions=True)
                out.append(LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=mode).detach().cpu())
            return out
    elif row == "monai GradCAM":
        from monai.visualize import GradCAM
        explainer = GradCAM(nn_module=model, target_layers=layer_name)

        def run():
            return [explainer(x).detach().cpu() for x in prepared()]
    elif row == "pytorch-grad-cam GradCAM":
        from pytorch_grad_cam import GradCAM as PGC
        explainer = PGC(model=model, target_layers=[layer])

        def run():
            return [explainer(input_tensor=x) for x in prepared()]
    else:
        raise ValueError(row)
    return run


def child(args) -> None:
    """Measure one row (called in a subprocess) and print its JSON."""
    import torch

    from . import models as bench_models
    torch.manual_seed(0)
    device = torch.device(args.device)
    dims = args.dims
    model = bench_models.build(dims, args.width).to(device)
    if dims == 2:
        volume = bench_models.synthetic_ct(args.slices, args.size)
    else:
        volume = bench_models.synthetic_ct(args.depth, args.size3d)
    try:
        run = _row_callable(args.row, model, volume, "layer4", args.batch, device, dims)
    except ImportError as error:
        print(json.dumps({"row": args.row, "skipped": f"not installed ({error.name})"}))
        return
    run()  # warm-up (also the default-layer probe, cudnn autotune, lazy imports)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _rss_mb()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_rss_mb() - baseline
    print(json.dumps({"row": args.row, "seconds": statistics.median(times), "all_seconds": times,
                      "peak_mb": round(peak, 1)}))


def measure(row: str, args, dims: int) -> dict:
    cmd = [sys.executable, "-m", "bench.peers.run", "--child", "--row", row, "--dims", str(dims)]
    for key in ("device", "slices", "size", "depth", "size3d", "batch", "repeats", "width"):
        cmd += [f"--{key}", str(getattr(args, key))]
    done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", cwd=HERE.parent)
    if done.returncode != 0:
        return {"row": row, "skipped": "failed: " + done.stderr.strip().splitlines()[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_rows(args, dims: int) -> list[dict]:
    """Every row ``args.rounds`` times, the rows interleaved round by round, so that a slow
    spell of a shared machine hits all rows alike; seconds are the median over the rounds."""
    runs = {row: [] for row in ROWS_2D}
    for _ in range(args.rounds):
        for row in ROWS_2D:
            runs[row].append(measure(row, args, dims))
    rows = []
    for row, results in runs.items():
        done = [r for r in results if "seconds" in r]
        if not done:
            rows.append(results[0])
            continue
        rows.append({"row": row, "seconds": statistics.median(r["seconds"] for r in done),
                     "round_seconds": [r["seconds"] for r in done],
                     "peak_mb": max(r["peak_mb"] for r in done)})
    return rows


def table(title: str, rows: list[dict]) -> str:
    base = next((r["seconds"] for r in rows if r["row"] == "plain inference" and "seconds" in r), None)
    peers = [r["seconds"] for r in rows if "seconds" in r and not r["row"].startswith(("plain", "xaiexplain"))]
    fastest_peer = min(peers) if peers else None
    lines = [title, f"{'row':28} {'seconds':>9} {'x plain':>8} {'peer/ours':>9} {'peak MB':>9}"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"{r['row']:28} {'-':>9} {'':>8} {'':>9} {'':>9}  ({r['skipped']})")
            continue
        ratio = r["seconds"] / base if base else float("nan")
        speedup = fastest_peer / r["seconds"] if fastest_peer and r["row"].startswith("xaiexplain") else None
        r["ratio_to_plain"] = round(ratio, 3)
        if speedup:
            r["fastest_peer_over_ours"] = round(speedup, 2)
        lines.append(f"{r['row']:28} {r['seconds']:9.3f} {ratio:8.2f} "
                     f"{(f'{speedup:.2f}' if speedup else ''):>9} {r['peak_mb']:9.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--slices", type=int, help="2D: slices of the synthetic CT (default 64 CPU, 300 CUDA)")
    parser.add_argument("--size", type=int, help="2D: slice size (default 256 CPU, 512 CUDA)")
    parser.add_argument("--depth", type=int, default=None, help="3D: volume depth (default 64 CPU, 128 CUDA)")
    parser.add_argument("--size3d", type=int, default=None, help="3D: in-plane size (default 96 CPU, 192 CUDA)")
    parser.add_argument("--batch", type=int, default=16, help="slices per batch (2D)")
    parser.add_argument("--width", type=int, default=32, help="ResNet base width")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row and round (median)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all rows, interleaved (median over rounds)")
    parser.add_argument("--skip-3d", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "engine.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--dims", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.slices = args.slices or (300 if gpu else 64)
    args.size = args.size or (512 if gpu else 256)
    args.depth = args.depth or (128 if gpu else 64)
    args.size3d = args.size3d or (192 if gpu else 96)
    if args.child:
        child(args)
        return 0
    import torch
    result = {"device": args.device, "torch": torch.__version__, "machine": platform.machine(),
              "threads": torch.get_num_threads(),
              "gpu": torch.cuda.get_device_name(0) if gpu else None, "settings": vars(args).copy()}
    rows2d = measure_rows(args, 2)
    print(table(f"2D ResNet-like (width {args.width}), slices mode: {args.slices} x {args.size} x {args.size}, "
                f"batch {args.batch}, layer4, {args.device}", rows2d))
    result["2d"] = rows2d
    if not args.skip_3d:
        args.batch_3d = 1
        rows3d = measure_rows(args, 3)
        print()
        print(table(f"3D ResNet-like (width {args.width}), volume mode: {args.depth} x {args.size3d} x "
                    f"{args.size3d}, layer4, {args.device}", rows3d))
        result["3d"] = rows3d
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
