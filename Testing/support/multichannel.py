"""A BraTS-like 4-channel nnU-Net model folder and cases in nnU-Net's file naming, for the tests of several
input channels (the model API, the command line, the Slicer logic)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

BRATS_CHANNELS = ("T1", "T1ce", "T2", "FLAIR")
#: nnU-Net's BraTS datasets train on regions: whole tumour, tumour core, enhancing tumour.
BRATS_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
#: The Medical Segmentation Decathlon's brain tumour task (nnU-Net's Dataset001_BrainTumour) trains on labels.
MSD_LABELS = {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}


def brats_like(shape=(18, 26, 22), spacing=(1.0, 1.1, 1.3), origin=(-20.0, 14.0, 3.5), seed=7) -> list[sitk.Image]:
    """Four MRI sequences of one brain on one grid: zero outside the head (nnU-Net crops it and z-scores inside),
    a lesion whose contrast differs per sequence."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (z ** 2 + y ** 2 / 0.8 + x ** 2 / 0.7) < 0.85
    lesion = ((z - 0.1) ** 2 + (y + 0.15) ** 2 + (x - 0.1) ** 2) < 0.08
    images = []
    for base, bright in ((400, 380), (420, 900), (300, 800), (350, 700)):
        array = np.where(head, base + rng.normal(0, 30, shape), 0.0)
        array[lesion] = bright + rng.normal(0, 30, int(lesion.sum()))
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        images.append(image)
    return images


def write_brats_folder(path, regions: bool = True) -> Path:
    """A 4-channel nnU-Net trained-model folder (one fold) as nnU-Net's BraTS datasets are planned:
    z-score normalisation inside the head for every sequence, regions trained with sigmoids
    (``regions=False``: the MSD task's labels, with softmax)."""
    from Testing.support.nnunet_folders import CT_PROPERTIES, build_network, checkpoint_dict, dataset_json, plans

    path = Path(path)
    (path / "fold_0").mkdir(parents=True)
    plan = plans(normalization="ZScoreNormalization", spacing=(1.3, 1.1, 1.0), patch=(16, 16, 16))
    configuration = plan["configurations"]["3d_fullres"]
    configuration["normalization_schemes"] = ["ZScoreNormalization"] * 4
    configuration["use_mask_for_norm"] = [True] * 4  # BraTS: normalise inside the head only
    plan["foreground_intensity_properties_per_channel"] = {str(i): CT_PROPERTIES["0"] for i in range(4)}
    dataset = dataset_json(channels=BRATS_CHANNELS)
    if regions:
        dataset.update(labels=BRATS_LABELS, regions_class_order=[1, 2, 3])
    else:
        dataset.update(labels=MSD_LABELS)
    (path / "plans.json").write_text(json.dumps(plan))
    (path / "dataset.json").write_text(json.dumps(dataset))
    network = build_network(plan, dataset, seed=3)
    torch.save(checkpoint_dict(network, plan, dataset, 0), path / "fold_0" / "checkpoint_final.pth")
    return path


def write_brats_case(folder, case: str, seed: int = 7) -> list[str]:
    """``CASE_0000.nii.gz`` ... ``CASE_0003.nii.gz`` in ``folder`` (nnU-Net's file naming, in dataset.json's
    channel order); returns their paths."""
    files = []
    for index, image in enumerate(brats_like(seed=seed)):
        files.append(str(Path(folder) / f"{case}_{index:04d}.nii.gz"))
        sitk.WriteImage(image, files[-1])
    return files


def nnunet_predicts(folder, files) -> np.ndarray:
    """nnU-Net's own path: its SimpleITKIO reads the channel files, its predictor segments (no mirroring)."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    array, properties = SimpleITKIO().read_images(files)
    return predictor.predict_single_npy_array(array, properties, None, None, False)
