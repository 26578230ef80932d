"""Whole-volume rows for a lent GPU: a 512 x 512 x 300 CT per slice and an nnU-Net-sized 3D U-Net.

Rows (each timed after a warm-up, CUDA synchronised; peak memory is
``torch.cuda.max_memory_allocated`` on CUDA, else the process's RSS growth):

- 2D per slice: ``predict_volume`` (plain inference), ``explain_volume`` Grad-CAM and the five
  CAMs (Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM) in one pass, on a synthetic CT of
  300 slices of 512 x 512 with the ResNet-like 2D classifier of ``bench.peers.models``;
- 3D volumetric: ``predict_volume`` and ``explain_volume`` Grad-CAM at the last decoder stage
  of a U-Net shaped like nnU-Net's default 3d_fullres CT plan (6 stages, 32..320 features,
  instance norm + leaky ReLU, 128^3 patch, windows overlapping by half) on a 256 x 320 x 320 CT.
  Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
  segmentation", Nature Methods 2021, https://doi.org/10.1038/s41592-020-01008-z.

    python -m bench.gpu_volumes --device cuda --out bench/results/gpu_volumes.json
    python -m bench.gpu_volumes --dry-run          # tiny sizes on the CPU: checks that it runs

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
CAM5 = ["gradcam", "gradcampp", "hirescam", "xgradcam", "layercam"]
FULL = dict(slices=300, size=512, batch=32, width=32, ct3d=(256, 320, 320), patch=(128, 128, 128),
            features=(32, 64, 128, 256, 320, 320))
TINY = dict(slices=4, size=32, batch=2, width=8, ct3d=(12, 20, 20), patch=(8, 16, 16), features=(4, 8, 8))


class _Stage(nn.Sequential):
    def __init__(self, dims_in: int, dims_out: int, stride: int):
        super().__init__(nn.Conv3d(dims_in, dims_out, 3, stride, 1), nn.InstanceNorm3d(dims_out, affine=True),
                         nn.LeakyReLU(0.01, inplace=True), nn.Conv3d(dims_out, dims_out, 3, 1, 1),
                         nn.InstanceNorm3d(dims_out, affine=True), nn.LeakyReLU(0.01, inplace=True))


class PlainUNet3D(nn.Module):
    """nnU-Net's PlainConvUNet layout in plain torch: strided-conv encoder, transposed-conv decoder."""

    def __init__(self, features=(32, 64, 128, 256, 320, 320), classes: int = 3):
        super().__init__()
        self.encoder = nn.ModuleList(_Stage(i, o, 1 if k == 0 else 2)
                                     for k, (i, o) in enumerate(zip((1,) + features[:-1], features)))
        self.up = nn.ModuleList(nn.ConvTranspose3d(features[k + 1], features[k], 2, 2)
                                for k in reversed(range(len(features) - 1)))
        self.decoder = nn.ModuleList(_Stage(2 * features[k], features[k], 1)
                                     for k in reversed(range(len(features) - 1)))
        self.head = nn.Conv3d(features[0], classes, 1)

    def forward(self, x):
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, stage in zip(self.up, self.decoder):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def _peak_mb(device: torch.device, rss_before: float) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before


def _timed(name: str, run, device: torch.device, repeats: int) -> dict:
    run()  # warm-up: cudnn autotune, the default-layer probe, lazy imports
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
    return {"row": name, "seconds": min(seconds), "all_seconds": seconds,
            "peak_mb": round(_peak_mb(device, rss_before), 1)}


def rows_2d(sizes: dict, device: torch.device, repeats: int) -> list[dict]:
    from XAIExplainLib.engine import explain_volume, predict_volume
    from bench.peers import models as bench_models

    model = bench_models.build(2, sizes["width"]).to(device)
    volume = bench_models.synthetic_ct(sizes["slices"], sizes["size"]).numpy()
    common = dict(mode="slices", axis=0, batch_size=sizes["batch"], device=device)
    return [
        _timed("2D plain inference (predict_volume)", lambda: predict_volume(model, volume, **common), device, repeats),
        _timed("2D Grad-CAM (explain_volume)",
               lambda: explain_volume(model, volume, "gradcam", layer="layer4", **common), device, repeats),
        _timed("2D five CAMs in one pass",
               lambda: explain_volume(model, volume, CAM5, layer="layer4", **common), device, repeats),
    ]


def rows_3d(sizes: dict, device: torch.device, repeats: int) -> list[dict]:
    from XAIExplainLib.engine import explain_volume, predict_volume
    from bench.peers import models as bench_models

    torch.manual_seed(0)
    model = PlainUNet3D(sizes["features"]).to(device).eval()
    depth, height, width = sizes["ct3d"]
    volume = bench_models.synthetic_ct(depth, max(height, width))[:, :height, :width].contiguous().numpy()
    layer = f"decoder.{len(sizes['features']) - 2}"  # the last decoder stage (full resolution)
    common = dict(mode="volume", patch_size=sizes["patch"], overlap=0.5, batch_size=2, device=device)
    return [
        _timed("3D plain inference (predict_volume)", lambda: predict_volume(model, volume, **common), device, repeats),
        _timed(f"3D Grad-CAM at {layer} (explain_volume)",
               lambda: explain_volume(model, volume, "gradcam", layer=layer, **common), device, repeats),
    ]


def table(rows: list[dict]) -> str:
    lines = [f"{'row':44} {'seconds':>9} {'peak MB':>9}"]
    lines += [f"{r['row']:44} {r['seconds']:9.3f} {r['peak_mb']:9.1f}" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks that every row runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu_volumes.json")
    args = parser.parse_args(argv)
    sizes = TINY if args.dry_run else FULL
    from XAIExplainLib.engine.devices import resolve_device

    device = resolve_device("cpu" if args.dry_run else args.device)
    repeats = 1 if args.dry_run else args.repeats
    rows = rows_2d(sizes, device, repeats) + rows_3d(sizes, device, repeats)
    print(f"{device}: CT {sizes['slices']} x {sizes['size']} x {sizes['size']} per slice; "
          f"3D U-Net {sizes['features']} on {sizes['ct3d']}, patch {sizes['patch']}")
    print(table(rows))
    result = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "platform": platform.platform(), "dry_run": args.dry_run,
              "sizes": sizes, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
