"""Training and validation samples for the bundled models, drawn from the phantoms.

Every sample is rendered directly on the model's grid (the card's spacing and
size) and windowed as the card says, so training sees what inference sees
after :func:`models.preprocessing.prepare`.  Each sample's randomness comes
from ``(seed, index)`` only, so a data set is identical whether it is built in
one process or several, and validation seeds never overlap training seeds.

Acquisition varies like real scans do: slice thickness, noise level, field of
view centring, contrast timing, and (3D) thick slices interpolated back to a
fine grid.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from ...imaging import intensity
from ...imaging.phantoms import PHASES, abdominal_phantom
from ...imaging.phantoms.chest import ChestAnatomy, render_chest

PHASE_GRID = {"size": 128, "spacing": 3.0, "window": (-200.0, 500.0)}
NODULE_GRID = {"size": 160, "spacing": 1.8, "window": (-1000.0, 400.0)}
SEG_GRID = {"patch": 32, "spacing": 1.25, "window": (-1000.0, 400.0)}
#: Nodule size range for the segmentation model: a 32-voxel patch (40 mm) must
#: show a nodule with some lung around it.
SEG_DIAMETER = (6.0, 24.0)
#: A slice is a positive "nodule" example if it cuts at least this much nodule
#: (a 7 mm disc): smaller cuts are not told apart from vessel cross-sections on one
#: slice, even by radiologists, so they are left out of training rather than
#: given a label the image cannot support.
MIN_NODULE_AREA_MM2 = 40.0
#: Positive slices are aimed at nodules at least this large (smaller ones rarely
#: reach the area above).
MIN_TARGET_DIAMETER = 9.0


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), int(stream)])


def build(fn: Callable[[int, int], tuple], count: int, seed: int, workers: int = 1,
          cache: Path | None = None, block: int = 20) -> tuple:
    """Run ``fn(seed, index)`` for ``index < count`` and stack the results field by field.

    With ``cache`` (a folder) results are stored there in blocks of ``block``
    indices and reused by later calls with the same function, seed and
    generator source code, so growing ``count`` only generates the new blocks.
    """
    if cache is None:
        return _stack(_run(fn, seed, range(count), workers))
    parts = []
    for start in range(0, count, block):
        stop = min(start + block, count)
        path = Path(cache) / f"{fn.__name__}-{seed}-{start}-{stop}-{_source_fingerprint()}.npz"
        if path.is_file():
            with np.load(path) as data:
                parts.append(tuple(data[f"f{i}"] for i in range(len(data.files))))
            continue
        part = _stack(_run(fn, seed, range(start, stop), workers))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"f{i}": a for i, a in enumerate(part)})
        parts.append(part)
    return tuple(np.concatenate(field) for field in zip(*parts))


def _run(fn, seed: int, indices: range, workers: int) -> list:
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            items = list(pool.map(fn, [seed] * len(indices), indices, chunksize=2))
    else:
        items = [fn(seed, i) for i in indices]
    return [item for item in items if item is not None]


def _stack(items: list) -> tuple:
    return tuple(np.stack(field) for field in zip(*items))


#: Bump when a sample function below changes what it generates (invalidates caches).
SAMPLES_VERSION = 1


def _source_fingerprint() -> str:
    """Hash of the phantom code and :data:`SAMPLES_VERSION`: a cache entry is stale when they change."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(str(SAMPLES_VERSION).encode())
    for file in sorted((root / "imaging" / "phantoms").glob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


# ---- ct-phase-2d -------------------------------------------------------------------------

def phase_sample(seed: int, index: int):
    """One axial abdominal slice in a balanced phase; returns (x (1, H, W), label)."""
    rng = _rng(seed, index, 1)
    phase_index = index % len(PHASES)
    size, spacing = PHASE_GRID["size"], PHASE_GRID["spacing"]
    thickness = rng.uniform(2.0, 5.0)
    center = (rng.uniform(-15, 15), rng.uniform(-15, 15), rng.uniform(-40, 135))
    ph = abdominal_phantom(seed=int(rng.integers(2**31)), phase=PHASES[phase_index],
                           shape=(1, size, size), spacing=(thickness, spacing, spacing),
                           center=center, noise=rng.uniform(4, 18), supersample=(2, 2, 2))
    x = intensity.window(ph.array, *PHASE_GRID["window"])
    return x.astype(np.float32), np.int64(phase_index)


# ---- lung-nodule-2d ----------------------------------------------------------------------

def nodule_patient(seed: int, index: int, slices: int = 14):
    """Several axial chest slices of one random patient: half through nodules, half without.

    Returns (x (n, 1, H, W), labels (n,), nodule masks (n, H, W)).
    """
    rng = _rng(seed, index, 2)
    anatomy = ChestAnatomy(np.random.default_rng(int(rng.integers(2**31))),
                           contrast=bool(rng.uniform() < 0.3))
    for _ in range(int(rng.integers(3, 6))):
        anatomy.add_random_nodule(rng)
    visible = [n for n in anatomy.nodules if n.diameter >= MIN_TARGET_DIAMETER]
    if not visible:
        visible = [anatomy.add_random_nodule(rng, (MIN_TARGET_DIAMETER, 30.0))]
    size, spacing = NODULE_GRID["size"], NODULE_GRID["spacing"]
    lo, hi = anatomy.domes[1] - 20, anatomy.apex - 10
    xs, ys, ms = [], [], []
    attempts = 0
    while len(xs) < slices and attempts < slices * 4:
        attempts += 1
        want_positive = len(xs) % 2 == 0
        thickness = rng.uniform(1.5, 5.0)
        if want_positive:
            nodule = visible[int(rng.integers(len(visible)))]
            z = nodule.center[2] + rng.uniform(-0.25, 0.25) * nodule.diameter
        else:
            z = rng.uniform(lo, hi)
        center = (rng.uniform(-12, 12), rng.uniform(-12, 12) + 5, z)
        hu, masks, _ = render_chest(anatomy, (1, size, size), (thickness, spacing, spacing), center,
                                    rng.uniform(5, 22), int(rng.integers(2**31)), (2, 2, 2))
        nodule_mask = masks.get("nodule", np.zeros(hu.shape, bool))[0]
        area = float(nodule_mask.sum()) * spacing * spacing
        if area >= MIN_NODULE_AREA_MM2:
            label = 1
        elif area == 0 and not masks.get("nodule_spicules", np.zeros(1, bool)).any():
            label = 0
        else:
            continue
        if label != int(want_positive):
            continue
        xs.append(intensity.window(hu, *NODULE_GRID["window"]))
        ys.append(label)
        ms.append(nodule_mask)
    if not xs:
        return None
    return (np.stack(xs).astype(np.float32), np.asarray(ys, np.int64), np.stack(ms))


def nodule_slices(count_patients: int, seed: int, workers: int = 1, cache: Path | None = None):
    """Concatenated :func:`nodule_patient` samples of ``count_patients`` patients."""
    x, y, m = build(_nodule_patient_padded, count_patients, seed, workers, cache)
    keep = y.reshape(-1) >= 0
    return (x.reshape(-1, *x.shape[2:])[keep], y.reshape(-1)[keep], m.reshape(-1, *m.shape[2:])[keep])


def nodule_crops(x: np.ndarray, y: np.ndarray, masks: np.ndarray, count: int, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Square crops of nodule slices for the first stage of training.

    A nodule fills a larger share of a crop than of a slice, so the
    convolutions learn what a nodule looks like quickly; the same weights
    then run on whole slices (the network is fully convolutional with global
    average pooling).  Crops of positive slices are centred near the nodule;
    crops of negative slices near random lung pixels.  A crop is positive when
    it holds at least :data:`MIN_NODULE_AREA_MM2` / 3 of nodule.
    """
    half = size // 2
    height, width = x.shape[-2:]
    min_pixels = MIN_NODULE_AREA_MM2 / 3 / NODULE_GRID["spacing"] ** 2
    low, high = intensity.window(np.array([-960.0, -600.0]), *NODULE_GRID["window"])  # lung HU range
    xs = np.zeros((count, 1, size, size), np.float32)
    ys = np.zeros(count, np.int64)
    for j in range(count):
        i = int(rng.integers(len(x)))
        if y[i] == 1:
            rows, cols = np.nonzero(masks[i])
            centre = np.array([rows.mean(), cols.mean()]) + rng.integers(-half // 2, half // 2 + 1, 2)
        else:
            lung = np.argwhere((x[i, 0] > low) & (x[i, 0] < high))
            centre = lung[int(rng.integers(len(lung)))] if len(lung) else np.array([height, width]) // 2
        r = int(np.clip(centre[0], half, height - half))
        c = int(np.clip(centre[1], half, width - half))
        xs[j] = x[i, :, r - half:r + half, c - half:c + half]
        ys[j] = int(masks[i, r - half:r + half, c - half:c + half].sum() >= min_pixels)
    return xs, ys


def _nodule_patient_padded(seed: int, index: int, slices: int = 14):
    """:func:`nodule_patient` padded to ``slices`` (label -1 marks padding) so results stack."""
    out = nodule_patient(seed, index, slices)
    size = NODULE_GRID["size"]
    x = np.zeros((slices, 1, size, size), np.float32)
    y = np.full((slices,), -1, np.int64)
    m = np.zeros((slices, size, size), bool)
    if out is not None:
        n = len(out[1])
        x[:n], y[:n], m[:n] = out
    return x, y, m


# ---- lung-nodule-seg-3d ------------------------------------------------------------------

def thick_slices(volume: np.ndarray, thickness_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Simulate a thick-slice acquisition resampled to the fine grid (along axis 0).

    Average over the slice thickness, keep every ``thickness``-th slice, and
    interpolate linearly back: what resampling a 5 mm CT to 1.25 mm gives.
    """
    if thickness_vox <= 1.05:
        return volume
    k = max(1, int(round(thickness_vox)))
    blurred = ndimage.uniform_filter1d(volume, k, axis=0, mode="nearest")
    offset = int(rng.integers(k))
    positions = np.arange(offset, volume.shape[0], k)
    if len(positions) < 2:
        return blurred
    sampled = blurred[positions]
    target = (np.arange(volume.shape[0]) - offset) / k
    low = np.clip(np.floor(target).astype(int), 0, len(positions) - 1)
    high = np.clip(low + 1, 0, len(positions) - 1)
    w = np.clip(target - np.floor(target), 0, 1)[:, None, None]
    return (sampled[low] * (1 - w) + sampled[high] * w).astype(volume.dtype)


def seg_patient(seed: int, index: int, patches: int = 16):
    """Patches of one patient: 5/8 around nodules, the rest anywhere in or near the lungs.

    Returns (x (n, 1, P, P, P), masks (n, P, P, P)).
    """
    rng = _rng(seed, index, 3)
    anatomy = ChestAnatomy(np.random.default_rng(int(rng.integers(2**31))),
                           contrast=bool(rng.uniform() < 0.3))
    for _ in range(int(rng.integers(3, 6))):
        anatomy.add_random_nodule(rng, SEG_DIAMETER)
    p, spacing = SEG_GRID["patch"], SEG_GRID["spacing"]
    half = p * spacing / 2
    xs, ms = [], []
    for i in range(patches):
        if i < patches * 5 // 8:
            nodule = anatomy.nodules[i % len(anatomy.nodules)]
            center = np.asarray(nodule.center) + rng.uniform(-0.45, 0.45, 3) * half
        else:
            center = np.asarray(anatomy.random_lung_point(rng, 0.0)) + rng.uniform(-0.6, 0.6, 3) * half
        hu, masks, _ = render_chest(anatomy, (p, p, p), (spacing,) * 3, tuple(center),
                                    0.0, int(rng.integers(2**31)), (2, 2, 2))
        if rng.uniform() < 0.6:
            hu = thick_slices(hu, rng.uniform(1.5, 4.5), rng)
        noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), 0.6)
        hu = hu + noise * (rng.uniform(4, 20) / max(float(noise.std()), 1e-6))
        xs.append(intensity.window(hu, *SEG_GRID["window"])[None])
        ms.append(masks.get("nodule", np.zeros(hu.shape, bool)))
    return np.stack(xs).astype(np.float32), np.stack(ms)


def seg_patches(count_patients: int, seed: int, workers: int = 1, cache: Path | None = None):
    x, m = build(seg_patient, count_patients, seed, workers, cache)
    return x.reshape(-1, *x.shape[2:]), m.reshape(-1, *m.shape[2:])


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    classes = np.unique(labels)
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in classes]))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative samples")
    order = np.argsort(scores, kind="mergesort")
    ranked = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranked[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranked[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


__all__ = ["PHASE_GRID", "NODULE_GRID", "SEG_GRID", "balanced_accuracy", "build", "dice",
           "nodule_patient", "nodule_slices", "phase_sample", "roc_auc", "seg_patches",
           "seg_patient", "thick_slices"]
