"""What the benches against Quantus share: Quantus imported as the tests import it, best-of timing and
the small CNN both libraries score.

Quantus probes zennit (and through it torchvision, which does not load against the CPU torch these
benches run on) with ``importlib.util.find_spec`` while it is imported; hiding those two packages
during the import loads Quantus without them (``Testing/evaluation/metric_models.py`` does the same).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def import_quantus(module: str = "quantus"):
    """``module`` of Quantus, or None where Quantus is not installed."""
    real = importlib.util.find_spec
    if real("quantus") is None:
        return None
    importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] in ("zennit", "torchvision") \
        else real(name, *a, **k)
    try:
        loaded = importlib.import_module(module)
    finally:
        importlib.util.find_spec = real
    if not hasattr(np, "trapz"):  # Quantus 0.6 integrates with np.trapz, renamed np.trapezoid by NumPy 2
        np.trapz = np.trapezoid
    return loaded


def best_of(function, repeats: int, device: str) -> tuple[float, object]:
    """The fastest of ``repeats`` runs in seconds (the least disturbed on a shared machine) and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def small_cnn(dims: int, classes: int = 3) -> nn.Module:
    """Two convolutions, global average pooling and a linear layer, seeded: the model every row scores."""
    torch.manual_seed(0)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(conv(1, 8, 3, padding=1), nn.ReLU(), conv(8, 16, 3, padding=1), nn.ReLU(), pool,
                         nn.Flatten(), nn.Linear(16, classes)).eval()


def write_results(path: str | Path, device: str, threads: int, quantus, rows: list[dict]) -> Path:
    """The bench's rows as JSON with the machine and library versions they were measured with."""
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"device": device, "threads": threads, "torch": torch.__version__,
                                  "quantus": getattr(quantus, "__version__", None), "platform": platform.platform(),
                                  "rows": rows}, indent=2) + "\n")
    return output
