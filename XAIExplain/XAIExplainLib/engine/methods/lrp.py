"""Layer-wise relevance propagation through zennit (Anders et al.), with the batch-norm canonizer.

``composite`` picks one of zennit's composites: ``epsilon_plus_flat`` (default),
``epsilon_gamma_box`` (the first layer's ZBox bounds are each sample's minimum and
maximum) or ``epsilon_alpha2_beta1``. The batch-norm canonizer merges every batch norm
into the linear layer before it in a Sequential (restored afterwards). The relevance
that enters the output is the gradient of the target's score with respect to the
output (a one-hot vector for a class logit, the region mask of a segmentation target's
class channel), as for zennit's ``Gradient`` attributor; the map is the input relevance
summed over input channels (signed).

What zennit covers: its rules attach to modules (convolutions 1D/2D/3D and transposed,
Linear, average pooling, activations, zennit's ``Sum``), so 3D networks and U-Nets whose
skips are concatenated work (a U-Net's input relevance sums to 96% of the relevance
entering its output); functions called in ``forward`` keep their plain gradient:
``torch.cat`` splits relevance correctly, but a residual ``a + b`` hands the whole
relevance to both branches (zennit needs its ``Sum`` module there, which only its
torchvision ResNet canonizer inserts: on a ResNet-18 layout the input relevance sums to
about 2^8 times what enters the logit, one doubling per block), and a batch norm that does
not follow its convolution inside one Sequential is not merged (it keeps its gradient).

zennit's package ``__init__`` imports torchvision (for its ResNet canonizers), which
need not load next to the installed torch; ``_zennit`` imports the submodules this
method uses without running that ``__init__``.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

import torch

from ..options import choice
from ..registry import MethodInfo, register
from ..targets import resolve_target

COMPOSITES = {
    "epsilon_plus_flat": "EpsilonPlusFlat",
    "epsilon_gamma_box": "EpsilonGammaBox",
    "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1",
}


def _zennit():
    """(zennit.composites, zennit.canonizers, zennit.attribution), without importing torchvision."""
    if "zennit" not in sys.modules:
        spec = importlib.util.find_spec("zennit")
        if spec is None:
            from ...extras import install_hint

            raise ImportError(f"LRP needs zennit: {install_hint('lrp')}")
        package = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
        sys.modules["zennit"] = package
    return tuple(importlib.import_module(f"zennit.{name}") for name in ("composites", "canonizers", "attribution"))


def make_composite(name: str, x: torch.Tensor):
    """A fresh zennit composite ``name`` (a key of COMPOSITES) with the batch-norm canonizer."""
    composites, canonizers, _ = _zennit()
    cls = getattr(composites, COMPOSITES[name])
    canonizer = [canonizers.SequentialMergeBatchNorm()]
    if name == "epsilon_gamma_box":  # each sample's own bounds, so its map does not depend on its batch
        dims = tuple(range(1, x.dim()))
        return cls(low=x.amin(dim=dims, keepdim=True), high=x.amax(dim=dims, keepdim=True), canonizers=canonizer)
    return cls(canonizers=canonizer)


def _lrp(request):
    name = choice(request.options, "composite", "epsilon_plus_flat", tuple(COMPOSITES))
    composite = make_composite(name, request.x)
    # The target is frozen from the unperturbed output: an earlier pass of the request, or else this
    # pass's own output (the canonizers change the parameters, not the function), saving a forward.
    bound = request.reference()[1] if request.has_reference() else None
    x = request.x.detach().clone().requires_grad_(True)
    with composite.context(request.model) as modified:
        output = modified(x)
        bound = bound or resolve_target(request.target, output.detach())
        (relevance,) = torch.autograd.grad(bound.score(output).sum(), x, allow_unused=True)
    request.info["lrp"] = {"composite": name}
    return torch.zeros_like(request.x).sum(dim=1) if relevance is None else relevance.sum(dim=1)


register(MethodInfo(
    "lrp", "LRP (zennit): layer-wise relevance propagation with a composite of rules and the batch-norm canonizer",
    compute=_lrp, family="gradient", needs_layer=False, signed=True, cost="1 forward + full backward",
    options=("composite",), needs_hooks=True,  # zennit's rules are module hooks
))
