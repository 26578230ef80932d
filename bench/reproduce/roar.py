"""Retraining on heatmap-filtered images (Guan & Loew, arXiv 2201.02771; ROAR-style), reduced for a CPU.

The classifier is retrained on nodule slices filtered by the bundled
``lung-nodule-2d`` model's Grad-CAM maps M (normalised to [0, 1]):

    original       x
    x * M          the soft map keeps what Grad-CAM highlights
    x * 1[M > t]   the binary map (t = THRESHOLD) keeps only the highlighted region
    x * (1 - M)    the highlighted region is removed, the "dark" regions stay
    x * M_perm     control: maps of *other* slices (same map statistics, wrong place)

and its accuracy is measured on held-out patients filtered the same way.

Reduced form: retraining from scratch does not fit the CPU budget (a small network
trained for a few minutes on a few hundred slices does not learn the nodule task even
on unfiltered slices), so each variant *fine-tunes* a copy of the bundled model for a
few epochs (its last two blocks and head).  The bundled model's accuracy on each filtered test set without any
retraining is reported alongside.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from .common import auroc, compute_maps

THRESHOLD = 0.5
LEARNING_RATE = 5e-4
#: Fine-tuned parameters: the last two blocks and the head (the high-resolution early blocks stay as
#: trained; their batch-norm statistics still adapt to the filtered images).
TRAINABLE = ("features.block3", "features.block4", "classifier")
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


def _scores(model, x: np.ndarray, y: np.ndarray) -> dict:
    model.eval()
    with torch.inference_mode():
        prob = torch.cat([torch.softmax(model(torch.from_numpy(x[i:i + 64].astype(np.float32))), 1)[:, 1]
                          for i in range(0, len(x), 64)]).numpy()
    return {"accuracy": float(np.mean((prob > 0.5) == (y == 1))), "auc": auroc(prob, y == 1)}


def fine_tune(module, x_train, y_train, epochs: int, seed: int):
    """A copy of ``module`` trained on (x_train, y_train) with the training recipe of the bundled models."""
    from XAIExplainLib.models.training.train import Budget, fit

    model = copy.deepcopy(module)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(TRAINABLE))
    budget = Budget(train=len(x_train), validation=0, epochs=epochs, batch=32, lr=LEARNING_RATE)
    fit(model, x_train.astype(np.float32), y_train.astype(np.int64), F.cross_entropy, budget, seed,
        log=lambda line: None)
    return model


def from_scratch(x_train, y_train, x_test, y_test, epochs: int, seed: int) -> dict:
    """Why the reduced form fine-tunes: a small network trained from scratch on the unfiltered slices."""
    from XAIExplainLib.models.architectures import SliceClassifier
    from XAIExplainLib.models.training.train import Budget, fit

    pool = lambda a: F.avg_pool2d(torch.from_numpy(a.astype(np.float32)), 2).numpy()  # noqa: E731
    torch.manual_seed(seed)
    model = SliceClassifier(in_channels=1, num_classes=2, widths=(8, 16, 24, 32), pools=(False, True, True, False))
    fit(model, pool(x_train), y_train.astype(np.int64), F.cross_entropy,
        Budget(train=len(x_train), validation=0, epochs=epochs, batch=32, lr=3e-3), seed, log=lambda line: None)
    return {**_scores(model, pool(x_test), y_test), "epochs": epochs, "input": "80 x 80 (2x average pooled)",
            "widths": [8, 16, 24, 32]}


def run(module, layer: str, x: np.ndarray, y: np.ndarray, patient: np.ndarray, epochs: int,
        seeds: list[int], permutation_seed: int, scratch_epochs: int = 0) -> dict:
    """The experiment; returns per-variant test scores (one per training seed) and example images."""
    with torch.inference_mode():
        predicted = torch.cat([module(torch.from_numpy(x[i:i + 64])).argmax(1)
                               for i in range(0, len(x), 64)]).numpy()
    maps = compute_maps(module, x, "gradcam", layer=layer, target=predicted)
    permutation = np.random.default_rng(permutation_seed).permutation(len(x))
    variants = filtered(x, maps, permutation)
    train, test = split(patient, len(x))
    out = {"train_slices": int(len(train)), "test_slices": int(len(test)),
           "test_positive_share": float(np.mean(y[test] == 1)),
           "blank_binary_masks": float(np.mean((maps > THRESHOLD).reshape(len(maps), -1).sum(1) == 0)),
           "kept_share_binary": float(np.mean(maps > THRESHOLD)), "kept_share_soft": float(np.mean(maps)),
           "results": {}}
    for name in VARIANTS:
        images = variants[name]
        before = _scores(module, images[test], y[test])
        runs = [_scores(fine_tune(module, images[train], y[train], epochs, seed), images[test], y[test])
                for seed in seeds]
        out["results"][name] = {"accuracy": [r["accuracy"] for r in runs], "auc": [r["auc"] for r in runs],
                                "accuracy_without_retraining": before["accuracy"],
                                "auc_without_retraining": before["auc"]}
    if scratch_epochs:
        out["from_scratch_original"] = from_scratch(x[train], y[train], x[test], y[test], scratch_epochs, seeds[0])
    example = int(np.flatnonzero(y == 1)[0]) if np.any(y == 1) else 0
    out["examples"] = {name: variants[name][example, 0] for name in VARIANTS}
    out["example_map"] = maps[example]
    return out
