"""Lean capture of activations and gradients, and leaving the model exactly as found.

Design:
- parameters are frozen during an explanation, so no parameter gradient is ever built;
- a forward hook replaces the target layer's output by a detached leaf that requires
  grad, so the layers *before* the target build no autograd graph at all;
- ``torch.autograd.grad`` gives the gradients; no full backward hooks are used;
- eval mode, ``requires_grad`` flags and hooks are restored in ``finally`` blocks.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .reading import reading_output
from .validation import check_output_rows
from .targets import resolve_target
from .tokens import TokenOptions, layout_for


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the duration; every submodule's own training flag restored afterwards.

    ``model.train(was_training)`` would reset every submodule to the top module's flag,
    which changes a user model with frozen batch norm or Monte-Carlo dropout.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        if any(training for _, training in modes):  # a model already in eval mode is left untouched
            model.eval()
        yield
    finally:
        for module, training in modes:
            if module.training != training:
                module.training = training


@contextlib.contextmanager
def explaining(model: nn.Module, output_key=None, freeze: bool = True):
    """Eval mode, frozen parameters and the logits read from the output (see :mod:`.reading`)
    for the duration; all restored exactly afterwards. ``freeze=False`` leaves the flags alone,
    for passes that never differentiate (they run under ``torch.no_grad`` / inference mode)."""
    flags = [(param, param.requires_grad) for param in model.parameters()] if freeze else []
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        with (eval_mode(model), torch.inference_mode(False), torch.enable_grad(),
              reading_output(model, output_key)):
            yield
    finally:
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


class _LayersCaptured(BaseException):
    """Raised by a capture's hook to end a forward whose output nobody reads, once every
    captured layer ran. A BaseException, so a model's own ``except Exception`` lets it pass."""


