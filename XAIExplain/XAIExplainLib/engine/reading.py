"""How the engine reads a model: which part of its output is the score, how token layers map to grids.

Networks such as MONAI's ViT return ``(logits, hidden_states)``, others a dict. The one
place that turns such an output into the logits tensor is a forward hook on the model's
root module, installed for the duration of an explanation or a prediction
(:func:`reading_output`): every ``model(x)`` call of every method, the targets and the
volume code then see the logits tensor, and layer names stay the model's own.

The options here apply to the model, not to one method, so every method accepts them:
``output_key`` (an index into a tuple/list output or a key of a dict output; default: the
first element of a tuple), ``token_patch_size`` and ``reshape`` (see :mod:`.tokens`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from .tokens import TokenOptions
from .validation import check_output_rows

READING_OPTIONS = ("output_key", "reshape", "token_patch_size")


@dataclass(frozen=True)
class ModelReading:
    """The reading options of one request."""

    output_key: object = None
    tokens: TokenOptions = field(default_factory=TokenOptions)


def split_options(options: dict) -> tuple[ModelReading, dict]:
    """(the reading options, the remaining method options)."""
    rest = {k: v for k, v in options.items() if k not in READING_OPTIONS}
    key = options.get("output_key")
    if key is not None and (isinstance(key, bool) or not isinstance(key, (int, str))):
        raise TypeError(f"option output_key must be an int (tuple index) or a str (dict key), got {key!r}")
    tokens = TokenOptions.from_options(options.get("token_patch_size"), options.get("reshape"))
    return ModelReading(output_key=key, tokens=tokens), rest


def select_output(output, key=None) -> torch.Tensor:
    """The logits tensor of a model output: the tensor itself, ``output[key]``, or a tuple's first element."""
    if isinstance(output, torch.Tensor):
        if key is not None:
            raise ValueError(f"output_key={key!r} was given but the model returns a single tensor; "
                             "drop output_key")
        return output
    if isinstance(output, Mapping):
        keys = list(output)
        if key is None and len(keys) == 1:
            key = keys[0]
        if key is None or key not in output:
            what = "pass output_key= one of them" if key is None else f"output_key={key!r} is not one of them"
            raise ValueError(f"the model returns a dict with keys {keys}; {what}")
        chosen, where = output[key], f"output[{key!r}]"
    elif isinstance(output, (tuple, list)):
        index = 0 if key is None else key
        if not isinstance(index, int) or not -len(output) <= index < len(output):
            raise ValueError(f"the model returns a {type(output).__name__} of {len(output)} elements; "
                             f"output_key={key!r} must be an index 0..{len(output) - 1}")
        chosen, where = output[index], f"element {index} of the {type(output).__name__} output"
    else:
        return output  # targets.check_output names the type
    if not isinstance(chosen, torch.Tensor):
        raise ValueError(f"{where} is a {type(chosen).__name__}, not a tensor; pass output_key= the "
                         "element that holds the logits")
    return chosen


#: Attribute set on the engine's own hooks, so that a hook the user registered can be told apart
#: (:mod:`.inference_copy` runs the model itself while one is present).
ENGINE_HOOK = "_xaiexplain_engine_hook"


@contextlib.contextmanager
def reading_output(model: nn.Module, key=None):
    """For the duration, ``model(x)`` returns :func:`select_output` of its output (hook removed after),
    checked to have one row per input sample (:func:`.validation.check_output_rows`).

    TorchScript modules take no hooks; their output is read as it is.
    """
    if isinstance(model, torch.jit.ScriptModule):
        yield
        return
    def read(module, inputs, output):
        selected = select_output(output, key)
        if inputs and isinstance(inputs[0], torch.Tensor):
            check_output_rows(module, selected, inputs[0].shape[0])
        return selected

    setattr(read, ENGINE_HOOK, True)
    handle = model.register_forward_hook(read)
    try:
        yield
    finally:
        handle.remove()
