"""Check a built network against its description with one tiny forward pass.

Channels, dimensionality and class count of the card (or of the description
of a bare file) against the network, so that a contradiction is reported at
load time, naming the card field, instead of as a shape error deep inside an
explanation.
"""
from __future__ import annotations

import torch
from torch import nn

from ..engine.reading import select_output
from .card import ModelCard, trial_input_shape
from .errors import ModelCardError, first_line
from .working_memory import check_window_memory


def check_module(card: ModelCard, module: nn.Module, scripted: bool) -> None:
    """Verify channels, dimensionality and class count against the card.

    The first convolution is inspected for a precise message; then one forward
    pass on a small zero input checks the number of outputs.
    """
    where = card.path or card.name
    if not scripted:
        first = next((m for m in module.modules()
                      if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
        if first is not None:
            name = next(n for n, m in module.named_modules() if m is first)
            conv_dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
            if conv_dims != card.spatial_dims:
                raise ModelCardError(f"{where}: field 'spatial_dims' is {card.spatial_dims} but the "
                                     f"network's first convolution '{name}' is {conv_dims}D")
            if first.in_channels != card.input.channels:
                raise ModelCardError(f"{where}: field 'input.channels' is {card.input.channels} but "
                                     f"the network's first convolution '{name}' takes "
                                     f"{first.in_channels} channel(s)")
    shape = trial_input_shape(card, module)
    # the test forward runs at the card's patch size: a patch no memory can hold is refused with the
    # numbers here, before the forward allocates it (models.working_memory)
    check_window_memory(module, card.input.channels, shape, f"{where} (field 'input.patch_size')",
                        gradients=False)
    x = torch.zeros((1, card.input.channels) + shape)
    try:
        with torch.inference_mode():
            y = module(x)
    except Exception as exc:  # noqa: BLE001 - report any failure of the dry run
        raise ModelCardError(f"{where}: a test forward pass with input shape {tuple(x.shape)} "
                             f"(from input.channels/size/patch_size) failed: {first_line(exc)}") from exc
    try:
        y = select_output(y)  # a tuple's first element, as the engine reads it (MONAI's ViT)
    except ValueError as exc:
        raise ModelCardError(f"{where}: {exc}") from exc
    if not isinstance(y, torch.Tensor):
        raise ModelCardError(f"{where}: the network returns {type(y).__name__}; a tensor of logits (or a "
                             "tuple whose first element is one) is required")
    n_out = y.shape[1] if y.ndim >= 2 else 1
    n_classes = card.num_classes
    sigmoid_binary = card.output_activation == "sigmoid" and n_out == n_classes - 1
    if n_out != n_classes and not sigmoid_binary:
        raise ModelCardError(f"{where}: field 'classes' lists {n_classes} classes but the network "
                             f"outputs {n_out} channel(s)")
    if card.task == "segmentation" and tuple(y.shape[2:]) != shape:
        raise ModelCardError(f"{where}: task is segmentation but the output's spatial shape "
                             f"{tuple(y.shape[2:])} differs from the input's {shape}")
    if card.task == "classification" and y.ndim != 2:
        raise ModelCardError(f"{where}: task is classification but the network output has shape "
                             f"{tuple(y.shape)}; expected (N, classes)")