class LayerCapture:
    """Forward hooks that keep each named layer's output as a tensor one can differentiate to.

    With ``stop=True`` the forward ends once every captured layer ran (see :func:`run_pass`).

    The first captured layer to run has no graph behind it, so its output becomes a
    detached leaf; later captured layers that depend on it stay in the graph. The hook
    returns a clone, so in-place ops after the layer (``ReLU(inplace=True)``) neither
    fail on the leaf nor overwrite the stored activation.

    A transformer layer's tokens or channels-last grid (see :mod:`.tokens`) are stored as
    the (N, C, *grid) tensor and the model continues with tokens rebuilt from it, so the
    gradient with respect to the stored activation has the grid layout too. ``x`` (the
    input) tells the grid; without it only channels-first outputs are accepted.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], x: torch.Tensor | None = None,
                 tokens: TokenOptions | None = None, model: nn.Module | None = None, stop: bool = False):
        self.layers = layers
        self.stop = stop
        self.activations: dict[str, torch.Tensor] = {}
        self.layouts: dict[str, object] = {}
        self._calls: dict[str, int] = {}
        self._handles = []
        self._input = None if x is None else (tuple(x.shape[2:]), x.shape[0])
        tokens = tokens or TokenOptions()
        self._reshape = tokens.reshape
        self._patch = None if x is None or model is None else tokens.patch_for(model, x.dim() - 2)

    def __enter__(self):
        for name, module in self.layers:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _layout(self, name, output):
        if self._input is None:
            return None
        spatial, batch = self._input
        try:
            return layout_for(tuple(output.shape), spatial, batch, self._patch, self._reshape)
        except ValueError as error:
            raise ValueError(f"layer '{name}' has output {tuple(output.shape)}: {error}") from None

    def _hook(self, name):
        def hook(module, inputs, output):
            self._calls[name] = self._calls.get(name, 0) + 1
            if self._calls[name] > 1:
                raise ValueError(
                    f"layer '{name}' runs {self._calls[name]} times in one forward pass (a shared module); "
                    "choose a layer that runs once, e.g. its parent block or a convolution"
                )
            if not isinstance(output, torch.Tensor) or output.dim() < 3:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(
                    f"layer '{name}' has output {shape} with no spatial dims; choose a convolutional layer "
                    "(see XAIExplainLib.list_layers(model, x))"
                )
            layout = self._layout(name, output)
            if layout is None:
                activation = output if output.requires_grad else output.detach().requires_grad_(True)
                self.activations[name] = activation
                returned = activation.clone()
            else:
                original = output if output.requires_grad else output.detach()
                grid = layout.to_grid(original)
                activation = grid if grid.requires_grad else grid.detach().requires_grad_(True)
                self.activations[name] = activation
                self.layouts[name] = layout
                returned = layout.from_grid(activation, original)
            if self.stop and len(self.activations) == len(self.layers):
                raise _LayersCaptured
            return returned
        return hook

    def check_all_ran(self):
        missing = [name for name, _ in self.layers if name not in self.activations]
        if missing:
            raise ValueError(f"layer(s) {missing} did not run in the forward pass; choose layers the model uses")


@dataclass
class PassResult:
    """Everything one forward + backward pass produced."""

    output: torch.Tensor | None  # None for a pass stopped after its layers
    target: object
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    input_gradient: torch.Tensor | None = None


def run_pass(model: nn.Module, x: torch.Tensor, target, layers=(), input_gradient=False, backward=True,
             tokens: TokenOptions | None = None, stop_after_layers: bool = False) -> PassResult:
    """One forward (capturing ``layers``) and, if asked, one backward of the summed target scores.

    Samples are independent in eval mode, so the gradient of the summed scores gives each
    sample the gradient of its own score. ``stop_after_layers`` (forward only) ends the
    forward once every layer ran: the result has the activations and no output. Must run
    inside ``explaining(model)``.
    """
    stop = stop_after_layers and not backward and bool(layers)
    x = x.detach().clone().requires_grad_(True) if input_gradient else x.detach()
    with LayerCapture(list(layers), x, tokens, model, stop=stop) as capture:
        try:
            output = model(x)
        except _LayersCaptured:
            return PassResult(output=None, target=None, activations=capture.activations)
    capture.check_all_ran()
    check_output_rows(model, output, x.shape[0])  # also where no hook reads the output (TorchScript)
    bound = resolve_target(target, output)
    result = PassResult(output=output.detach(), target=bound, activations=capture.activations)
    if not backward:
        return result
    wrt = [capture.activations[name] for name, _ in layers] + ([x] if input_gradient else [])
    if not any(t.requires_grad for t in wrt) or not output.requires_grad:
        raise ValueError("the model's output does not depend on the chosen layer(s) or input; choose another layer")
    score = bound.score(output).sum()
    grads = torch.autograd.grad(score, wrt, allow_unused=True)
    for (name, _), grad in zip(layers, grads):
        activation = capture.activations[name]
        result.gradients[name] = torch.zeros_like(activation) if grad is None else grad
    if input_gradient:
        result.input_gradient = torch.zeros_like(x) if grads[-1] is None else grads[-1]
    return result


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through (guided backprop)."""

    @staticmethod
    def forward(ctx, tensor):
        return tensor.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


_GUIDED_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
    F.leaky_relu, F.leaky_relu_, F.prelu, torch.prelu, F.elu, F.elu_, F.relu6, F.selu, F.gelu, F.silu,
    F.hardtanh, F.hardtanh_,
}


class GuidedActivations(TorchFunctionMode):
    """Guided backprop for every ReLU-like activation, module or functional.

    Each activation's output passes through a gate whose backward keeps ReLU(grad_out);
    the activation's own backward then multiplies by its derivative (input > 0 for a
    ReLU), giving grad_in = ReLU(grad_out) * (input > 0). Activation modules
    (nn.ReLU, LeakyReLU, PReLU, ELU, ...) call these functionals, so intercepting the
    functionals covers module types and ``F.relu`` / ``torch.relu`` calls alike, and
    nothing in the model is swapped or needs restoring.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in _GUIDED_FUNCTIONS and isinstance(result, torch.Tensor) and result.requires_grad:
            return _PositiveGradient.apply(result)
        return result
