"""Benchmark of the attention methods (attention rollout, gradient rollout, LeGrad) on MONAI transformers.

Rows, per model (a 2D ViT classifier with a class token, a 3D UNETR segmenter without one):
- plain inference (``torch.inference_mode``): the floor of a one-forward method;
- forward + backward of the target score to the input (parameters frozen): the floor of a
  gradient method that differentiates through every block;
- ``attention_rollout`` (one forward), ``gradient_rollout`` and ``legrad`` (one forward and a
  backward to the first block), and all three together (they share one pass);
- MONAI's own ``save_attn=True`` on a copy of the model plus the rollout product written
  out (the way a MONAI user gets attention today): the same map as ``attention_rollout``,
  checked.

Rows are interleaved round by round and each keeps its best round (a warm-up run first),
so rows compare under the same load on a shared CPU. Peak memory is the CUDA peak
allocation of the row, or on a CPU the process's peak RSS after the row's first run. Prints a table and writes JSON (default
bench/results/attention.json).

    python -m bench.peers.attention                  # CPU, one thread, a few minutes
    python -m bench.peers.attention --device cuda --large
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # bench/


def _models(large: bool):
    from monai.networks.nets import UNETR, ViT

    vit_size = 224 if large else 96
    vit = ViT(in_channels=1, img_size=(vit_size, vit_size), patch_size=(16, 16), hidden_size=384 if large else 192,
              mlp_dim=1536 if large else 768, num_layers=12, num_heads=6 if large else 3, spatial_dims=2,
              classification=True, num_classes=2)
    unetr_size = 96 if large else 64
    unetr = UNETR(in_channels=1, out_channels=3, img_size=(unetr_size,) * 3, feature_size=16 if large else 8,
                  hidden_size=384 if large else 192, mlp_dim=1536 if large else 768, num_heads=6 if large else 3,
                  spatial_dims=3)
    return [("ViT 2D (class token)", vit.eval(), (8 if large else 4, 1, vit_size, vit_size)),
            ("UNETR 3D (no class token)", unetr.eval(), (2 if large else 1, 1) + (unetr_size,) * 3)]


def _save_attn_rollout(model, x):
    """MONAI's save_attn on a copy, then the rollout product over blocks (class-token row or mean row)."""
    import torch
    from monai.networks.blocks.selfattention import SABlock

    from XAIExplainLib.engine.methods.attention_rollout import rollout

    twin = copy.deepcopy(model)
    blocks = [m for m in twin.modules() if isinstance(m, SABlock)]
    for block in blocks:
        block.save_attn = True
    with torch.inference_mode():
        twin(x)
    return rollout([block.att_mat for block in blocks])


def _rows(model, x):
    import torch

    from XAIExplainLib.engine import explain_many

    output = model(x)
    output = output[0] if isinstance(output, tuple) else output

    def inference():
        with torch.inference_mode():
            model(x)

    def forward_backward():
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            leaf = x.detach().requires_grad_(True)
            out = model(leaf)
            out = out[0] if isinstance(out, tuple) else out
            torch.autograd.grad(out[:, 1].sum(), leaf)
        finally:
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)

    target = None if output.dim() == 2 else __import__("XAIExplainLib").engine.SegmentationTarget(
        class_index=1, region="all")
    rows = {"plain inference": inference, "forward + backward to input": forward_backward,
            "monai save_attn + rollout": lambda: _save_attn_rollout(model, x)}
    for method in ("attention_rollout", "gradient_rollout", "legrad"):
        rows[method] = (lambda m: lambda: explain_many(model, x, [m], target=target, normalize=False))(method)
    rows["all three (one pass)"] = lambda: explain_many(model, x, ["attention_rollout", "gradient_rollout", "legrad"],
                                                        target=target, normalize=False)
    return rows


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(device_name: str, rounds: int, large: bool) -> list[dict]:
    import torch

    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(1)  # rows compare under the same load on a shared CPU
    results = []
    for title, model, shape in _models(large):
        model = model.to(device)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
        rows = _rows(model, x)
        best = {name: float("inf") for name in rows}
        peak = {}
        for name, run in rows.items():  # warm-up, and the peak of each row
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
            run()
            peak[name] = _peak_mb(device)
        for _ in range(rounds):
            for name, run in rows.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
        from XAIExplainLib.engine import explain_many

        ours = explain_many(model, x, ["attention_rollout"], normalize=False,
                            target=None if x.dim() == 4 else __import__("XAIExplainLib").engine.SegmentationTarget(
                                class_index=1, region="all"))["attention_rollout"]
        theirs = _save_attn_rollout(model, x)
        grid = tuple(s // 16 for s in x.shape[2:])
        theirs = theirs[:, 0, 1:] if theirs.shape[-1] == _prod(grid) + 1 else theirs.mean(dim=1)
        same = bool(torch.allclose(torch.nn.functional.interpolate(
            theirs.reshape((x.shape[0], 1) + grid), size=x.shape[2:],
            mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=False)[:, 0], ours, rtol=1e-4, atol=1e-6))
        floor = best["plain inference"]
        for name in rows:
            results.append({"model": title, "input": list(shape), "row": name, "seconds": best[name],
                            "x_inference": best[name] / floor, "peak_mb": peak[name],
                            "same_map_as_attention_rollout": same if name == "monai save_attn + rollout" else None})
    return results


def _prod(values):
    out = 1
    for v in values:
        out *= v
    return out


def table(rows: list[dict]) -> str:
    lines = [f"{'model':28} {'row':30} {'seconds':>9} {'x infer':>8} {'peak MB':>9}"]
    for r in rows:
        note = "" if r["same_map_as_attention_rollout"] is None else f"  same map: {r['same_map_as_attention_rollout']}"
        lines.append(f"{r['model']:28} {r['row']:30} {r['seconds']:9.4f} {r['x_inference']:8.2f} "
                     f"{r['peak_mb']:9.1f}{note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="ViT-S/16 at 224^2 and UNETR at 96^3 (for a GPU)")
    parser.add_argument("--json", default=str(HERE / "results" / "attention.json"))
    args = parser.parse_args(argv)
    rows = measure(args.device, args.rounds, args.large)
    print(table(rows))
    import torch

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "device": args.device, "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
