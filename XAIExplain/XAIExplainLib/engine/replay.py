"""Re-running only the part of a network after one layer, for a batch of replacement activations.

KWC evaluates the model 2K times with layer l's output replaced; everything before l is
unchanged and must not be recomputed. A model's ``forward`` is arbitrary Python (U-Nets
keep skip tensors from before l and concatenate them after l), so the network cannot
simply be cut in two. Instead:

1. ``record(x)`` runs the model once with a pre- and a post-hook on every module,
   building the tree of module *calls*. A call that ends before l starts is a prefix
   call; the outermost prefix calls (those whose caller is not itself a prefix call)
   keep a copy of their outputs (a copy: a later in-place op such as ``out += identity``
   must not alter it). l's own input and output are kept too.
2. ``run_suffix(x, activations)`` runs the model again with the ``forward`` of some
   modules temporarily replaced (an instance attribute, removed in ``finally``): an
   outermost prefix call returns its recorded output without computing anything (its
   submodules never run), l's call returns the replacement activations (copies x N
   rows, copy-major), and every other call runs as usual. The first replay hands out
   copies of the recorded outputs and watches their version counters; if the model
   modified none of them in place, later replays hand out the recorded tensors
   themselves.
3. During the replay everything from before l stays at the recorded batch size N, so
   the tensor arithmetic a ``forward`` does on prefix tensors (a ``torch.cat`` feeding a
   replaced module, say) costs what it costs at batch N. Tensors that depend on the
   replacement activations are tagged (a ``TorchFunctionMode``); where an operation
   meets a tagged tensor and an untagged batch-N tensor of the same rank (a skip
   connection, the input of a global residual), the latter is repeated to the
   perturbed batch, once per replay. Parameters, buffers and tensors computed from
   them alone (a weight standardised in ``forward``) are never repeated.

Calls are matched by order per module, so a module used several times (one ReLU shared
across a network) is replaced only at its prefix calls. The replay checks that the
model made the same calls as in the recording and raises otherwise (a forward whose
control flow depends on the batch size cannot be replayed), and refuses an in-place
operation that would write perturbed values into a prefix tensor.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from .validation import replayed_rows

CACHED, LAYER, RUN = "cached", "layer", "run"
_TAG = "_xaiexplain_replay"
_INPLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                    "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__imatmul__"}


class _Call:
    __slots__ = ("module", "parent", "children", "output", "prefix", "hidden")

    def __init__(self, module: nn.Module, parent: "_Call | None"):
        self.module, self.parent, self.children = module, parent, []
        self.output, self.prefix, self.hidden = None, False, False


def _copy(value):
    """Detached copies of the tensors in a (nested) module output."""
    return tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, value)


def _is_inplace(func, kwargs: dict) -> bool:
    name = getattr(func, "__name__", "")
    dunder = name.startswith("__") and name.endswith("__")
    return (name in _INPLACE_DUNDERS or (name.endswith("_") and not dunder) or kwargs.get("inplace") is True
            or kwargs.get("out") is not None)


class _PerturbedBatch(TorchFunctionMode):
    """Tags tensors that depend on the replacement activations; repeats batch-N tensors where they meet them."""

    def __init__(self, n: int, copies: int, constants: set):
        super().__init__()
        self.n, self.copies, self.constants = n, copies, constants
        self.token, self.constant_token = object(), object()
        self._repeated: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def tag(self, tensor: torch.Tensor, token=None) -> torch.Tensor:
        setattr(tensor, _TAG, token or self.token)
        return tensor

    def tagged(self, value) -> bool:
        return isinstance(value, torch.Tensor) and getattr(value, _TAG, None) is self.token

    def constant(self, value) -> bool:
        """A parameter, a buffer, or computed from them alone."""
        return id(value) in self.constants or getattr(value, _TAG, None) is self.constant_token

    def repeat(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (N, ...) repeated copy-major to (copies * N, ...), once per tensor and replay."""
        key = id(tensor)
        if key not in self._repeated:
            self._repeated[key] = (tensor, self.tag(tensor.repeat((self.copies,) + (1,) * (tensor.dim() - 1))))
        return self._repeated[key][1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, spec = tree_flatten((args, kwargs))
        tensors = [value for value in flat if isinstance(value, torch.Tensor)]
        ranks = {value.dim() for value in tensors if self.tagged(value)}
        if not ranks:
            result = func(*args, **kwargs)
            if tensors and all(self.constant(value) for value in tensors):
                for value in tree_flatten(result)[0]:
                    if isinstance(value, torch.Tensor) and id(value) not in self.constants:
                        self.tag(value, self.constant_token)
            return result
        changed = False
        for i, value in enumerate(flat):
            if (isinstance(value, torch.Tensor) and not self.tagged(value) and value.dim() in ranks
                    and value.shape[0] == self.n and not self.constant(value) and self.copies > 1):
                if i == 0 and args and _is_inplace(func, kwargs):
                    raise ValueError("the model writes values that depend on the explained layer into a tensor "
                                     "computed before it (an in-place operation); it cannot be replayed from the "
                                     "layer")
                flat[i], changed = self.repeat(value), True
        if changed:
            args, kwargs = tree_unflatten(flat, spec)
        result = func(*args, **kwargs)
        for value in tree_flatten(result)[0]:
            if isinstance(value, torch.Tensor) and id(value) not in self.constants:
                self.tag(value)
        return result


class LayerReplay:
    """Record a forward once, then replay the network from ``layer`` on for replacement activations."""

    def __init__(self, model: nn.Module, layer: nn.Module, layer_name: str = "the layer"):
        self.model, self.layer, self.layer_name = model, layer, layer_name
        self.layer_inputs: tuple[tuple, dict] | None = None
        self.layer_output: torch.Tensor | None = None
        self._actions: dict[nn.Module, list] = {}
        self._n = 0
        self._copy_cached = True  # until a replay shows that the model never writes into them

    def record(self, x: torch.Tensor):
        """Run the model on x once, recording what the replay needs; returns the model's output."""
        stack: list[_Call] = []
        order: list[_Call] = []  # in start order: a caller always before the calls it makes
        calls: dict[nn.Module, list[_Call]] = defaultdict(list)
        state = {"layer": None}

        def pre_hook(module, args, kwargs):
            call = _Call(module, stack[-1] if stack else None)
            if call.parent is not None:
                call.parent.children.append(call)
            calls[module].append(call)
            order.append(call)
            stack.append(call)
            if module is self.layer:
                if state["layer"] is not None:
                    raise ValueError(f"layer '{self.layer_name}' runs more than once in one forward pass (a shared "
                                     "module); choose a convolution that runs once")
                state["layer"] = call
                self.layer_inputs = (args, kwargs)

        def post_hook(module, args, kwargs, output):
            call = stack.pop()
            if module is self.layer:
                self.layer_output = _copy(output)
            if state["layer"] is None:  # ended before the layer started: a prefix call
                call.prefix, call.output = True, _copy(output)
                for child in call.children:
                    child.output = None  # only the outermost prefix calls are replayed
            return None

        handles = []
        try:
            for module in self.model.modules():
                handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
                handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
            output = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        layer_call = state["layer"]
        if layer_call is None:
            raise ValueError(f"layer '{self.layer_name}' did not run in the forward pass; "
                             "choose a layer the model uses")
        if not isinstance(self.layer_output, torch.Tensor):
            raise ValueError(f"layer '{self.layer_name}' returns {type(self.layer_output).__name__}, not a tensor")
        self._n = x.shape[0]
        self._actions = self._plan(order, calls, layer_call)
        return output

    @staticmethod
    def _plan(order: list, calls: dict, layer_call: _Call) -> dict:
        """Per module, what each of its calls does in the replay (hidden calls do not happen at all)."""
        for call in order:
            parent = call.parent
            call.hidden = parent is not None and (parent.hidden or parent.prefix or parent is layer_call)
        actions = {}
        for module, module_calls in calls.items():
            plan = []
            for call in module_calls:
                if call.hidden:
                    continue
                plan.append((LAYER, None) if call is layer_call else (CACHED, call.output) if call.prefix
                            else (RUN, None))
            if any(kind != RUN for kind, _ in plan):
                actions[module] = plan
        return actions

    def run_suffix(self, x: torch.Tensor, activations: torch.Tensor):
        """The model's output (copies * N, ...) when the layer outputs ``activations`` (copies * N, ...), copy-major.

        ``x`` is the recorded input (N, ...).
        """
        n = self._n
        if activations.shape[0] % n or activations.shape[1:] != self.layer_output.shape[1:]:
            raise ValueError(f"replacement activations {tuple(activations.shape)} do not match the layer's output "
                             f"{tuple(self.layer_output.shape)} repeated copy-major")
        copies = activations.shape[0] // n
        constants = {id(t) for t in self.model.parameters()} | {id(t) for t in self.model.buffers()}
        mode = _PerturbedBatch(n, copies, constants)
        counters = {module: 0 for module in self._actions}
        saved = {}
        handed_out: list[torch.Tensor] = []

        def replacement(module, original):
            plan = self._actions[module]

            def forward(*args, **kwargs):
                index = counters[module]
                counters[module] += 1
                kind, value = plan[index] if index < len(plan) else (RUN, None)
                if kind == CACHED:
                    if not self._copy_cached:
                        return value
                    value = _copy(value)
                    handed_out.extend(v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor))
                    return value
                if kind == LAYER:
                    return mode.tag(activations)
                return original(*args, **kwargs)
            return forward

        try:
            for module in self._actions:
                saved[module] = module.__dict__.get("forward")
                module.forward = replacement(module, module.forward)
            with mode, replayed_rows(copies):
                output = self.model(x.detach().clone())
        finally:
            for module, previous in saved.items():
                module.__dict__.pop("forward", None)
                if previous is not None:
                    module.__dict__["forward"] = previous
        if self._copy_cached and all(tensor._version == 0 for tensor in handed_out):
            self._copy_cached = False
        if any(counters[module] != len(plan) for module, plan in self._actions.items()):
            raise ValueError("the model did not make the same module calls when replayed from the layer (its "
                             "forward depends on the batch size or on data); it cannot be explained this way")
        if not mode.tagged(output) and copies > 1:  # the output does not depend on the layer
            output = output.repeat((copies,) + (1,) * (output.dim() - 1))
        return output
