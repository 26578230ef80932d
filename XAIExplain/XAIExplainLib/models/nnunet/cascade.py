"""nnU-Net's cascade: the ``3d_cascade_fullres`` stage takes the ``3d_lowres`` stage's segmentation as input.

nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 18, 2021, section "Cascade") predicts the image with the low-resolution
model first; ``nnUNetv2_predict -prev_stage_predictions`` then hands that segmentation, on the image's own
grid, to the full-resolution stage, whose preprocessor crops and resamples it like a label map and
appends it one-hot (one channel per foreground label, ``convert_labelmap_to_one_hot``) to the image's
channels. Here the first stage is a loaded nnU-Net model of its own (its folds, preprocessing, windows and
export), run inside the second stage's ``prepare``; the maps explain the second stage.

The first stage's folder is named by the caller or found where nnU-Net trains it: beside the cascade's
folder in the same dataset folder, ``{trainer}__{plans}__{previous stage}``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import ModelCardError
from .library import nnunetv2


def previous_stage_folder(folder: Path, trainer: str, plans_name: str, previous: str, given=None) -> Path:
    """The first stage's trained-model folder: ``given``, else ``{trainer}__{plans}__{previous}`` beside ``folder``."""
    if given is not None:
        path = Path(given)
        if not path.is_dir():
            raise FileNotFoundError(f"previous_stage={str(given)!r} is not a folder; name the {previous} trained-model "
                                    f"folder whose segmentation the cascade stage {folder.name} takes as input")
        return path
    beside = folder.parent / f"{trainer}__{plans_name}__{previous}"
    if not beside.is_dir():
        raise FileNotFoundError(f"{folder} is a cascade stage that needs the segmentation of the '{previous}' "
                                f"stage, but {beside} does not exist; train or copy that stage there, or name its "
                                "folder with load_model(..., previous_stage=PATH)")
    return beside


def check_previous_stage(previous_model, expected: str, where: Path) -> None:
    """The first stage must be the configuration the cascade's plans name, on the same labels."""
    configuration = previous_model.card.extra["nnunet"]["configuration"]
    if configuration != expected:
        raise ModelCardError(f"{previous_model.source}: is configuration '{configuration}', but the cascade stage "
                             f"{where} takes the segmentation of '{expected}' (plans.json 'previous_stage'); name "
                             f"the {expected} folder with previous_stage=")


def with_previous_segmentation(data: np.ndarray, segmentation: np.ndarray, label_manager) -> np.ndarray:
    """The preprocessed image with the first stage's preprocessed segmentation appended one-hot, as
    nnU-Net's ``PreprocessAdapterFromNpy`` does (voxels nnU-Net's crop marked -1 are in no channel)."""
    labels = nnunetv2("utilities.label_handling.label_handling")
    onehot = labels.convert_labelmap_to_one_hot(segmentation[0], label_manager.foreground_labels, data.dtype)
    return np.vstack((data, np.asarray(onehot, dtype=data.dtype)))


def first_stage_segmentation(first, image: sitk.Image, device, memory_budget_mb: float | None) -> np.ndarray:
    """The first stage's label map of ``image`` as nnU-Net's preprocessor takes a segmentation: ``(1, Z, Y, X)``
    int16 on the image's array grid. ``first`` (a loaded nnU-Net model) runs on ``device`` (None: where its
    networks are) within ``memory_budget_mb``; its folds' logits are averaged as nnU-Net ensembles them
    (the rule of ``models.pipeline.run_networks``, which imports this package, so it cannot be called here)."""
    from ...engine import predict_volume
    from ...engine.devices import resolve_device
    from ..working_memory import check_window_memory

    device = first.device if device is None else resolve_device(device)
    options = first.pipeline.volume_options()
    check_window_memory(first.module, first.pipeline.network_channels, options["patch_size"],
                        f"the first stage of the cascade ({first.source})", memory_budget_mb, device, False)
    prepared = first.pipeline.prepare(image, memory_budget_mb=memory_budget_mb)
    logits = None
    for network in first.modules:
        previous = next((t.device for t in network.parameters()), device)
        try:
            network.to(device)
            out = predict_volume(network, prepared.array, mode="volume", device=device, **options)
        finally:
            network.to(previous)
        logits = out if logits is None else logits + out
    probabilities = first.activate(logits[None] / len(first.modules), axis=1)[0]
    labels = prepared.restore_labels(probabilities)
    return sitk.GetArrayFromImage(labels)[None].astype(np.int16)
