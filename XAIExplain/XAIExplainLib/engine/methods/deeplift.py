"""DeepLIFT with the Rescale rule (Shrikumar et al., ICML 2017), batched with its baseline.

Input and baseline go through the network as one batch [x; x'] (2N rows). At every
element-wise nonlinearity y = f(t) the backward pass uses the multiplier
(f(t) - f(t')) / (t - t') instead of f'(t), where t' is the same element for the
baseline row; where |t - t'| < 1e-10 the ordinary gradient is kept (captum's rule).
Linear layers (convolutions, batch norm in eval mode, pooling by averages, concatenation)
keep their gradients, which is what DeepLIFT prescribes for them. The attribution is
(x - x') times the resulting input multipliers, summed over input channels.

The nonlinearities are intercepted as functions (a ``TorchFunctionMode``), so module
activations (nn.ReLU, ...) and functional calls (F.relu, torch.sigmoid) are covered alike
and nothing in the model is swapped. An in-place activation is computed out of place and
copied into its input, so a forward that ignores its return value (``h.relu_()``) reads
the same values, and the same multipliers, as one that uses it. Max pooling keeps its gradient (the winner takes
the multiplier); captum has a dedicated max-pool rule, so the two differ on networks
with max pooling and agree on the others.
"""
from __future__ import annotations

import inspect
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..options import baseline
from ..registry import MethodInfo, register
from ..targets import resolve_target

EPSILON = 1e-10

# Element-wise nonlinearities, and the out-of-place function each stands for.
_NONLINEAR = {
    F.relu: F.relu, torch.relu: torch.relu, torch.Tensor.relu: torch.relu, F.relu_: torch.relu,
    torch.relu_: torch.relu, torch.Tensor.relu_: torch.relu,
    F.leaky_relu: F.leaky_relu, F.leaky_relu_: F.leaky_relu, F.elu: F.elu, F.elu_: F.elu, F.selu: F.selu,
    F.celu: F.celu, F.gelu: F.gelu, F.silu: F.silu, F.mish: F.mish, F.softplus: F.softplus,
    F.relu6: F.relu6, F.hardtanh: F.hardtanh, F.hardtanh_: F.hardtanh, F.prelu: F.prelu, torch.prelu: F.prelu,
    torch.sigmoid: torch.sigmoid, torch.Tensor.sigmoid: torch.sigmoid, F.sigmoid: torch.sigmoid,
    torch.tanh: torch.tanh, torch.Tensor.tanh: torch.tanh, F.tanh: torch.tanh,
}
_IN_PLACE = {F.relu_, torch.relu_, torch.Tensor.relu_, F.leaky_relu_, F.elu_, F.hardtanh_}


@lru_cache(maxsize=None)
def _inplace_parameter(func) -> inspect.Signature | None:
    """The signature of a function that takes ``inplace`` (positionally or by name), else None."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin
        return None
    return signature if "inplace" in signature.parameters else None


def works_in_place(func, args: tuple, kwargs: dict) -> bool:
    """Whether this call of an activation overwrites its input (``relu_``, ``inplace=True``)."""
    if func in _IN_PLACE:
        return True
    signature = _inplace_parameter(func)
    return signature is not None and bool(signature.bind(*args, **kwargs).arguments.get("inplace", False))


def out_of_place(func, args: tuple, kwargs: dict) -> torch.Tensor:
    """The activation's value computed into a new tensor (``inplace`` turned off)."""
    target = _NONLINEAR[func]
    signature = _inplace_parameter(target)
    if signature is None:
        return target(*args, **kwargs)
    call = signature.bind(*args, **kwargs)
    call.arguments["inplace"] = False
    return target(*call.args, **call.kwargs)


class RescaleRule(TorchFunctionMode):
    """Replaces the backward of element-wise nonlinearities by DeepLIFT multipliers for a [x; x'] batch."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _NONLINEAR or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        t = original = args[0]
        if not t.requires_grad or t.shape[0] != 2 * self.n:
            return func(*args, **kwargs)
        in_place = works_in_place(func, args, kwargs)
        if in_place:  # computed from a copy: the activation's backward may need its input, overwritten below
            t = t.clone()
            args = (t,) + tuple(args[1:])
        out = out_of_place(func, args, kwargs)
        with torch.no_grad():
            delta_in = t[:self.n] - t[self.n:]
            delta_out = out[:self.n] - out[self.n:]
            small = delta_in.abs() < EPSILON
            multiplier = torch.where(small, torch.zeros_like(delta_in), delta_out / torch.where(
                small, torch.ones_like(delta_in), delta_in))
            multiplier, small = torch.cat([multiplier, multiplier]), torch.cat([small, small])
        rescaled = torch.where(small, out, out.detach() + (t - t.detach()) * multiplier)
        return original.copy_(rescaled) if in_place else rescaled


def deeplift_multipliers(model, target, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """d score / d input under the Rescale rule for the rows of x (N, C, *S) against ``reference``.

    ``target`` is a bound target, or a target spec bound to the rows of x in this forward (the
    rule changes the backward only, so those rows are the unperturbed output).
    """
    n = x.shape[0]
    inputs = torch.cat([x, reference]).detach().requires_grad_(True)
    with RescaleRule(n):
        output = model(inputs)
    bound = target if hasattr(target, "score") else resolve_target(target, output[:n].detach())
    score = bound.score(output[:n]).sum()
    (grad,) = torch.autograd.grad(score, inputs, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad[:n]


def _deeplift(request):
    x = request.x
    reference = baseline(request.options, "baseline", x)
    target = request.reference()[1] if request.has_reference() else request.target
    return ((x - reference) * deeplift_multipliers(request.model, target, x, reference)).sum(dim=1)


register(MethodInfo(
    "deeplift", "DeepLIFT (Rescale rule): (x - baseline) x multipliers (f(t) - f(t')) / (t - t') at nonlinearities",
    compute=_deeplift, family="gradient", needs_layer=False, signed=True,
    cost="1 forward + full backward at batch 2N", options=("baseline",),
    needs_hooks=True,  # the Rescale rule replaces the nonlinearities' gradients
))
