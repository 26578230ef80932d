"""Input checks that turn user mistakes into clear errors before any torch op runs.

Errors a user can cause raise ``ValueError`` (``TypeError`` for an argument of the
wrong type) whose message says what was wrong and what is accepted.
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools

import torch
from torch import nn

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def check_model(model) -> nn.Module:
    """The model, checked: a torch module with real (not meta-device) tensors."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module, got {type(model).__name__}; "
            "load one with XAIExplainLib.load_model(...) or pass your own nn.Module"
        )
    # One walk over the modules' own tensors (parameters() and buffers() walk the tree twice).
    if any(tensor is not None and tensor.is_meta for module in model.modules()
           for tensor in itertools.chain(module._parameters.values(), module._buffers.values())):
        meta = next(name for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())
                    if tensor.is_meta)
        raise ValueError(
            f"model {type(model).__name__} has tensors on the meta device (e.g. '{meta}'): it was built "
            "without weights (torch.device('meta') or an empty-weights initialiser); load its weights "
            "(load_state_dict(..., assign=True)) or move it to a real device first"
        )
    return model


def writes_into_input(model: nn.Module) -> ValueError:
    """The error for a model that writes into its input tensor (x.mul_(), an inplace activation)."""
    return ValueError(
        f"model {type(model).__name__} writes into its input in place (an operation like x.mul_() or "
        "an inplace activation on the input tensor), so gradients through the input and repeated passes "
        "over it are wrong; make the model's first operation out of place (x = x * 2, inplace=False)"
    )


def is_in_place_input_error(error: RuntimeError) -> bool:
    """Whether autograd refused an in-place write into the input (a leaf that requires grad)."""
    text = str(error)
    return "in-place operation" in text and ("leaf Variable" in text or "modified by an inplace" in text)


def first_conv(model: nn.Module):
    """The first convolution in registration order: it tells the input's channels and dims."""
    for name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES):
            return name, module
    return None, None


def check_input(model: nn.Module, x) -> None:
    """Check an (N, C, H, W) or (N, C, D, H, W) input against the model's first conv layer."""
    if not isinstance(x, torch.Tensor):
        hint = " (convert with torch.from_numpy(...))" if type(x).__module__.startswith("numpy") else ""
        raise TypeError(
            f"x must be a torch.Tensor of shape (N, C, H, W) or (N, C, D, H, W), got {type(x).__name__}{hint}"
        )
    if x.dim() not in (4, 5):
        raise ValueError(
            f"x must have 4 dims (N, C, H, W) for a 2D model or 5 dims (N, C, D, H, W) for a 3D model; "
            f"got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}; convert with x.float()")
    if x.shape[0] == 0 or any(s == 0 for s in x.shape[2:]):
        raise ValueError(f"x is empty: shape {tuple(x.shape)}")
    problem = non_finite_problem(x, "values")
    if problem:
        raise ValueError(f"x {problem} (e.g. torch.nan_to_num)")
    name, conv = first_conv(model)
    if conv is None:
        return
    expected_dims = 2 + len(conv.kernel_size)
    if x.dim() != expected_dims:
        kind = {4: "2D (N, C, H, W)", 5: "3D (N, C, D, H, W)"}.get(expected_dims, f"{expected_dims}-dim")
        raise ValueError(
            f"the model's first convolution '{name}' is {type(conv).__name__}, so it expects a {kind} input; "
            f"got shape {tuple(x.shape)}"
        )
    expected_channels = conv.in_channels
    if x.shape[1] != expected_channels:
        raise ValueError(
            f"the model expects {expected_channels} input channel(s) (first convolution '{name}'), "
            f"got {x.shape[1]} in x of shape {tuple(x.shape)}"
        )


def count_non_finite(tensor: torch.Tensor) -> int:
    """How many NaN or infinite values ``tensor`` holds.

    A NaN or an infinity makes the sum non-finite, so a finite sum (one pass, no
    element-wise mask) means none; only a non-finite sum (which a very large but finite
    tensor can also give) counts them element by element.
    """
    with torch.no_grad():
        if bool(torch.isfinite(tensor.sum())):
            return 0
        return int((~torch.isfinite(tensor)).sum().item())


def non_finite_problem(values, unit: str = "voxel(s)") -> str:
    """``"has N NaN or infinite voxel(s); ..."`` for input values holding any, else ``""``.

    The one input rule of every entry point (the engine's ``explain``/``explain_volume``/
    ``predict_volume``, ``explain_image``/``predict_image``, the Slicer logic through them, the command
    line): a NaN or an infinity in an image is refused before preprocessing (a window would clip
    ``+Inf`` to its top and explain it silently) and before any forward. ``values`` is a torch tensor
    or a numpy array (a SimpleITK array view needs no copy).
    """
    if isinstance(values, torch.Tensor):
        if not (values.is_floating_point() or values.is_complex()):
            return ""
        bad = count_non_finite(values)
    else:
        import numpy as np

        values = np.asarray(values)
        if values.dtype.kind not in "fc":
            return ""
        bad = 0 if np.isfinite(np.sum(values, dtype=np.complex128 if values.dtype.kind == "c" else np.float64)) \
            else int(values.size - np.count_nonzero(np.isfinite(values)))
    if not bad:
        return ""
    return f"has {bad} NaN or infinite {unit}; fix or mask them before explaining"


def check_finite(model: nn.Module, tensor: torch.Tensor, what: str) -> None:
    """Refuse a model output or map holding NaN or Inf, naming the model.

    A non-finite value would otherwise become a NaN heatmap or a meaningless
    prediction reported as a success; the cause is the model (its weights or an
    overflow in its layers), so the error names it.
    """
    if tensor.is_floating_point() or tensor.is_complex():
        bad = count_non_finite(tensor.detach())
        if bad:
            raise ValueError(
                f"model {type(model).__name__} produced {bad} NaN or infinite value(s) in its {what} "
                f"(of {tensor.numel()}); check its weights (NaN/Inf parameters, a layer that overflows "
                "in this precision) and the input's intensity range"
            )


#: Output rows per input row the current forward legitimately returns: 1, except inside a layer replay
#: (:mod:`.replay`), where the layer hands out ``copies`` perturbed activations per sample.
_ROWS_PER_INPUT: contextvars.ContextVar[int] = contextvars.ContextVar("xaiexplain_rows_per_input", default=1)


@contextlib.contextmanager
def replayed_rows(copies: int):
    """For the duration, a forward returns ``copies`` output rows per input row (a replayed suffix)."""
    token = _ROWS_PER_INPUT.set(int(copies))
    try:
        yield
    finally:
        _ROWS_PER_INPUT.reset(token)


def check_output_rows(model: nn.Module, output, rows: int) -> None:
    """Refuse a model output whose batch size is not the input's, naming the model.

    A model that returns fewer rows than it was given (``logits[:1]``) would leave the missing
    samples with blank maps and no error, one that returns more would explain rows that belong to
    no sample. Checked on every forward the engine runs (:func:`engine.reading.reading_output`), on
    the optimised copy's batches and on a TorchScript model's outputs.
    """
    rows = rows * _ROWS_PER_INPUT.get()
    if isinstance(output, torch.Tensor) and output.dim() >= 1 and output.shape[0] != rows:
        raise ValueError(
            f"model {type(model).__name__} returned {output.shape[0]} row(s) for a batch of {rows} "
            f"(output shape {tuple(output.shape)}); a model must return one output per input sample, batch "
            "axis first: check its forward for a slice (logits[:1]), a reshape or a squeeze of the batch axis"
        )
