"""One explanation request: the model, the input, the target, the layers, the options,
and the passes computed so far, shared between every method of the request.

Methods are functions ``compute(request) -> raw maps (N, *S)`` at input resolution. They
ask the request for the passes they need (``cam_pass``, ``input_gradient_pass``,
``guided_pass``, ``reference``); each pass runs at most once per request, which is how
Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM and LayerCAM come from one forward and one
backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .capture import GuidedActivations, PassResult, run_pass
from .inference_copy import MIN_FORWARDS, optimised_copy
from .layers import resolve_layers
from .normalize import minmax
from .reading import ModelReading
from .targets import resolve_target
from .validation import check_output_rows


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize (N, *s) maps to (N, *size): bilinear / trilinear, align_corners=False."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


_REFERENCE_PASSES = ("cam", "cam-forward", "input", "guided")  # passes whose output is the unperturbed one


@dataclass
class Request:
    model: nn.Module
    x: torch.Tensor
    target: object = None
    layer: object = None
    options: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    reading: ModelReading = field(default_factory=ModelReading)  # output_key and token-layer options
    full_cam_pass: bool = False  # set when some method of the request needs layer gradients
    output_needed: bool = True  # False: nothing reads the output, a forward-only pass may stop at its layers
    upsample_single_layer: bool = True  # False: a one-layer map stays at the layer's resolution
    methods: tuple = ()  # every method of the request, so one method may run a pass the others can share
    _passes: dict = field(default_factory=dict)
    _layers: list | None = None

    @property
    def spatial_size(self) -> tuple[int, ...]:
        return tuple(self.x.shape[2:])

    def at_layer_resolution(self) -> "Request":
        """A view of this request, sharing its passes and info, whose one-layer maps are not
        resized to the input."""
        self.layers()
        return replace(self, upsample_single_layer=False)

    def layers(self) -> list[tuple[str, nn.Module]]:
        """The resolved target layer(s): the user's choice or the default layer."""
        if self._layers is None:
            self._layers = resolve_layers(self.model, self.layer, self.x, self.reading.tokens)
        return self._layers

    def _cached(self, key, compute):
        if key not in self._passes:
            self._passes[key] = compute()
        return self._passes[key]

    def cam_pass(self, backward: bool = True) -> PassResult:
        """Activations (and gradients) of the target layers from one lean pass."""
        if not backward and ("cam" in self._passes or self.full_cam_pass):
            backward = True
        key = "cam" if backward else "cam-forward"
        return self._cached(key, lambda: run_pass(self.model, self.x, self.target, self.layers(), backward=backward,
                                                  tokens=self.reading.tokens,
                                                  stop_after_layers=not self.output_needed))

    def input_gradient_pass(self) -> PassResult:
        return self._cached("input", lambda: run_pass(self.model, self.x, self.target, input_gradient=True))

    def guided_pass(self) -> PassResult:
        def compute():
            with GuidedActivations():
                return run_pass(self.model, self.x, self.target, input_gradient=True)
        return self._cached("guided", compute)

    def has_reference(self) -> bool:
        """Whether a pass of the unperturbed input has run (so ``reference`` costs no forward)."""
        return any(self._passes[key].output is not None for key in _REFERENCE_PASSES + ("reference",)
                   if key in self._passes)

    def reference(self):
        """(output, bound target) of the unperturbed input, reusing any pass already run."""
        for key in _REFERENCE_PASSES:
            if key in self._passes and self._passes[key].output is not None:
                result = self._passes[key]
                return result.output, result.target
        def compute():
            with torch.no_grad():
                output = self.model(self.x)
            check_output_rows(self.model, output, self.x.shape[0])
            return PassResult(output=output, target=resolve_target(self.target, output))
        result = self._cached("reference", compute)
        return result.output, result.target

    def batch_model(self, copies: int, per_forward: int, check: torch.Tensor):
        """What runs a method's forward-only batches (``copies`` perturbed copies, ``per_forward``
        a batch): an inference-optimised copy of the model (:mod:`.inference_copy`, checked on
        the real batch ``check``) when there are enough batches and it gives the model's
        numbers, else the model itself. Built once per request."""
        if -(-copies // per_forward) < MIN_FORWARDS:
            return self.model
        return self._cached("inference-copy",
                            lambda: optimised_copy(self.model, check, self.reading.output_key) or self.model)

    def per_layer(self, layer_map) -> torch.Tensor:
        """Apply ``layer_map(name, module) -> (N, *s)`` to each target layer, upsample, combine.

        One layer: its upsampled map (its raw map when ``upsample_single_layer`` is False).
        Several layers (multi-layer attribution, Mullan & Sonka, SPIE Medical Imaging 2022): each map is resized to the
        input, min-max scaled to [0, 1], then averaged.
        """
        layers = self.layers()
        if len(layers) == 1 and not self.upsample_single_layer:
            return layer_map(*layers[0])
        maps = [upsample(layer_map(name, module), self.spatial_size) for name, module in layers]
        if len(maps) == 1:
            return maps[0]
        return torch.stack([minmax(m) for m in maps]).mean(dim=0)
