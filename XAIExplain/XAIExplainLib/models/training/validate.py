"""Validate the bundled models on fresh phantoms and, when available, on real CT.

    python -m XAIExplainLib.models.training.validate                 # phantoms only
    python -m XAIExplainLib.models.training.validate --data DIR      # + lung1 real-CT checks

Phantom seeds here are never used in training (training uses 1000-1200,
validation during training 2000-2200).  Classification checks run on
model-grid samples and, through :func:`explain_image`, on phantoms rendered on
other grids (so resampling and windowing are part of the test); the
segmentation check always goes through the full pipeline and measures Dice on
the phantom's own grid.

The real-CT check uses ``lung1_image.nrrd`` / ``lung1_label.nrrd`` (a chest CT
with one expert-outlined nodule on slices z = 32..34): the nodule model's
per-slice score with and without the nodule, Grad-CAM's pointing game on the
nodule slices, and the 3D model's Dice on the real nodule.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import datasets as ds
from ..loaded import LoadedModel
from ..loading import load_model
from ..pipeline import explain_image, predict_image

FRESH_SEED = 31337


def _predict_batch(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        logits = model.module(torch.from_numpy(x).to(model.device)).float().cpu().numpy()
    return model.activate(logits, axis=1)


def phase_accuracy(model: LoadedModel, count: int = 48, seed: int = FRESH_SEED) -> dict:
    """Accuracy on ``count`` fresh model-grid slices (balanced over the four phases)."""
    x, y = ds.build(ds.phase_sample, count, seed)
    pred = _predict_batch(model, x).argmax(1)
    return {"accuracy": float(np.mean(pred == y)), "samples": int(count),
            "confusion": _confusion(y, pred, 4)}


def phase_accuracy_pipeline(model: LoadedModel, patients: int = 8, seed: int = FRESH_SEED) -> dict:
    """Accuracy per slice through :func:`explain_image` preprocessing on 2 mm, 3-slice phantoms."""
    from ...imaging.phantoms import PHASES, abdominal_phantom

    correct, total = 0, 0
    for i in range(patients):
        phase = PHASES[i % 4]
        rng = np.random.default_rng([seed, i])
        ph = abdominal_phantom(seed=seed + i, phase=phase, shape=(3, 192, 192),
                               spacing=(5.0, 2.0, 2.0), center=(0, 0, rng.uniform(-20, 120)),
                               noise=rng.uniform(8, 20))
        prob = predict_image(model, ph.image())
        correct += int(np.sum(prob.argmax(1) == PHASES.index(phase)))
        total += len(prob)
    return {"accuracy": correct / total, "slices": total}


def nodule_auc(model: LoadedModel, patients: int = 4, seed: int = FRESH_SEED, workers: int = 1) -> dict:
    """AUC of P(nodule) on slices of ``patients`` fresh patients (half with a nodule);
    ``workers`` processes generate the phantoms."""
    x, y, _ = ds.nodule_slices(patients, seed, workers)
    scores = _predict_batch(model, x)[:, 1]
    return {"auc": ds.roc_auc(y, scores), "accuracy": float(np.mean((scores > 0.5) == y)),
            "slices": int(len(y)), "positives": int(y.sum())}


def nodule_pointing_game(model: LoadedModel, patients: int = 4, seed: int = FRESH_SEED,
                         layers: tuple[str, ...] | None = None, tolerance_mm: float = 0.0) -> dict:
    """Share of nodule slices whose Grad-CAM peak (class "nodule") lies on the nodule
    (the evaluation module's pointing game, within ``tolerance_mm``).

    ``layers`` defaults to the card's default layer and the last conv block.
    """
    import torch

    from ...engine import explain
    from ...evaluation import pointing_game

    layers = layers or tuple(dict.fromkeys([model.card.target_layers.default, "features.block4"]))
    x, y, masks = ds.nodule_slices(patients, seed)
    positive = np.flatnonzero(y == 1)
    out = {"slices": int(len(positive))}
    for layer in layers:
        maps = explain(model.module, torch.from_numpy(x[positive]), "gradcam", target=1, layer=layer)
        hits = pointing_game(maps, torch.from_numpy(masks[positive]),
                                 spacing=[ds.NODULE_GRID["spacing"]] * 2, tolerance_mm=tolerance_mm)
        out[layer] = hits.double().mean().item()
    return out


def segmentation_dice(model: LoadedModel, crops: int = 6, seed: int = FRESH_SEED) -> dict:
    """Dice of the predicted label map against the phantom nodule mask, per crop.

    Each crop is a chest phantom grid (0.8 x 0.8 mm in plane, 2 mm slices)
    centred near one nodule; the pipeline resamples it to the model's 1.25 mm
    grid, runs sliding windows and maps the labels back.
    """
    from ...imaging.phantoms import chest_anatomy, chest_phantom

    dices, volumes = [], []
    pooled_inter, pooled_total = 0, 0
    for i in range(crops):
        rng = np.random.default_rng([seed, i, 7])
        anatomy = chest_anatomy(seed + i)
        nodule = anatomy.add_random_nodule(rng, ds.SEG_DIAMETER)
        center = np.asarray(nodule.center) + rng.uniform(-6, 6, 3)
        ph = chest_phantom(seed=seed + i, nodules=[nodule], shape=(24, 64, 64),
                           spacing=(2.0, 0.8, 0.8), center=tuple(center), noise=rng.uniform(8, 20))
        truth = ph.mask("nodule")
        labels = sitk.GetArrayFromImage(predict_image(model, ph.image())) == 1
        dices.append(ds.dice(labels, truth))
        pooled_inter += int(np.logical_and(labels, truth).sum())
        pooled_total += int(labels.sum() + truth.sum())
        volumes.append(nodule.diameter)
    return {"dice_mean": float(np.mean(dices)), "dice_pooled": 2 * pooled_inter / max(pooled_total, 1),
            "detected": int(sum(d > 0.1 for d in dices)), "crops": crops,
            "dice_per_crop": [round(d, 3) for d in dices],
            "nodule_diameters_mm": [round(v, 1) for v in volumes]}


def real_ct_report(data_dir: Path, full_volume_3d: bool = False) -> dict:
    """The lung1 checks; see the module docstring."""
    image = sitk.ReadImage(str(data_dir / "lung1_image.nrrd"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "lung1_label.nrrd"))) > 0
    nodule_slices = np.flatnonzero(label.any(axis=(1, 2)))
    out: dict = {"nodule_slices": nodule_slices.tolist()}

    model = load_model("lung-nodule-2d")
    has = label.any(axis=(1, 2))
    spacing = np.asarray(image.GetSpacing())[::-1]
    nodule_voxels = np.argwhere(label)
    report: dict = {}
    layers = dict.fromkeys([model.card.target_layers.default, "features.block4"])
    for layer in layers:
        res = explain_image(model, image, methods=["gradcam"], target="nodule", layer=layer)
        scores = res.prediction[:, 1]
        heat = sitk.GetArrayFromImage(res.maps["gradcam"])
        hits, distances = [], []
        for z in nodule_slices:
            peak = np.unravel_index(np.argmax(heat[z]), heat[z].shape)
            hits.append(bool(label[z][peak]))
            distances.append(_distance_mm((z,) + tuple(peak), nodule_voxels, spacing))
        top = np.unravel_index(np.argmax(np.where(has[:, None, None], heat, -1)), heat.shape)
        report[f"gradcam_{layer}"] = {
            "pointing_game_per_slice": hits,
            "peak_distance_to_nodule_mm_per_slice": [round(d, 1) for d in distances],
            "peak_over_nodule_slices_distance_mm": round(_distance_mm(top, nodule_voxels, spacing), 1),
            "energy_share_in_nodule": float(heat[label].sum() / max(heat[has].sum(), 1e-9)),
            "nodule_share_of_slice_area": float(label.sum() / has.sum() / label[0].size),
        }
    report.update({
        "score_nodule_slices": {int(z): round(float(scores[z]), 4) for z in nodule_slices},
        "score_other_slices_mean": float(scores[~has].mean()),
        "score_other_slices_max": float(scores[~has].max()),
        "score_other_slices_median": float(np.median(scores[~has])),
        "other_slices_above_0.5": int((scores[~has] > 0.5).sum()),
        "other_slices": int((~has).sum()),
        "auc_slices": ds.roc_auc(has, scores),
        "rank_of_best_nodule_slice": int(1 + np.sum(scores > scores[nodule_slices].max())),
        "top_scored_slices": [int(z) for z in np.argsort(-scores)[:6]],
    })
    out["lung-nodule-2d"] = report

    seg = load_model("lung-nodule-seg-3d")
    z0, z1 = max(int(nodule_slices.min()) - 4, 0), min(int(nodule_slices.max()) + 5, label.shape[0])
    ys, xs = np.nonzero(label.any(axis=0))
    cy, cx = int(ys.mean()), int(xs.mean())
    half = 64
    crop = image[max(cx - half, 0):cx + half, max(cy - half, 0):cy + half, z0:z1]
    crop_label = label[z0:z1, max(cy - half, 0):cy + half, max(cx - half, 0):cx + half]
    started = time.perf_counter()
    crop_res = explain_image(seg, crop, methods=["gradcam"])
    predicted = sitk.GetArrayFromImage(crop_res.prediction) == 1
    seg_heat = sitk.GetArrayFromImage(crop_res.maps["gradcam"])
    peak = np.unravel_index(np.argmax(seg_heat), seg_heat.shape)
    out["lung-nodule-seg-3d"] = {
        "crop_mm": [round(float(n * s), 1) for n, s in zip(crop.GetSize(), crop.GetSpacing())],
        "dice_crop": ds.dice(predicted, crop_label),
        "predicted_voxels_crop": int(predicted.sum()), "true_voxels": int(crop_label.sum()),
        "seg_gradcam_peak_in_nodule": bool(crop_label[peak]),
        "seconds_crop": round(time.perf_counter() - started, 1),
    }
    if full_volume_3d:
        started = time.perf_counter()
        full = sitk.GetArrayFromImage(predict_image(seg, image)) == 1
        out["lung-nodule-seg-3d"].update({
            "dice_full_volume": ds.dice(full, label),
            "predicted_voxels_full_volume": int(full.sum()),
            "false_positive_components_full_volume": _components(full & ~_dilate(label)),
            "seconds_full_volume": round(time.perf_counter() - started, 1),
        })
    return out


def _distance_mm(point, voxels: np.ndarray, spacing: np.ndarray) -> float:
    return float(np.min(np.linalg.norm((voxels - np.asarray(point)) * spacing, axis=1)))


def _dilate(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=2)


def _components(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (y, pred), 1)
    return matrix.tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m XAIExplainLib.models.training.validate",
                                     description="Validate the bundled models.")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder with lung1_image.nrrd and lung1_label.nrrd (real-CT checks)")
    parser.add_argument("--samples", type=float, default=1.0, help="multiply the phantom counts")
    parser.add_argument("--full-volume", action="store_true",
                        help="also segment the whole real CT with sliding windows (slow on CPU)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    n = args.samples
    report = {
        "ct-phase-2d": {"model_grid": phase_accuracy(load_model("ct-phase-2d"), int(96 * n)),
                        "pipeline": phase_accuracy_pipeline(load_model("ct-phase-2d"), int(12 * n))},
        "lung-nodule-2d": {"auc": nodule_auc(load_model("lung-nodule-2d"), max(2, int(8 * n))),
                           "pointing_game": nodule_pointing_game(load_model("lung-nodule-2d"),
                                                                 max(2, int(4 * n)))},
        "lung-nodule-seg-3d": segmentation_dice(load_model("lung-nodule-seg-3d"), max(2, int(12 * n))),
    }
    if args.data is not None:
        report["real_ct"] = real_ct_report(args.data, args.full_volume)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
