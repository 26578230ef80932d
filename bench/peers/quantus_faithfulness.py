"""Benchmark of the Quantus faithfulness and randomisation metrics (issue 24): this library against Quantus.

Both libraries score the same 2D batch (N samples, one channel, a seeded CNN,
each image's minimum 0 so that Quantus's "black" baseline is our "min"), with
the same settings: features per step, patch sizes, the same IROF superpixels
(Quantus's SLIC, computed inside its timing), no normalisation or abs of the
maps.  A row gives both times, their ratio (Quantus / ours) and the largest
difference of the per-sample scores where the two compute the same number.
Rows without a Quantus time compute what Quantus does not: sensitivity-n as
in the paper (Quantus correlates across the batch instead) and a 3D volume.
eMPRT and sMPRT randomise layers with different random draws in the two
libraries, so only their times compare (the tests show agreement on a model
whose re-initialisation is fixed).

Each time is the best of ``--repeats`` runs (the machine is shared). Prints a
table and writes JSON (default bench/results/quantus_faithfulness.json).

    python -m bench.peers.quantus_faithfulness              # CPU, one thread, a few minutes
    python -m bench.peers.quantus_faithfulness --device cuda
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import explain

from bench.peers.quantus_support import best_of, import_quantus, small_cnn, write_results

HERE = Path(__file__).resolve().parents[1]  # bench/


def _restore(x_flat):
    """Quantus perturb_func that restores the image's values (Quantus 0.6's Monotonicity re-inserts the baseline)."""

    def restore(arr, indices, **kwargs):
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = x_flat[rows, indices]
        return out

    return restore


def _pairs(q, model, x, maps, y):
    """(name, ours, Quantus metric or None, Quantus call kwargs, how Quantus's output maps to our score)."""
    from quantus.helpers.utils import get_superpixel_segments

    quiet = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False,
             "return_aggregate": False}
    n = x.shape[0]
    voxels = maps[0].numel()
    segments = torch.from_numpy(np.stack([get_superpixel_segments(np.moveaxis(image, 0, -1).astype("double"), "slic")
                                          for image in x.cpu().numpy()]))
    counts = np.array([len(np.unique(s)) for s in segments.numpy()])
    explain_func = _explain_func()
    yield ("pixel_flipping, 4 px / step",
           lambda: ev.pixel_flipping(model, x, maps, target=y, features_in_step=4, baseline="min").score,
           q and q.PixelFlipping(features_in_step=4, perturb_baseline="black", return_auc_per_sample=True, **quiet),
           {}, lambda r: np.asarray(r) / (voxels // 4))
    yield ("region_perturbation, 4x4 patches, 32 regions",
           lambda: ev.region_perturbation(model, x, maps, target=y, patch_size=4, regions=32, baseline="min").score,
           q and q.RegionPerturbation(patch_size=4, regions_evaluation=32, perturb_baseline="black", **quiet),
           {}, lambda r: np.asarray(r).sum(axis=1) / 33)
    yield ("selectivity, 4x4 patches",
           lambda: ev.selectivity(model, x, maps, target=y, patch_size=4, baseline="min").score,
           q and q.Selectivity(patch_size=4, perturb_baseline="black", **quiet),
           {}, lambda r: np.trapezoid(np.asarray(r), axis=1) / np.asarray(r).shape[1])
    same_counts = len(set(counts.tolist())) == 1  # Quantus pads a batch's IROF curves to the longest
    yield ("irof, SLIC superpixels",
           lambda: ev.irof(model, x, maps, target=y, segments=segments, baseline="min").score,
           q and q.IROF(perturb_baseline="black", **quiet),
           {}, (lambda r: np.asarray(r) / counts) if same_counts else None)
    yield ("monotonicity, 16 px / step",
           lambda: ev.monotonicity(model, x, maps, target=y, features_in_step=16, baseline="min").score,
           q and q.Monotonicity(features_in_step=16, perturb_baseline="black",
                                perturb_func=_restore(x.reshape(n, -1).cpu().numpy()), **quiet),
           {}, lambda r: np.asarray(r, dtype=float))
    yield ("monotonicity_correlation, 4 px / step",
           lambda: ev.monotonicity_correlation(model, x, maps, target=y, features_in_step=4, baseline="min").score,
           q and q.MonotonicityCorrelation(features_in_step=4, nr_samples=1, perturb_baseline="black", **quiet),
           {}, np.asarray)
    yield ("faithfulness_estimate, 4 px / step",
           lambda: ev.faithfulness_estimate(model, x, maps, target=y, features_in_step=4, baseline="min").score,
           q and q.FaithfulnessEstimate(features_in_step=4, perturb_baseline="black", **quiet),
           {}, np.asarray)
    yield ("sensitivity_n (paper's per-sample form), 7 sizes x 50 sets",
           lambda: ev.sensitivity_n(model, x, maps, target=y).score, None, {}, None)
    yield ("sufficiency",
           lambda: ev.sufficiency(model, x, maps),
           q and q.Sufficiency(**quiet), {}, np.asarray)
    yield ("emprt, saliency, all layers",
           lambda: ev.emprt(model, x, "saliency", target=y, maps=maps).score,
           q and q.EfficientMPRT(skip_layers=True, complexity_func_kwargs={"n_bins": 100}, **quiet),
           {"explain_func": explain_func, "explain_func_kwargs": {}}, None)
    yield ("smprt, saliency, 10 samples, all layers",
           lambda: ev.smprt(model, x, "saliency", target=y, samples=10).score,
           q and q.SmoothMPRT(nr_samples=10, skip_layers=True, return_last_correlation=True, **quiet),
           {"explain_func": explain_func, "explain_func_kwargs": {}}, None)


def _explain_func():
    def explain_func(model, inputs, targets, **kwargs):
        device = next(model.parameters()).device
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        target = torch.as_tensor(np.asarray(targets), device=device).long()
        return explain(model, x, "saliency", target=target)[:, None].cpu().numpy()
    return explain_func


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--size2d", type=int, default=32)
    parser.add_argument("--size3d", type=int, default=24)
    parser.add_argument("--output", default=str(HERE / "results" / "quantus_faithfulness.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    q = import_quantus()
    if q is not None:  # Quantus's sMPRT explains through quantus.explain (captum); route it to this library's
        q.explain = lambda model, inputs, targets, **kwargs: _explain_func()(model, inputs, targets)

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.samples, 1, args.size2d, args.size2d, generator=generator)
    x[:, :, 0, 0] = 0.0
    x, model = x.to(device), small_cnn(2).to(device)
    y = torch.arange(args.samples, device=device) % 3
    maps = explain(model, x, "saliency", target=y) + 1e-6 * torch.rand(x.shape[0], *x.shape[2:],
                                                                         generator=generator).to(device)
    rows = []
    for name, ours, metric, call, convert in _pairs(q, model, x, maps, y):
        seconds, score = best_of(ours, args.repeats, device)
        row = {"row": f"{name}, N={args.samples} x {args.size2d}^2", "seconds": seconds, "quantus_seconds": None,
               "ratio": None, "max_abs_difference": None}
        if metric is not None:
            quantus_seconds, reference = best_of(
                lambda: metric(model=model, x_batch=x.cpu().numpy(), y_batch=y.cpu().numpy(),
                               a_batch=maps[:, None].cpu().numpy(), channel_first=True, device=device,
                               **{"softmax": True, **call}), args.repeats, device)
            row["quantus_seconds"] = quantus_seconds
            row["ratio"] = quantus_seconds / seconds
            if convert is not None:
                row["max_abs_difference"] = float(np.abs(score.cpu().numpy() - convert(reference)).max())
        rows.append(row)

    volume = torch.rand(2, 1, *(args.size3d,) * 3, generator=generator).to(device)
    model3d = small_cnn(3).to(device)
    maps3d = explain(model3d, volume, "gradcam", layer="2")
    for name, function in [
        ("pixel_flipping 3D, 64 voxels / step", lambda: ev.pixel_flipping(model3d, volume, maps3d,
                                                                         features_in_step=64)),
        ("region_perturbation 3D, 4^3 patches, 100 regions", lambda: ev.region_perturbation(model3d, volume, maps3d,
                                                                                              patch_size=4)),
        ("irof 3D, 4^3 patches", lambda: ev.irof(model3d, volume, maps3d, patch_size=4)),
    ]:
        seconds, _ = best_of(function, args.repeats, device)
        rows.append({"row": f"{name}, N=2 x {args.size3d}^3", "seconds": seconds, "quantus_seconds": None,
                     "ratio": None, "max_abs_difference": None})

    width = max(len(r["row"]) for r in rows)
    print(f"{'row'.ljust(width)}     ours  quantus  ratio  max |diff|")
    for r in rows:
        theirs = f"{r['quantus_seconds']:7.3f}" if r["quantus_seconds"] is not None else "      -"
        ratio = f"{r['ratio']:5.1f}x" if r["ratio"] is not None else "     -"
        diff = f"{r['max_abs_difference']:.1e}" if r["max_abs_difference"] is not None else "-"
        print(f"{r['row'].ljust(width)}  {r['seconds']:7.3f}  {theirs} {ratio}  {diff}")
    print(f"wrote {write_results(args.output, device, args.threads, q, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
