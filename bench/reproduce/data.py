"""Evaluation data of the reproduction report: fresh phantoms with ground truth, and the real CT.

Phantoms come from the same generators the bundled models were trained on
(``XAIExplainLib.models.training.datasets``), drawn with seeds never used in training or
validation, so they are unseen samples of the training distribution.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Context, Skip


def phase_slices(count: int, seed: int) -> dict:
    """Abdominal slices on the ct-phase-2d grid with every structure's mask.

    Same distribution and same random draws as ``datasets.phase_sample`` (which
    returns no masks): slice ``i`` here is ``phase_sample(seed, i)`` exactly.
    Returns x (N, 1, H, W) float32, y (N,), used (N, H, W) bool = union of the
    phase-dependent structures (``PHASE_STRUCTURES``), masks name -> (N, H, W).
    """
    from XAIExplainLib.imaging import intensity
    from XAIExplainLib.imaging.phantoms import PHASE_STRUCTURES, PHASES, abdominal_phantom
    from XAIExplainLib.models.training.datasets import PHASE_GRID

    size, spacing = PHASE_GRID["size"], PHASE_GRID["spacing"]
    xs, ys, used, masks = [], [], [], []
    for index in range(count):
        rng = np.random.default_rng([int(seed), int(index), 1])
        phase_index = index % len(PHASES)
        thickness = rng.uniform(2.0, 5.0)
        center = (rng.uniform(-15, 15), rng.uniform(-15, 15), rng.uniform(-40, 135))
        ph = abdominal_phantom(seed=int(rng.integers(2**31)), phase=PHASES[phase_index],
                               shape=(1, size, size), spacing=(thickness, spacing, spacing),
                               center=center, noise=rng.uniform(4, 18), supersample=(2, 2, 2))
        xs.append(intensity.window(ph.array, *PHASE_GRID["window"]).astype(np.float32))
        ys.append(phase_index)
        used.append(ph.mask(*PHASE_STRUCTURES)[0])
        masks.append({name: m[0] for name, m in ph.masks.items()})
    return {"x": np.stack(xs), "y": np.asarray(ys, np.int64), "used": np.stack(used), "masks": masks,
            "classes": list(PHASES), "structures": list(PHASE_STRUCTURES), "spacing_mm": spacing}


def nodule_slices(ctx: Context, patients: int, slices: int = 14) -> dict:
    """Chest slices on the lung-nodule-2d grid (half with a nodule) and the nodule masks.

    Shared by the CRM and arXiv 2201.02771 sections (generated once per run).
    ``slices`` per patient as in training (14); the quick run asks for fewer.
    ``patient`` says which simulated patient each slice comes from; ``positive`` indexes
    the slices labelled "nodule" whose mask shows it.
    """
    def build():
        from XAIExplainLib.models.training import datasets as ds
        seed = ctx.seed_for(1)
        x, y, m, p = [], [], [], []
        for index in range(patients):
            out = ds.nodule_patient(seed, index, slices)
            if out is None:
                continue
            x.append(out[0])
            y.append(out[1])
            m.append(out[2])
            p.append(np.full(len(out[1]), index))
        labels, masks = np.concatenate(y), np.concatenate(m)
        positive = np.flatnonzero((labels == 1) & (masks.reshape(len(masks), -1).sum(1) > 0))
        return {"x": np.concatenate(x), "y": labels, "mask": masks, "positive": positive,
                "patient": np.concatenate(p), "spacing_mm": ds.NODULE_GRID["spacing"], "seed": seed}
    return ctx.memo(("nodule_slices", patients, slices), build)


def seg_patches(ctx: Context, patients: int) -> dict:
    """32^3 patches on the lung-nodule-seg-3d grid with nodule masks (5/8 of them around nodules)."""
    def build():
        from XAIExplainLib.models.training import datasets as ds
        seed = ctx.seed_for(2)
        x, m = ds.seg_patches(patients, seed)
        return {"x": x, "mask": m, "spacing_mm": ds.SEG_GRID["spacing"], "seed": seed}
    return ctx.memo(("seg_patches", patients), build)


def lung1(ctx: Context) -> dict:
    """The real chest CT with its expert nodule mask, or Skip with the reason."""
    def read():
        if ctx.data_dir is None:
            return Skip("the shared real-image folder is not available beside the project checkout")
        image_path = Path(ctx.data_dir) / "lung1_image.nrrd"
        label_path = Path(ctx.data_dir) / "lung1_label.nrrd"
        if not (image_path.exists() and label_path.exists()):
            return Skip("lung1_image.nrrd / lung1_label.nrrd are missing from the shared data folder")
        import SimpleITK as sitk
        image = sitk.ReadImage(str(image_path))
        label = sitk.ReadImage(str(label_path))
        return {"image": image, "label_image": label,
                "label": sitk.GetArrayFromImage(label) > 0}
    out = ctx.memo("lung1", read)
    if isinstance(out, Skip):
        raise out
    return out


def lung1_on_model_grid(ctx: Context, loaded) -> dict:
    """lung1 resampled to a 2D model's grid (the card's preprocessing) with the label alongside.

    Returns x (Z, 1, H, W) float32, mask (Z, H, W) bool (nearest-neighbour label
    on the model grid), nodule slice indices, and the in-plane spacing.
    """
    def build():
        import SimpleITK as sitk
        from XAIExplainLib.imaging.resample import resample
        case = lung1(ctx)
        prepared = loaded.preprocess(case["image"])
        label = resample(sitk.Cast(case["label_image"], sitk.sitkFloat32), prepared.model_grid, "linear", 0.0)
        mask = sitk.GetArrayFromImage(label) >= 0.5  # the label's area, not a nearest-neighbour pick
        x = np.ascontiguousarray(prepared.array.transpose(1, 0, 2, 3))  # (Z, C, H, W)
        slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        return {"x": x.astype(np.float32), "mask": mask, "slices": slices,
                "spacing_mm": prepared.model_grid.spacing_zyx[1:]}
    return ctx.memo(("lung1_grid", loaded.name), build)


def crop_around(x: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cubes of ``size`` voxels from (N, C, D, H, W) patches, centred on each mask's centroid (clipped)."""
    xs, ms = [], []
    for xi, mi in zip(x, mask):
        centre = np.argwhere(mi).mean(0) if mi.any() else np.asarray(mi.shape) / 2
        start = [int(np.clip(round(c - size / 2), 0, n - size)) for c, n in zip(centre, mi.shape)]
        window = tuple(slice(s, s + size) for s in start)
        xs.append(xi[(slice(None),) + window])
        ms.append(mi[window])
    return np.stack(xs), np.stack(ms)
