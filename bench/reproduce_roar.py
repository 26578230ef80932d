"""Retraining on heatmap-filtered images (Guan & Loew, arXiv 2201.02771; ROAR-style), reduced for a CPU.

A small classifier is trained from scratch on the nodule slices filtered by the
bundled ``lung-nodule-2d`` model's Grad-CAM maps M (normalised to [0, 1]):

    original       x
    x * M          the soft map keeps what Grad-CAM highlights
    x * 1[M > t]   the binary map (t = THRESHOLD) keeps only the highlighted region
    x * (1 - M)    the highlighted region is removed, the "dark" regions stay
    x * M_perm     control: maps of *other* slices (same map statistics, wrong place)

and its accuracy is measured on held-out patients filtered the same way.  A
variant that keeps the class information trains to a high test accuracy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reproduce_common import auroc, compute_maps

THRESHOLD = 0.5
DOWNSAMPLE = 2  # 160 x 160 -> 80 x 80
VARIANTS = ("original", "x * M", "x * 1[M > t]", "x * (1 - M)", "x * M_perm (control)")


def filtered(x: np.ndarray, maps: np.ndarray, permutation: np.ndarray) -> dict:
    m = maps[:, None]
    return {
        "original": x,
        "x * M": x * m,
        "x * 1[M > t]": x * (m > THRESHOLD),
        "x * (1 - M)": x * (1 - m),
        "x * M_perm (control)": x * m[permutation],
    }


def _pool(a: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return F.avg_pool2d(t, DOWNSAMPLE).numpy() if DOWNSAMPLE > 1 else t.numpy()


def split(patient: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Train / test indices: by patient (last quarter of patients for testing) when there are >= 4."""
    patients = np.unique(patient)
    if len(patients) >= 4:
        test_patients = patients[-max(1, len(patients) // 4):]
        test = np.isin(patient, test_patients)
    else:  # too few patients (quick mode): split slices, only to exercise the pipeline
        test = np.zeros(count, bool)
        test[-max(2, count // 4):] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def train_and_test(x_train, y_train, x_test, y_test, epochs: int, seed: int) -> dict:
    from XAIExplainLib.models.architectures import SliceClassifier
    from XAIExplainLib.models.train import Budget, fit

    torch.manual_seed(seed)
    model = SliceClassifier(in_channels=1, num_classes=2, widths=(8, 16, 24, 32),
                            pools=(False, True, True, False))
    budget = Budget(train=len(x_train), validation=0, epochs=epochs, batch=32, lr=3e-3)
    fit(model, x_train.astype(np.float32), y_train.astype(np.int64), F.cross_entropy, budget, seed,
        log=lambda line: None)
    model.eval()
    with torch.inference_mode():
        prob = torch.softmax(model(torch.from_numpy(x_test.astype(np.float32))), 1)[:, 1].numpy()
    return {"accuracy": float(np.mean((prob > 0.5) == (y_test == 1))), "auc": auroc(prob, y_test == 1)}


def run(module, layer: str, x: np.ndarray, y: np.ndarray, patient: np.ndarray, epochs: int,
        seeds: list[int], permutation_seed: int) -> dict:
    """The experiment; returns per-variant accuracies (one per training seed) and example images."""
    with torch.inference_mode():
        predicted = module(torch.from_numpy(x)).argmax(1).numpy()
    maps = compute_maps(module, x, "gradcam", layer=layer, target=predicted)
    rng = np.random.default_rng(permutation_seed)
    permutation = rng.permutation(len(x))
    variants = filtered(x, maps, permutation)
    train, test = split(patient, len(x))
    out = {"train_slices": int(len(train)), "test_slices": int(len(test)),
           "test_positive_share": float(np.mean(y[test] == 1)),
           "blank_binary_masks": float(np.mean((maps > THRESHOLD).reshape(len(maps), -1).sum(1) == 0)),
           "kept_share_binary": float(np.mean(maps > THRESHOLD)), "kept_share_soft": float(np.mean(maps)),
           "results": {}}
    for name in VARIANTS:
        images = _pool(variants[name])
        runs = [train_and_test(images[train], y[train], images[test], y[test], epochs, seed) for seed in seeds]
        out["results"][name] = {"accuracy": [r["accuracy"] for r in runs], "auc": [r["auc"] for r in runs]}
    example = int(np.flatnonzero(y == 1)[0]) if np.any(y == 1) else 0
    out["examples"] = {name: variants[name][example, 0] for name in VARIANTS}
    out["example_map"] = maps[example]
    return out
