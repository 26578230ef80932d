"""Finer-CAM (Zhang et al., 2025): Grad-CAM of the target class's margin over the classes closest to it.

The comparison classes d_1..d_T are the T (default 3, at most K - 1) classes whose logits
are closest to the target class's logit y_c. The explained score is pytorch-grad-cam's
weighted margin sum_t p_t (y_c - alpha y_{d_t}) / (sum_t p_t + 1e-9), with p the softmax
of the logits (differentiated too, as there); the map is Grad-CAM of that score. Features
the similar classes share cancel, so the map keeps what tells the target apart.

The comparison classes are frozen from the unperturbed output like any target
(``ContrastTarget.bind``). It costs one forward and one backward of its own: its score is
not the one the other CAM methods of a request differentiate.
"""
from __future__ import annotations

import torch

from ..capture import run_pass
from ..options import non_negative_float, positive_int
from ..registry import CLASSIFICATION, MethodInfo, register
from ..targets import BoundClassTarget, resolve_target
from .gradient_cams import gradcam


class BoundContrastTarget:
    """The Finer-CAM margin of each sample's class over its comparison classes."""

    def __init__(self, classes: torch.Tensor, comparisons: torch.Tensor, alpha: float):
        self.classes, self.comparisons, self.alpha = classes, comparisons, alpha

    def score(self, output: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        classes = self.classes if rows is None else self.classes[rows]
        comparisons = (self.comparisons if rows is None else self.comparisons[rows]).to(output.device)
        main = output.gather(1, classes.to(output.device)[:, None])  # (M, 1)
        weights = torch.softmax(output, dim=1).gather(1, comparisons)  # (M, T)
        margin = (weights * (main - self.alpha * output.gather(1, comparisons))).sum(dim=1)
        return margin / (weights.sum(dim=1) + 1e-9)

    def describe(self, sample: int) -> str:
        others = ", ".join(str(int(c)) for c in self.comparisons[sample])
        return f"class {int(self.classes[sample])} against classes {others}"


class ContrastTarget:
    """A class target (None, an int, N ints) turned into Finer-CAM's margin over the closest classes."""

    def __init__(self, target=None, alpha: float = 1.0, comparisons: int = 3):
        self.target, self.alpha, self.comparisons = target, alpha, comparisons

    def bind(self, output: torch.Tensor) -> BoundContrastTarget:
        main = resolve_target(self.target, output)
        if not isinstance(main, BoundClassTarget):
            raise ValueError("Finer-CAM compares class scores of a classifier (output (N, K)), not segmentation "
                             "outputs; use 'gradcam'")
        if output.shape[1] < 2:
            raise ValueError("Finer-CAM compares the target class with the classes closest to it, but the model has "
                             "one output class; use 'gradcam'")
        logits = output.detach()
        distance = (logits - logits.gather(1, main.classes[:, None])).abs()
        distance.scatter_(1, main.classes[:, None], float("inf"))  # never compare a class with itself
        count = min(self.comparisons, output.shape[1] - 1)
        comparisons = distance.argsort(dim=1, stable=True)[:, :count]
        return BoundContrastTarget(main.classes, comparisons, self.alpha)


def _finercam(request):
    alpha = non_negative_float(request.options, "alpha", 1.0)
    count = positive_int(request.options, "comparisons", 3)
    target = ContrastTarget(request.target, alpha, count)
    result = request._cached(("finercam", alpha, count),
                             lambda: run_pass(request.model, request.x, target, request.layers()))
    request.info["finercam"] = {"comparison_classes": result.target.comparisons}
    return request.per_layer(lambda name, _: gradcam(result.activations[name], result.gradients[name]))


register(MethodInfo(
    "finercam", "Finer-CAM: Grad-CAM of the target's logit margin over the classes closest to it",
    compute=_finercam, tasks=(CLASSIFICATION,), options=("alpha", "comparisons"), layer_map_only=True,
))
