"""nnU-Net benchmark: XAIExplain's Grad-CAM over a whole CT against nnU-Net's own prediction, side by side.

Writes an nnU-Net v2 trained-model folder with a 3d_fullres plan shaped like nnU-Net's default
for a CT dataset (6 stages, 3x3x3 kernels, 128^3 patch, 32..320 features) or, by default on
CPU, a reduced one (5 stages, 64 x 96 x 96 patch, 8..80 features), and a synthetic CT on the
plan's spacing. Rows, each in a fresh subprocess so its peak memory is its own:

- nnU-Net predictor: ``nnUNetPredictor.predict_single_npy_array`` (tile step 0.5, Gaussian,
  no mirroring), preprocessing and export included;
- XAIExplain prediction: ``predict_image`` (the same preprocessing, windows and export);
- XAIExplain Grad-CAM: ``explain_image`` at the card's default decoder layer (prediction and map).

The same three rows run for nnU-Net's ``2d`` configuration of the same CT (a 2D plan shaped like
nnU-Net's for CT slices: windows tiled over every slice), each against nnU-Net's own 2d prediction.

    python -m bench.peers.bench_nnunet                  # reduced plan, CPU
    python -m bench.peers.bench_nnunet --full --device cuda
    python -m bench.peers.bench_nnunet --configuration 2d
Prints a table and writes bench/results/nnunet.json. Target: Grad-CAM <= 2 x nnU-Net's time, per configuration.
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
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

ROWS = ["nnU-Net predictor", "XAIExplain prediction", "XAIExplain Grad-CAM"]
CONFIGURATIONS = ("3d_fullres", "2d")
PLANS = {
    "full": dict(patch=(128, 128, 128), features=(32, 64, 128, 256, 320, 320),
                 strides=((1, 1, 1),) + ((2, 2, 2),) * 5, kernels=((3, 3, 3),) * 6, ct_shape=(256, 320, 320)),
    "reduced": dict(patch=(64, 96, 96), features=(8, 16, 32, 64, 80), strides=((1, 1, 1),) + ((2, 2, 2),) * 4,
                    kernels=((3, 3, 3),) * 5, ct_shape=(96, 192, 192)),
    # bench/gpu.sh --dry-run: that every row starts, in seconds on a CPU
    "tiny": dict(patch=(16, 16, 16), features=(4, 8, 8), strides=((1, 1, 1),) + ((2, 2, 2),) * 2,
                 kernels=((3, 3, 3),) * 3, ct_shape=(20, 24, 24)),
}
#: The 2d configuration of each plan: nnU-Net's 2D CT plans tile a slice with a 2D patch and more stages.
PLANS_2D = {
    "full": dict(patch=(320, 320), features=(32, 64, 128, 256, 512, 512, 512),
                 strides=((1, 1),) + ((2, 2),) * 6, kernels=((3, 3),) * 7),
    "reduced": dict(patch=(192, 192), features=(8, 16, 32, 64, 80, 80), strides=((1, 1),) + ((2, 2),) * 5,
                    kernels=((3, 3),) * 6),
    "tiny": dict(patch=(16, 16), features=(4, 8, 8), strides=((1, 1),) + ((2, 2),) * 2, kernels=((3, 3),) * 3),
}


def _write(folder: Path, plan: dict, configuration: str, plan_name: str) -> None:
    from Testing.support.nnunet_folders import write_nnunet_folder

    if configuration == "2d":
        layout = PLANS_2D[plan_name]
        write_nnunet_folder(folder, folds=(0,), configuration="2d", patch=layout["patch"], spacing=(0.8, 0.8),
                            features=layout["features"], strides=layout["strides"], kernels=layout["kernels"])
        return
    write_nnunet_folder(folder, folds=(0,), patch=plan["patch"], spacing=(1.0, 0.8, 0.8),
                        features=plan["features"], strides=plan["strides"], kernels=plan["kernels"])


def _image(plan: dict):
    from Testing.support.nnunet_folders import ct_image

    return ct_image(shape=plan["ct_shape"], spacing=(0.8, 0.8, 1.0))


def _row(name: str, folder: Path, plan: dict, device: str, threads: int) -> dict:
    import numpy as np
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    image = _image(plan)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if name == "nnU-Net predictor":
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=cuda, device=torch.device(device), verbose=False,
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
        array = sitk.GetArrayFromImage(image)[None].astype(np.float32)

        def run():
            return predictor.predict_single_npy_array(array, {"spacing": list(image.GetSpacing())[::-1]})
    else:
        from XAIExplainLib.models import explain_image, load_model, predict_image

        model = load_model(folder, device=device)
        if name == "XAIExplain prediction":
            def run():
                return predict_image(model, image, device=device)
        else:
            def run():
                return explain_image(model, image, "gradcam", device=device).prediction
    started = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before)
    return {"row": name, "seconds": seconds, "peak_mb": peak, "memory": "CUDA allocated" if cuda else "RSS growth"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="nnU-Net's default CT plan (GPU sized)")
    parser.add_argument("--plan", choices=sorted(PLANS), help="the plan by name (--full is --plan full)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "nnunet.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--configuration", choices=CONFIGURATIONS + ("both",), default="both",
                        help="nnU-Net configuration(s) to compare (default: both)")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan_name = args.plan or ("full" if args.full else "reduced")
    plan = PLANS[plan_name]
    if args.row:
        print(json.dumps(_row(args.row, Path(args.folder), plan, args.device, args.threads)))
        return
    configurations = CONFIGURATIONS if args.configuration == "both" else (args.configuration,)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for configuration in configurations:
            folder = Path(tmp) / f"nnUNetTrainer__nnUNetPlans__{configuration}"
            _write(folder, plan, configuration, plan_name)
            runs = {row: [] for row in ROWS}
            for _ in range(args.rounds):
                for row in ROWS:
                    command = [sys.executable, "-m", "bench.peers.bench_nnunet", "--row", row, "--folder", str(folder),
                               "--device", args.device, "--threads", str(args.threads), "--plan", plan_name]
                    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
                    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True, cwd=ROOT)
                    runs[row].append(json.loads(out.stdout.strip().splitlines()[-1]))
            base = statistics.median(r["seconds"] for r in runs["nnU-Net predictor"])
            for row in ROWS:
                seconds = statistics.median(r["seconds"] for r in runs[row])
                table.append({"configuration": configuration, "row": row, "seconds": seconds,
                              "x_nnunet": seconds / base, "peak_mb": max(r["peak_mb"] for r in runs[row]),
                              "memory": runs[row][0]["memory"]})
    print(f"plan {plan_name}, 3d patch {plan['patch']}, 2d patch {PLANS_2D[plan_name]['patch']}, CT {plan['ct_shape']}, "
          f"{args.device}, {args.threads} thread(s), median of {args.rounds}")
    print(f"{'configuration':<14}{'row':<24}{'seconds':>10}{'x nnU-Net':>11}{'peak MB':>10}")
    for r in table:
        print(f"{r['configuration']:<14}{r['row']:<24}{r['seconds']:>10.2f}{r['x_nnunet']:>11.2f}{r['peak_mb']:>10.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "plan": plan_name, "patch": plan["patch"], "patch_2d": PLANS_2D[plan_name]["patch"],
        "ct_shape": plan["ct_shape"],
        "device": args.device, "threads": args.threads, "rounds": args.rounds, "platform": platform.platform(),
        "rows": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
