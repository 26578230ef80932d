"""Re-running only the part of a network after one layer, for a batch of replacement activations.

KWC evaluates the model 2K times with layer l's output replaced; everything before l is
unchanged and must not be recomputed. A model's ``forward`` is arbitrary Python (U-Nets
keep skip tensors from before l and concatenate them after l), so the network cannot
simply be cut in two. Instead:

1. ``record(x)`` runs the model once with a pre- and a post-hook on every module,
   building the tree of module *calls*. A call that ends before l starts is a prefix
   call; the outermost prefix calls (those whose caller is not itself a prefix call)
   keep their outputs. l's own input and output are kept too.
2. ``run_suffix(x, activations)`` runs the model again on x repeated B times, with the
   ``forward`` of some modules temporarily replaced (an instance attribute, removed in
   ``finally``): an outermost prefix call returns its recorded output repeated B times
   without computing anything (its submodules never run), l's call returns the B
   replacement activations, and every other call runs as usual. Skip tensors taken from
   prefix modules therefore arrive repeated to the batch, and only the modules after l
   (plus any tensor arithmetic written directly in a ``forward``) compute.

Calls are matched by order per module, so a module used several times (one ReLU shared
across a network) is replaced only at its prefix calls. The replay checks that the
model made the same calls as in the recording and raises otherwise (a forward whose
control flow depends on the batch size cannot be replayed).
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

CACHED, LAYER, RUN = "cached", "layer", "run"


class _Call:
    __slots__ = ("module", "parent", "children", "output", "prefix", "hidden")

    def __init__(self, module: nn.Module, parent: "_Call | None"):
        self.module, self.parent, self.children = module, parent, []
        self.output, self.prefix, self.hidden = None, False, False


def _repeat(value, copies: int, n: int):
    """Tensors with the batch leading (N, ...) repeated copy-major to (copies * N, ...); structure kept."""
    if isinstance(value, torch.Tensor):
        if value.dim() >= 1 and value.shape[0] == n:
            return value.repeat((copies,) + (1,) * (value.dim() - 1))
        return value
    if isinstance(value, (tuple, list)):
        repeated = [_repeat(v, copies, n) for v in value]
        return type(value)(repeated) if not hasattr(value, "_fields") else type(value)(*repeated)
    if isinstance(value, dict):
        return type(value)((k, _repeat(v, copies, n)) for k, v in value.items())
    return value


class LayerReplay:
    """Record a forward once, then replay the network from ``layer`` on for replacement activations."""

    def __init__(self, model: nn.Module, layer: nn.Module, layer_name: str = "the layer"):
        self.model, self.layer, self.layer_name = model, layer, layer_name
        self.layer_inputs: tuple[tuple, dict] | None = None
        self.layer_output: torch.Tensor | None = None
        self._actions: dict[nn.Module, list] = {}
        self._n = 0

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
                self.layer_output = output
            if state["layer"] is None:  # ended before the layer started: a prefix call
                call.prefix, call.output = True, output
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
            raise ValueError(f"layer '{self.layer_name}' did not run in the forward pass; choose a layer the model uses")
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
        """The model's output when the layer outputs ``activations`` (copies * N, ...), copy-major.

        ``x`` is the recorded input (N, ...); it is repeated to the batch for any tensor
        arithmetic the model's forward does on it directly.
        """
        n = self._n
        if activations.shape[0] % n or activations.shape[1:] != self.layer_output.shape[1:]:
            raise ValueError(f"replacement activations {tuple(activations.shape)} do not match the layer's output "
                             f"{tuple(self.layer_output.shape)} repeated copy-major")
        copies = activations.shape[0] // n
        counters = {module: 0 for module in self._actions}
        saved = {}

        def replacement(module, original):
            plan = self._actions[module]

            def forward(*args, **kwargs):
                index = counters[module]
                counters[module] += 1
                kind, value = plan[index] if index < len(plan) else (RUN, None)
                if kind == CACHED:
                    return _repeat(value, copies, n)
                if kind == LAYER:
                    return activations
                return original(*args, **kwargs)
            return forward

        try:
            for module in self._actions:
                saved[module] = module.__dict__.get("forward")
                module.forward = replacement(module, module.forward)
            output = self.model(x.repeat((copies,) + (1,) * (x.dim() - 1)))
        finally:
            for module, previous in saved.items():
                module.__dict__.pop("forward", None)
                if previous is not None:
                    module.__dict__["forward"] = previous
        if any(counters[module] != len(plan) for module, plan in self._actions.items()):
            raise ValueError("the model did not make the same module calls when replayed from the layer (its "
                             "forward depends on the batch size or on data); it cannot be explained this way")
        return output

