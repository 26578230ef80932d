"""How responsive a background run is: the longest wait between progress updates and the cancel latency.

What the Slicer panel's user feels (issue 13): the panel polls ``job.progress``;
progress must move at least every 2 s and a cancel must take effect within 1 s.
For each bundled model and method, on a real CT in a headless MRML scene:

* a full run (or one stopped after ``--max-seconds``): the longest gap between
  consecutive progress updates, the median gap, and the run's time;
* ``--cancels`` runs cancelled at a random moment: the time from ``job.cancel()``
  to ``job.done`` (the worker stopped), worst and median.

    python -m bench.slicer_responsiveness --data ../shared/data        # lung1, gradcam + scorecam
    python -m bench.slicer_responsiveness --data DIR --models lung-nodule-2d --methods scorecam

Prints a table and writes bench/results/slicer_responsiveness.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _gaps(updates) -> list:
    times = [t for t, _, _ in updates]
    return [b - a for a, b in zip(times, times[1:])]


def full_run(logic, node, model, method, max_seconds, device):
    job = logic.startExplainVolume(node, model, methods=[method], device=device)
    stopped = not job.wait(max_seconds)
    if stopped:
        job.cancel()
        job.wait()
    updates = job.updates
    try:
        job.finish()
    except Exception as error:  # noqa: BLE001 - a stopped run raises ExplainCancelled
        if not stopped:
            raise error
    gaps = _gaps(updates)
    return {"seconds": updates[-1][0], "complete": not stopped, "updates": len(updates),
            "max_gap_s": max(gaps), "median_gap_s": statistics.median(gaps)}


def cancel_runs(logic, node, model, method, count, latest, rng, device):
    latencies = []
    for _ in range(count):
        job = logic.startExplainVolume(node, model, methods=[method], device=device)
        job.wait(rng.uniform(0.5, latest))
        asked = time.perf_counter()
        job.cancel()
        job.wait()
        latencies.append(time.perf_counter() - asked)
        try:
            job.finish()
        except Exception:  # noqa: BLE001 - ExplainCancelled (or finished before the cancel)
            pass
    return {"cancels": count, "max_cancel_s": max(latencies), "median_cancel_s": statistics.median(latencies)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with lung1_image.nrrd (the shared real data)")
    parser.add_argument("--image", default="lung1_image.nrrd")
    parser.add_argument("--models", nargs="+", default=["lung-nodule-2d", "ct-phase-2d"])
    parser.add_argument("--methods", nargs="+", default=["gradcam", "scorecam"])
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop a full run after this long")
    parser.add_argument("--cancels", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(HERE / "results" / "slicer_responsiveness.json"))
    args = parser.parse_args(argv)

    import SimpleITK as sitk
    import torch

    from XAIExplainLib import mrml
    from XAIExplainLib.logic import XAIExplainLogic

    scene = mrml.create_headless_scene(set_current=True)
    node = mrml.volumes.sitk_to_volume(scene, sitk.ReadImage(str(Path(args.data) / args.image)), "lung1")
    logic = XAIExplainLogic(scene)
    rng = random.Random(0)
    rows = []
    for name in args.models:
        model = logic.loadModel(name)
        for method in args.methods:
            row = {"model": name, "method": method}
            row.update(full_run(logic, node, model, method, args.max_seconds, args.device))
            row.update(cancel_runs(logic, node, model, method, args.cancels, min(row["seconds"], 20.0), rng,
                                   args.device))
            rows.append(row)
            print(row, flush=True)
    header = f"{'model':<16} {'method':<9} {'run s':>7} {'updates':>7} {'max gap s':>9} {'med gap s':>9} " \
             f"{'max cancel s':>12} {'med cancel s':>12}"
    print(header)
    for r in rows:
        print(f"{r['model']:<16} {r['method']:<9} {r['seconds']:>7.1f}{'' if r['complete'] else '+'} "
              f"{r['updates']:>7d} {r['max_gap_s']:>9.2f} {r['median_gap_s']:>9.3f} {r['max_cancel_s']:>12.3f} "
              f"{r['median_cancel_s']:>12.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"image": args.image, "device": args.device, "torch_threads": torch.get_num_threads(),
                               "machine": platform.platform(), "rows": rows}, indent=2))
    print(f"wrote {out}")
    mrml.release_headless_scene(scene)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
