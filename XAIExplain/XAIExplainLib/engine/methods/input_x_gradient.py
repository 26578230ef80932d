"""Input x Gradient (Shrikumar et al. 2016): x * dy/dx summed over input channels (signed).

It reads the same input-gradient pass as saliency, so the two together cost one
forward and one backward.
"""
from __future__ import annotations

from ..registry import MethodInfo, register


def _input_x_gradient(request):
    return (request.x * request.input_gradient_pass().input_gradient).sum(dim=1)


register(MethodInfo(
    "input_x_gradient", "Input x Gradient: input times d score / d input, summed over channels",
    compute=_input_x_gradient, family="gradient", needs_layer=False, signed=True, cost="1 forward + full backward",
))
