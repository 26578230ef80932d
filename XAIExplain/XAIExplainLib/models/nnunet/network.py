"""Build an nnU-Net network the way nnU-Net's predictor does, with deep supervision off.

The network comes from the trainer's own ``build_network_architecture`` (nnU-Net's
convention: a trainer that changes the architecture overrides it) on nnU-Net's
``PlansManager`` / ``ConfigurationManager``, after :mod:`.names` has replaced every class
name in the plans by the canonical name of a class it resolved and checked. Only the one
trainer module that defines the checkpoint's trainer is imported (nnU-Net's own lookup
imports every trainer variant, some of which need torchvision).
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelCardError
from ..weights_io import apply_state_dict
from .library import nnunetv2


def trainer_class(name: str):
    """The nnU-Net trainer class called ``name``, importing only the module that defines it."""
    base = nnunetv2("training.nnUNetTrainer.nnUNetTrainer").nnUNetTrainer
    if name == base.__name__:
        return base
    if not name.isidentifier():
        raise ModelCardError(f"the checkpoint names trainer {name!r}, which is not a class name")
    package = Path(nnunetv2("training.nnUNetTrainer").__file__).parent
    pattern = re.compile(rf"^class\s+{re.escape(name)}\s*\(", re.MULTILINE)
    for source in sorted(package.rglob("*.py")):
        if pattern.search(source.read_text(encoding="utf-8", errors="replace")):
            dotted = ".".join(source.relative_to(package).with_suffix("").parts)
            module = nnunetv2(f"training.nnUNetTrainer.{dotted}")
            found = getattr(module, name, None)
            if isinstance(found, type) and issubclass(found, base):
                return found
    raise ModelCardError(f"the checkpoint was trained with trainer {name!r}, which this nnunetv2 installation "
                         "does not define; install the nnunetv2 version (or the package) that has it")


def build_network(trainer, plans_manager, configuration_manager, dataset_json: dict) -> nn.Module:
    """The trainer's network for these plans, without deep supervision, in eval mode.

    nnU-Net initialises the weights randomly before they are replaced by the checkpoint's;
    the global torch random state is kept as it was.
    """
    labels = nnunetv2("utilities.label_handling.label_handling")
    n_inputs = labels.determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    n_outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    with torch.random.fork_rng(devices=[]):
        if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
            network = trainer.build_network_architecture(plans_manager, configuration_manager, n_inputs, n_outputs,
                                                         enable_deep_supervision=False)
        else:  # the signature of nnU-Net before 2.5
            network = trainer.build_network_architecture(
                configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
                configuration_manager.network_arch_init_kwargs_req_import, n_inputs, n_outputs,
                enable_deep_supervision=False)
    return network.eval()


def load_weights(network: nn.Module, state: dict, checkpoint: Path, configuration: str) -> None:
    """The fold's weights into ``network``, or an error saying they do not fit the plans."""
    apply_state_dict(network, state, checkpoint,
                     hint=f"the network plans.json's configuration '{configuration}' builds; the checkpoint "
                          "belongs to other plans: use the plans.json it was trained with")
