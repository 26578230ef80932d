"""``load_nnunet``: an nnU-Net v2 trained-model folder as a LoadedModel (kind "nnunet").

Several folds: each fold's network is a module of the LoadedModel (``module`` the first,
``ensemble`` the others). The prediction is nnU-Net's fold ensemble (the mean of the
folds' logits) and a map is the mean of the per-fold maps, each fold explained on the
same windows as its own prediction.

A cascade stage (``3d_cascade_fullres``) is loaded with its first stage (``3d_lowres``, see
:mod:`.cascade`), whose prediction becomes part of the second stage's input.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelCardError
from ..loaded import LoadedModel
from .card import nnunet_card
from .cascade import check_previous_stage, previous_stage_folder
from .checkpoint import mirroring_axes, read_checkpoint
from .folder import NnUNetFolder, plans_configuration, read_folder
from .labels import channel_labels
from .library import nnunetv2
from .names import check_helpers, resolve_architecture
from .network import build_network, load_weights, trainer_class
from .pipeline import NnUNetPipeline


@dataclass(frozen=True)
class NnUNetPlan:
    """Everything read and checked from a folder before a network is built."""

    folder: NnUNetFolder
    plans_manager: Any
    configuration_manager: Any
    label_manager: Any
    checkpoints: dict  # fold -> the checkpoint's dictionary
    configuration: str
    trainer_name: str
    trainer: type
    previous: "NnUNetPlan | None" = None  # a cascade stage's first stage


def inspect_nnunet(source, trust: bool = False, folds: Sequence | int | str | None = None,
                   checkpoint: str = "checkpoint_final.pth", mirroring: bool = False, previous_stage=None, *,
                   mmap: bool = False, **unknown) -> NnUNetPlan:
    """Read and check an nnU-Net folder without building or running anything it names.

    Every file is checked to lie inside the folder, every checkpoint is read as data, every
    name in plans.json is resolved by us (:mod:`.names`) and the trainer found in nnunetv2;
    whatever needs trust raises ``UntrustedModelError`` here, before any network exists.
    ``mmap`` maps the checkpoints' tensors instead of reading them (for questions that need
    only their fields, such as whether trust is needed). A cascade stage's first stage (its folder
    ``previous_stage``, or the one beside it) is inspected the same way, with the same options.
    """
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} for an nnU-Net folder; it takes folds=, "
                        "checkpoint=, mirroring= and previous_stage= (a cascade's first-stage folder)")
    if not isinstance(mirroring, bool):
        raise TypeError(f"mirroring must be True or False, got {mirroring!r}")
    folder = read_folder(source, folds, checkpoint, trust=trust)
    plans_handler = nnunetv2("utilities.plans_handling.plans_handler")
    plans_manager = plans_handler.PlansManager(folder.plans)
    checkpoints = {fold: read_checkpoint(path, trust, mmap=mmap) for fold, path in folder.checkpoints.items()}
    first_fold, first = next(iter(checkpoints.items()))
    configuration, trainer_name = first["init_args"]["configuration"], first["trainer_name"]
    for fold, data in checkpoints.items():
        if (data["init_args"]["configuration"], data["trainer_name"]) != (configuration, trainer_name):
            raise ModelCardError(
                f"{folder.checkpoints[fold]}: trained as {data['trainer_name']} / "
                f"{data['init_args']['configuration']}, but fold {first_fold} as {trainer_name} / {configuration}; "
                "folds of one model must share trainer and configuration: pass folds= of one model")
    plans_configuration(folder, configuration)
    configuration_manager = plans_manager.get_configuration(configuration)
    _check_supported(folder, configuration, configuration_manager)
    resolve_architecture(configuration_manager, folder.path / "plans.json", trust)
    check_helpers(plans_manager, configuration_manager, folder.path / "plans.json")
    try:
        label_manager = plans_manager.get_label_manager(folder.dataset_json)
    except (AssertionError, RuntimeError, KeyError) as exc:
        raise ModelCardError(f"{folder.path / 'dataset.json'}: nnU-Net cannot read its labels ({exc})") from exc
    previous = None
    if configuration_manager.previous_stage_name is not None:
        previous_folder = previous_stage_folder(folder.path, trainer_name, plans_manager.plans_name,
                                                configuration_manager.previous_stage_name, previous_stage)
        previous = inspect_nnunet(previous_folder, trust, folds, checkpoint, mirroring, mmap=mmap)
    elif previous_stage is not None:
        raise ValueError(f"previous_stage= applies to a cascade stage; configuration '{configuration}' of {folder.path} "
                         "takes no first-stage segmentation")
    return NnUNetPlan(folder, plans_manager, configuration_manager, label_manager, checkpoints, configuration,
                      trainer_name, trainer_class(trainer_name), previous)


def load_nnunet(source, trust: bool = False, folds: Sequence | int | str | None = None,
                checkpoint: str = "checkpoint_final.pth", mirroring: bool = False, previous_stage=None,
                **unknown) -> LoadedModel:
    """Load an nnU-Net v2 trained-model folder.

    folds       fold numbers (or "all"); None: every fold that has ``checkpoint``
    checkpoint  "checkpoint_final.pth" (default) or "checkpoint_best.pth"
    mirroring   include nnU-Net's test-time mirroring (along the axes the checkpoint allows)
                in predictions and maps: each window is also run mirrored, the outputs and
                maps mirrored back and averaged. Off by default (2 to 8 times the cost).
    previous_stage  a cascade stage (``3d_cascade_fullres``): the folder of its first stage
                (``3d_lowres``); None looks beside the folder, where nnU-Net trains it. The
                first stage uses the same folds, checkpoint and mirroring options
    trust       allow checkpoints that need full unpickling, files outside the folder, and
                plans whose architecture lies outside dynamic_network_architectures / torch.nn

    The networks are on the CPU (``load_model(..., device=)`` moves them).
    """
    return _build(inspect_nnunet(source, trust, folds, checkpoint, mirroring, previous_stage, **unknown), mirroring)


def _build(plan: NnUNetPlan, mirroring: bool) -> LoadedModel:
    """The LoadedModel of an inspected folder (and of its first stage, for a cascade stage)."""
    previous_model = None
    if plan.previous is not None:
        previous_model = _build(plan.previous, mirroring)
        check_previous_stage(previous_model, plan.configuration_manager.previous_stage_name, plan.folder.path)
    folder, plans_manager, configuration_manager = plan.folder, plan.plans_manager, plan.configuration_manager
    networks = []
    for fold, data in plan.checkpoints.items():
        network = build_network(plan.trainer, plans_manager, configuration_manager, folder.dataset_json)
        load_weights(network, data["network_weights"], folder.checkpoints[fold], plan.configuration)
        networks.append(network.eval())
    labels = channel_labels(folder.dataset_json, plan.label_manager)
    channels = len(folder.dataset_json["channel_names"])  # the images; a cascade adds its one-hot channels itself
    first_fold, first = next(iter(plan.checkpoints.items()))
    card = nnunet_card(folder.path, plans_manager.dataset_name, plan.configuration, configuration_manager, channels,
                       labels, networks[0], folder.checkpoints[first_fold], folder.folds, plan.trainer_name,
                       channel_names=image_channel_names(folder.dataset_json), previous_stage=previous_model)
    axes = mirroring_axes(first) if mirroring else ()
    pipeline = NnUNetPipeline(plans_manager, configuration_manager, folder.dataset_json, plan.label_manager, axes,
                              previous_model)
    return LoadedModel(module=networks[0], card=card, kind="nnunet", source=Path(folder.path),
                       weights_sha256=_weights_digest(folder.checkpoints[first_fold], previous_model),
                       ensemble=tuple(networks[1:]), pipeline=pipeline)


def _weights_digest(checkpoint: Path, previous_model) -> str:
    """The checkpoint's SHA-256; for a cascade stage, one over it and its first stage's digest, since the
    first stage's segmentation is part of the input (a rerun must not take outputs made with other
    first-stage weights as complete)."""
    own = _sha256(checkpoint)
    if previous_model is None:
        return own
    return hashlib.sha256(f"{own}\n{previous_model.card.extra['nnunet']['configuration']}:"
                          f"{previous_model.weights_sha256}".encode()).hexdigest()


def image_channel_names(dataset_json: dict) -> tuple[str, ...]:
    """dataset.json's ``channel_names`` in channel order (keys "0", "1", ...): the images the model takes,
    as nnU-Net names their files (``CASE_0000``, ``CASE_0001``, ...)."""
    names = dataset_json["channel_names"]
    keys = [str(i) for i in range(len(names))]
    if sorted(names) != sorted(keys):
        raise ModelCardError(f"dataset.json: channel_names must be keyed \"0\", \"1\", ... (one per input channel, "
                             f"as nnU-Net writes it), got keys {sorted(names)}")
    return tuple(str(names[key]) for key in keys)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_supported(folder, configuration: str, configuration_manager) -> None:
    if len(configuration_manager.patch_size) not in (2, 3):
        raise ModelCardError(f"{folder.path}: configuration '{configuration}' has patch_size "
                             f"{list(configuration_manager.patch_size)}; nnU-Net's configurations are 2D or 3D")
