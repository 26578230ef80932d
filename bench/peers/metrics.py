"""Benchmark of the peer-library metrics: ROAD's imputation against Quantus, and the 3D cost of the metrics.

- Noisy linear imputation of a 2D image (noise 0): this library's conjugate gradients against
  Quantus's scipy sparse factorisation, same removed pixels; the largest difference is reported.
- The same imputation on a 3D volume, which Quantus's imputation does not handle (its neighbour
  offsets are 2D).
- ROAD (most relevant first, 9 percentiles), faithfulness correlation (100 runs), infidelity and
  max-sensitivity (10 perturbations each, Grad-CAM) of a small 3D CNN.

Each row keeps its best of ``--repeats`` runs (the machine is shared; the best run is the one
least disturbed). Prints a table and writes JSON (default bench/results/metrics.json).

    python -m bench.peers.metrics              # CPU, one thread, about half a minute
    python -m bench.peers.metrics --device cuda
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import explain
from XAIExplainLib.evaluation.imputation import noisy_linear_imputation

from bench.peers.quantus_support import best_of, import_quantus

HERE = Path(__file__).resolve().parents[1]  # bench/


def _cnn3d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size2d", type=int, default=224)
    parser.add_argument("--size3d", type=int, default=48)
    parser.add_argument("--output", default=str(HERE / "results" / "metrics.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    rows = []

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, args.size2d, args.size2d, dtype=torch.float64, generator=generator)
    removed = torch.rand(1, args.size2d, args.size2d, generator=generator) < 0.5
    seconds, ours = best_of(lambda: noisy_linear_imputation(image.to(device), removed.to(device), noise=0.0),
                          args.repeats, device)
    rows.append({"row": f"imputation 2D {args.size2d}^2 x3 ch, 50 % (this library, float64)", "seconds": seconds})
    quantus = getattr(import_quantus("quantus.functions.perturb_func"), "noisy_linear_imputation", None)
    if quantus is not None:
        indices = torch.nonzero(removed[0].flatten()).flatten().numpy()
        seconds, theirs = best_of(lambda: quantus(image[0].numpy(), indices, noise=0.0), args.repeats, "cpu")
        difference = float(np.abs(ours[0].cpu().numpy() - theirs).max())
        rows.append({"row": "imputation 2D, same pixels (Quantus, scipy spsolve)", "seconds": seconds,
                     "max_abs_difference": difference})

    volume = torch.randn(2, 1, *(args.size3d,) * 3, generator=generator).to(device)
    holes = (torch.rand(2, *(args.size3d,) * 3, generator=generator) < 0.5).to(device)
    seconds, _ = best_of(lambda: noisy_linear_imputation(volume, holes), args.repeats, device)
    rows.append({"row": f"imputation 3D 2 x {args.size3d}^3, 50 % (float32)", "seconds": seconds})

    model = _cnn3d().to(device)
    maps = explain(model, volume, "gradcam", layer="2")
    for name, function in [
        ("road morf 3D, 9 percentiles", lambda: ev.road_curve(model, volume, maps)),
        ("faithfulness correlation 3D, 100 runs", lambda: ev.faithfulness_correlation(model, volume, maps)),
        ("infidelity 3D, 10 perturbations", lambda: ev.infidelity(model, volume, maps)),
        ("max-sensitivity 3D, 10 perturbations, grad-cam", lambda: ev.max_sensitivity(model, volume, "gradcam",
                                                                                       layer="2")),
        ("plain inference 3D (reference)", lambda: model(volume)),
    ]:
        with torch.inference_mode(name.startswith("plain")):
            seconds, _ = best_of(function, args.repeats, device)
        rows.append({"row": f"{name}, N=2 x {args.size3d}^3", "seconds": seconds})

    width = max(len(r["row"]) for r in rows)
    print(f"{'row'.ljust(width)}  seconds  note")
    for r in rows:
        note = f"max |diff| {r['max_abs_difference']:.1e}" if "max_abs_difference" in r else ""
        print(f"{r['row'].ljust(width)}  {r['seconds']:7.3f}  {note}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"device": device, "threads": args.threads, "torch": torch.__version__,
                                  "platform": platform.platform(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
