"""A torch module given without a card (a console user's own network) as a LoadedModel.

The module sees the voxels as they are (float32): no resampling and no intensity
transform, so the card it gets says exactly that. What a card would state is read from
the module: its dimensionality and channels from the first convolution, its task and
number of outputs from one forward on zeros (a classifier returns (N, K), a segmenter
(N, K, *S)).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..engine.activations import activation_for_channels
from .card import ClassSpec, InputSpec, IntensitySpec, ModelCard, WeightsSpec
from .loaded import LoadedModel

_PROBE_SIZE = 32


def module_model(module: nn.Module, class_names: Sequence[str] | None = None, name: str | None = None,
                 example: torch.Tensor | None = None) -> LoadedModel:
    """Describe ``module`` by a card built from the module itself; kind ``"module"``.

    ``example`` is an input the module accepts (N, C, *S); by default zeros of 32 voxels
    per axis with the first convolution's channels.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    from ..engine.capture import eval_mode
    from ..engine.validation import first_conv

    _, conv = first_conv(module)
    dims = 3 if any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in module.modules()) else 2
    channels = conv.in_channels if conv is not None else 1
    if example is None:
        example = torch.zeros((1, channels) + (_PROBE_SIZE,) * dims, device=_device(module))
    try:
        with eval_mode(module), torch.inference_mode():
            output = module(example)
    except Exception as error:  # noqa: BLE001 - any failure of the probe means "cannot tell"
        raise ValueError(f"cannot tell what {type(module).__name__} is: a test forward on an input of shape "
                         f"{tuple(example.shape)} failed ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}); "
                         "describe it with a model card (card.json) instead") from error
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        raise ValueError(f"{type(module).__name__} returns {type(output).__name__}"
                         f"{tuple(output.shape) if isinstance(output, torch.Tensor) else ''}; a classifier must return "
                         "(N, classes) and a segmenter (N, classes, *spatial)")
    task = "classification" if output.dim() == 2 else "segmentation"
    outputs = int(output.shape[1])
    activation = activation_for_channels(outputs)
    names = _class_names(class_names, outputs, task, activation)
    card = ModelCard(
        name=name or type(module).__name__, task=task, spatial_dims=dims,
        input=InputSpec(channels=channels, spacing=None, size=None, patch_size=None,
                        intensity=IntensitySpec("none"), pad_value=None),
        classes=tuple(ClassSpec(n) for n in names), weights=WeightsSpec(Path("<in memory>"), "state_dict"),
        slice_axis=0 if dims == 2 else None, output_activation=activation,
        description="a torch module given without a card: voxels as they are")
    return LoadedModel(module=module, card=card, scripted=isinstance(module, torch.jit.ScriptModule),
                       device=_device(module), kind="module", weights_sha256=state_sha256(module))


def _class_names(class_names, outputs: int, task: str, activation: str) -> list[str]:
    expected = outputs + 1 if (task == "segmentation" and activation == "sigmoid") else outputs
    if class_names is None:
        if expected == outputs + 1:
            return ["background"] + [f"class {i + 1}" for i in range(outputs)]
        return [f"class {i}" for i in range(outputs)]
    names = [str(c) for c in class_names]
    if len(names) not in (outputs, expected):
        raise ValueError(f"{len(names)} class names given but the module has {outputs} output channel(s)")
    if len(names) == outputs and expected != outputs:
        names = ["background"] + names
    return names


def _device(module: nn.Module) -> torch.device:
    return next((t.device for t in list(module.parameters()) + list(module.buffers())), torch.device("cpu"))


def state_sha256(module: nn.Module) -> str:
    """SHA-256 over the module's state (names, shapes and values), to tell runs of different weights apart."""
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        tensor = value.detach().cpu().contiguous()
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()
