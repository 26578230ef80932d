"""What the trust checks cost on the normal path: loading a card model and an nnU-Net folder,
explaining with the card model, and asking whether trust is needed.

    python bench/trust_overhead.py                  # table + bench/results/trust_overhead.json
    python bench/trust_overhead.py --repeats 7 --json other.json

Run it on two checkouts (``PYTHONPATH`` pointing at each one's ``XAIExplain``) to compare:
the numbers are medians of ``--repeats`` runs after one warm-up, on tiny models, so they show
the fixed cost of the checks (name resolution, folder checks, the nnU-Net helper lookups)
rather than the network's own time; the "added" rows time the new checks alone, which is
steadier than the difference of two loads on a busy machine. Rows for the trust question
and the added checks are absent on checkouts without them.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _median(work, repeats: int) -> float:
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(repeats: int) -> dict:
    import torch

    from Testing.reliability.hostile import model_folder, volume
    from XAIExplainLib.models import explain_image, load_model

    torch.set_num_threads(1)
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        card = model_folder(scratch / "card", spatial_dims=3)
        rows["load card model"] = _median(lambda: load_model(card), repeats)
        model = load_model(card)
        image = volume((16, 24, 24))
        rows["explain card model (Grad-CAM, 16x24x24)"] = _median(
            lambda: explain_image(model, image, methods=["gradcam"], device="cpu"), repeats)
        try:
            from Testing.support.nnunet_folders import write_nnunet_folder

            nnunet = write_nnunet_folder(scratch / "nnUNetTrainer__nnUNetPlans__3d_fullres")
            rows["load nnU-Net folder (1 fold)"] = _median(lambda: load_model(nnunet), repeats)
        except ImportError:
            nnunet = None
        try:
            from XAIExplainLib.models.trust_check import trust_needed
        except ImportError:
            trust_needed = None
        if trust_needed is not None:
            from XAIExplainLib.models.card import load_card
            from XAIExplainLib.models.trust import check_card

            parsed = load_card(card / "card.json")
            rows["added: card checks (check_card, on every load)"] = _median(lambda: check_card(parsed), repeats)
            if nnunet is not None:
                from XAIExplainLib.models.nnunet.loader import inspect_nnunet
                from XAIExplainLib.models.nnunet.names import check_helpers, resolve_architecture

                plan = inspect_nnunet(nnunet)
                plans_file = nnunet / "plans.json"
                rows["added: nnU-Net name checks (on every load)"] = _median(lambda: (
                    resolve_architecture(plan.configuration_manager, plans_file, False),
                    check_helpers(plan.plans_manager, plan.configuration_manager, plans_file)), repeats)
            rows["trust question, card"] = _median(lambda: trust_needed(str(card)), repeats)
            if nnunet is not None:
                rows["trust question, nnU-Net folder"] = _median(lambda: trust_needed(str(nnunet)), repeats)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "trust_overhead.json")
    parser.add_argument("--label", default="this checkout", help="what the numbers are of (e.g. a commit)")
    args = parser.parse_args(argv)
    rows = measure(args.repeats)
    width = max(len(name) for name in rows)
    print(f"{'step':<{width}}  median s ({args.repeats} runs, 1 thread)")
    for name, seconds in rows.items():
        print(f"{name:<{width}}  {seconds:.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"label": args.label, "machine": platform.platform(), "repeats": args.repeats,
                                     "median_s": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
