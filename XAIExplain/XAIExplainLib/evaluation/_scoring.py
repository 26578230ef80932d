"""Scoring many perturbed copies of a batch against targets frozen on the unperturbed output.

ROAD, faithfulness correlation, infidelity and max-sensitivity all run the
model (or an explanation) on M perturbed copies of N samples.  Each copy
belongs to one sample (``rows[m]``) and must be scored with *that* sample's
target as bound on the unperturbed input (design principle 5), in batches so
that a large M never sits in memory at once.  The helpers here are that one
rule, shared by those metrics.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._model import activate

__all__ = ["FrozenTarget", "check_batch", "positive_int", "score_copies", "target_classes"]


def check_batch(x) -> torch.Tensor:
    """``x`` as a model input (N, C, H, W) or (N, C, D, H, W), for metrics that take no maps."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5) or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, C, H, W) or (N, C, D, H, W) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    return x


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1, or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class FrozenTarget:
    """A target already bound on the unperturbed output, replayed for copies of its samples.

    ``explain`` binds its target on the output of whatever it is given; for a
    perturbed copy that would re-pick the predicted class (or re-threshold a
    segmentation region) on the perturbed output.  Binding this object instead
    hands back the original binding for the copies' samples ``rows``.
    """

    def __init__(self, bound, rows: Optional[torch.Tensor] = None):
        if rows is not None and not hasattr(bound, "subset"):
            raise TypeError(
                f"the target {type(bound).__name__} cannot be replayed for perturbed copies (it has no "
                "'subset(rows)'); use a class index or the engine's SegmentationTarget"
            )
        self.bound = bound
        self.rows = rows

    def bind(self, output: torch.Tensor):
        return self.bound if self.rows is None else self.bound.subset(self.rows.to(output.device))


def target_classes(bound, what: str) -> torch.Tensor:
    """The (N,) class index of each sample's bound target, or a TypeError saying what needs it."""
    classes = getattr(bound, "classes", None)
    if classes is None:
        raise TypeError(
            f"the target {type(bound).__name__} does not say which output class it scores (no 'classes'); "
            f"{what} needs the class of each sample"
        )
    return torch.as_tensor(classes).long().flatten()


def score_copies(forward: Callable[[torch.Tensor], torch.Tensor], bound, rows: torch.Tensor,
                 build: Callable[[int, int], torch.Tensor], activation: Optional[str], batch_size: int,
                 keep_outputs: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None):
    """Activated target scores (M,) float64 of M copies built ``batch_size`` at a time.

    ``build(start, stop)`` returns copies ``start .. stop - 1`` (their samples
    are ``rows[start:stop]``); ``forward`` is a frozen-inference forward.  When
    ``keep_outputs(output, rows)`` is given, its (m,) result per batch is also
    collected and returned as a second tensor (e.g. "still predicted").
    """
    total = rows.numel()
    scores = torch.empty(total, dtype=torch.float64, device=rows.device)
    kept = torch.empty(total, dtype=torch.float64, device=rows.device) if keep_outputs else None
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        chunk = rows[start:stop]
        output = forward(build(start, stop))
        scores[start:stop] = bound.score(activate(output.double(), activation), chunk).double()
        if keep_outputs is not None:
            kept[start:stop] = keep_outputs(output, chunk).double()
    return scores if keep_outputs is None else (scores, kept)


def score_original_and_copies(model, x: torch.Tensor, maps: torch.Tensor, target, activation: Optional[str],
                              rows: torch.Tensor, build: Callable[[int, int], torch.Tensor], batch_size: int):
    """``(original, copies)``: the activated target score of each sample of ``x`` (N,) and of the M copies
    ``build`` makes from them (:func:`score_copies`), float64, in one frozen-inference session on ``maps``'
    device, the target and activation resolved on the unperturbed output (what the removal, faithfulness-
    correlation and infidelity metrics compare their copies with)."""
    from ..engine import resolve_target
    from ._model import frozen_inference, resolve_activation

    with frozen_inference(model, maps) as forward:
        output = forward(x)
        bound = resolve_target(target, output)
        activation = resolve_activation(activation, output, target)
        original = bound.score(activate(output.double(), activation)).double()
        return original, score_copies(forward, bound, rows, build, activation, batch_size)
