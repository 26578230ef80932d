"""Benchmark of the Quantus robustness, localisation and complexity metrics: this library against Quantus.

Both score the same 2D batch (N maps of a small CNN's saliency, a square mask per sample, a
2 x 2 mosaic flag set for focus): sparseness, complexity, effective complexity, AUC, top-k
intersection, attribution localisation, focus, and, re-explaining the model, average sensitivity
and the local Lipschitz estimate (the same noise: this library is handed the draws Quantus makes
from NumPy's generator) and continuity (the same translations).  Each row gives both times, their
ratio (Quantus / this library) and the largest difference of the scores.  The 3D rows time this
library alone on a volume batch (Quantus's continuity and focus are 2D-only; its others run on
flattened arrays but were not built for volumes).

Each time is the best of ``--repeats`` runs (the machine is shared; the best run is the one least
disturbed).  Prints a table and writes JSON (default bench/results/quantus_metrics.json).

    python -m bench.peers.quantus_metrics              # CPU, one thread, about a minute
    python -m bench.peers.quantus_metrics --device cuda
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


def _masks(n: int, size: int, dims: int) -> torch.Tensor:
    masks = torch.zeros((n,) + (size,) * dims, dtype=torch.bool)
    for i in range(n):
        start = (i * 3) % (size // 2)
        masks[(i,) + (slice(start, start + size // 3),) * dims] = True
    return masks


def _quantus_explain(method: str, device: str):
    def explain_func(model, inputs, targets, **kwargs):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        target = torch.as_tensor(np.asarray(targets), device=device).long()
        return explain(model, x, method, target=target, normalize=False)[:, None].cpu().numpy()
    return explain_func


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=16, help="samples per batch")
    parser.add_argument("--size2d", type=int, default=64)
    parser.add_argument("--size3d", type=int, default=32)
    parser.add_argument("--samples", type=int, default=10, help="perturbations of the robustness metrics")
    parser.add_argument("--steps", type=int, default=8, help="continuity's translations")
    parser.add_argument("--output", default=str(HERE / "results" / "quantus_metrics.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, n, k = args.device, args.n, args.samples
    q = import_quantus()
    rows = []

    model = small_cnn(2).to(device)
    x = torch.randn(n, 1, args.size2d, args.size2d, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    maps = explain(model, x, "saliency", target=y, normalize=False)
    masks = _masks(n, args.size2d, 2).to(device)
    flags = torch.zeros(n, 4, dtype=torch.long)
    flags[torch.arange(n), torch.arange(n) % 4] = 1
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()
    a_np, s_np = maps[:, None].cpu().numpy(), masks[:, None].cpu().numpy().astype(float)
    quiet = dict(disable_warnings=True, display_progressbar=False)
    explain_kwargs = dict(explain_func=_quantus_explain("saliency", device), explain_func_kwargs={},
                          channel_first=True, device=device)

    def map_only(metric, **arrays):
        return lambda: metric(model=None, x_batch=x_np, y_batch=y_np, a_batch=a_np.copy(), channel_first=True,
                              **arrays)

    cases = [
        ("sparseness", lambda: ev.sparseness(maps), lambda: map_only(q.Sparseness(**quiet))()),
        ("complexity", lambda: ev.complexity(maps), lambda: map_only(q.Complexity(**quiet))()),
        ("effective_complexity", lambda: ev.effective_complexity(maps / maps.abs().amax(dim=(1, 2), keepdim=True)),
         lambda: q.EffectiveComplexity(**quiet)(model=None, x_batch=x_np, y_batch=y_np, channel_first=True,
                                                a_batch=(a_np / np.abs(a_np).max(axis=(1, 2, 3), keepdims=True)))),
        ("auc", lambda: ev.auc(maps, masks), lambda: map_only(q.AUC(**quiet), s_batch=s_np)()),
        ("top_k_intersection (k=100)", lambda: ev.top_k_intersection(maps, masks, k=100),
         lambda: map_only(q.TopKIntersection(k=100, **quiet), s_batch=s_np)()),
        ("attribution_localisation", lambda: ev.attribution_localisation(maps, masks),
         lambda: map_only(q.AttributionLocalisation(**quiet), s_batch=s_np)()),
        ("focus", lambda: ev.focus(maps, flags),
         lambda: q.Focus(**quiet)(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np.copy(),
                                  custom_batch=flags.tolist(), channel_first=True, device=device)),
    ]
    shape = (n, k, *x.shape[1:])
    for name, draw, metric_name, ours_function, options in [
        ("avg_sensitivity", lambda rng, size: rng.uniform(-0.02, 0.02, size), "AvgSensitivity", ev.avg_sensitivity,
         {"lower_bound": 0.02}),
        ("local_lipschitz", lambda rng, size: rng.normal(0.0, 0.1, size), "LocalLipschitzEstimate",
         ev.local_lipschitz, {"perturb_std": 0.1}),
    ]:
        rng = np.random.RandomState(1)
        delta = torch.from_numpy(np.stack([draw(rng, (n, int(np.prod(shape[2:])))) for _ in range(k)], axis=1)
                                 .reshape(shape)).to(device)

        def ours(function=ours_function, delta=delta):
            return function(model, x, "saliency", target=y, perturbations=delta, batch_size=n * k,
                            normalize=False)

        def theirs(metric_name=metric_name, options=options):
            np.random.seed(1)
            metric = getattr(q, metric_name)(nr_samples=k, abs=False, normalise=False, **options, **quiet)
            return metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np.copy(), **explain_kwargs)

        cases.append((f"{name} ({k} perturbations, saliency)", lambda ours=ours, name=name: getattr(ours(), name),
                      theirs if q is not None else None))
    cases.append((f"continuity ({args.steps} translations, saliency)",
                  lambda: ev.continuity(model, x, "saliency", target=y, steps=args.steps, batch_size=n * args.steps,
                                        normalize=False).continuity,
                  lambda: q.Continuity(nr_steps=args.steps, normalise=False, **quiet)(
                      model=model, x_batch=x_np, y_batch=y_np, a_batch=None, **explain_kwargs)))

    for name, ours, theirs in cases:
        seconds, result = best_of(ours, args.repeats, device)
        row = {"row": f"{name}, 2D N={n} x {args.size2d}^2", "seconds": seconds}
        if q is not None and theirs is not None:
            quantus_seconds, reference = best_of(theirs, args.repeats, "cpu")
            row.update(quantus_seconds=quantus_seconds, ratio=quantus_seconds / seconds,
                       max_abs_difference=float(np.nanmax(np.abs(result.cpu().double().numpy()
                                                                  - np.asarray(reference, dtype=float)))))
        rows.append(row)

    model3 = small_cnn(3).to(device)
    volume = torch.randn(2, 1, *(args.size3d,) * 3, generator=torch.Generator().manual_seed(2)).to(device)
    maps3 = explain(model3, volume, "saliency")
    masks3 = _masks(2, args.size3d, 3).to(device)
    octants = torch.zeros(2, 8, dtype=torch.long)
    octants[:, 0] = 1
    for name, function in [
        ("sparseness", lambda: ev.sparseness(maps3)), ("complexity", lambda: ev.complexity(maps3)),
        ("effective_complexity", lambda: ev.effective_complexity(maps3)), ("auc", lambda: ev.auc(maps3, masks3)),
        ("top_k_intersection", lambda: ev.top_k_intersection(maps3, masks3)),
        ("attribution_localisation", lambda: ev.attribution_localisation(maps3, masks3)),
        ("focus (2 x 2 x 2 mosaic)", lambda: ev.focus(maps3, octants)),
        (f"avg_sensitivity ({k})", lambda: ev.avg_sensitivity(model3, volume, "saliency", samples=k)),
        (f"local_lipschitz ({k})", lambda: ev.local_lipschitz(model3, volume, "saliency", samples=k)),
        (f"continuity ({args.steps})", lambda: ev.continuity(model3, volume, "saliency", steps=args.steps)),
    ]:
        seconds, _ = best_of(function, args.repeats, device)
        rows.append({"row": f"{name}, 3D N=2 x {args.size3d}^3 (this library only)", "seconds": seconds})

    width = max(len(r["row"]) for r in rows)
    print(f"{'row'.ljust(width)}  {'ours s':>8}  {'Quantus s':>9}  {'ratio':>6}  max |diff|")
    for r in rows:
        if "ratio" in r:
            extra = f"{r['quantus_seconds']:9.4f}  {r['ratio']:6.1f}  {r['max_abs_difference']:.1e}"
        else:
            extra = f"{'-':>9}  {'-':>6}  -"
        print(f"{r['row'].ljust(width)}  {r['seconds']:8.4f}  {extra}")
    print(f"wrote {write_results(args.output, device, args.threads, q, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
