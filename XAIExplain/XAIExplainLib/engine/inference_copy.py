"""A faster copy of the network for the many forward-only passes of perturbation methods.

RISE scores hundreds to thousands of masked copies of the input, Score-CAM and occlusion
one per channel or window: on a CPU these methods cost what their forwards cost, and
larger batches gain little there (the convolutions are compute-bound). PyTorch's own
``torch.fx`` inference pass (``torch.fx.experimental.optimization.optimize_for_inference``:
batch norm folded into the convolution before it, dropout removed, oneDNN layouts) runs the
same network two to three times faster on the CPU.

It is applied to a deep copy, so the user's model is never touched, and only where it is
known to give the model's own numbers: on the CPU in float32 (the pass's own limits), on a
module ``torch.fx`` traces symbolically (so no branch depends on the data), and after the
copy's output on a check batch equals the model's (relative 1e-4 of the output's scale).
Anything else, or any failure while building it (also a future torch without the pass),
leaves the model itself to run the batches. Only worth it for many forwards: the pass costs
about 0.1 s, once per model and input shape (the copy is kept while the weights and the
module structure are unchanged, and not made while a user's hook is registered). On a GPU the model itself runs: batching is what pays there.
"""
from __future__ import annotations

import copy
import itertools
import warnings
import weakref
from typing import Callable

import torch
from torch import nn

from .reading import ENGINE_HOOK, select_output
from .validation import check_output_rows

#: Fewer forwards than this run on the model itself (building the copy would not pay off).
MIN_FORWARDS = 4
#: Largest difference to the model's output on the check batch, relative to its largest value.
TOLERANCE = 1e-4


def optimised_copy(model: nn.Module, check: torch.Tensor, output_key=None) -> Callable | None:
    """``batch -> logits`` through an inference-optimised copy of ``model``, or None where it does not
    apply (see the module docstring). ``check`` is a batch of real inputs; must run in eval mode
    (inside ``capture.explaining``), where ``model(check)`` already returns the logits.

    The copy is kept for the model while its weights are unchanged (same tensors, no in-place
    update since), its structure is unchanged (no submodule replaced or reconfigured) and the
    inputs have the checked shape, so a volume explained batch by batch builds it once. A model
    with a hook of its user's runs itself (the copy would skip the hook)."""
    if (check.device.type != "cpu" or check.dtype != torch.float32 or isinstance(model, torch.jit.ScriptModule)
            or any(t.dtype != torch.float32 or t.device.type != "cpu" for t in model.parameters())):
        return None
    if _foreign_hooks(model):
        return None
    key = (_weights_state(model), _structure(model), tuple(check.shape[1:]), output_key)
    cached = _COPIES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    forward = _build(model, check, output_key)
    _COPIES[model] = (key, forward)
    return forward


_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _weights_state(model: nn.Module) -> tuple:
    """Which tensors the model holds and how often each was changed in place."""
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


def _structure(model: nn.Module) -> tuple:
    """Which submodule sits where, of which type and configuration, with which ``forward``.

    A layer replaced in place (``model.features[2] = nn.Tanh()``) or reconfigured
    (``negative_slope``, ``inplace``: what ``extra_repr`` shows) changes the key though no
    weight changed. Cheap next to a forward: one pass over the modules, no tensor touched.
    """
    return tuple((name, type(module), id(module), module.extra_repr(), id(module.__dict__.get("forward")))
                 for name, module in model.named_modules())


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _foreign_hooks(model: nn.Module) -> bool:
    """A hook that is not the engine's own, on any submodule or registered globally.

    The optimised copy is traced by ``torch.fx``, which runs no hooks, so a model with a user's
    forward, forward-pre or backward hook runs itself (its hooks see every batch, and a hook that
    changes an output changes the map)."""
    from torch.nn.modules import module as torch_module

    def foreign(hooks) -> bool:
        return any(not getattr(hook, ENGINE_HOOK, False) for hook in hooks.values())

    if any(foreign(getattr(torch_module, f"_global{name}", {})) for name in _HOOK_DICTS):
        return True
    return any(foreign(getattr(module, name, {})) for module in model.modules() for name in _HOOK_DICTS)


def _build(model: nn.Module, check: torch.Tensor, output_key) -> Callable | None:
    try:
        with warnings.catch_warnings():  # its oneDNN modules are TorchScript, which warns of its deprecation
            warnings.simplefilter("ignore")
            from torch.fx.experimental.optimization import optimize_for_inference

            fast = optimize_for_inference(copy.deepcopy(model))
        with torch.no_grad():
            expected = model(check)
            got = select_output(fast(check), output_key)
    except Exception:  # not traceable, not copyable, an op the pass cannot lay out: the model runs
        return None
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    scale = float(expected.abs().max())
    if not bool(torch.isfinite(got).all()) or float((got - expected).abs().max()) > TOLERANCE * max(scale, 1e-12):
        return None
    return _Guarded(model, fast, output_key)


class _Guarded:
    """The optimised copy, falling back to the model for good if a batch ever fails in it.

    It holds the model weakly: the cache maps the model to this object, and a strong reference
    back would keep every explained model (and its copy) alive for good."""

    def __init__(self, model: nn.Module, fast: nn.Module, output_key):
        self._model, self.fast, self.output_key, self.failed = weakref.ref(model), fast, output_key, False

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                out = select_output(self.fast(batch), self.output_key)
            except Exception:
                self.failed = True
            else:
                check_output_rows(self._model(), out, batch.shape[0])
                return out
        return self._model()(batch)
