"""RISE (Petsiuk, Das & Saenko, BMVC 2018): the score-weighted mean of random smooth masks, seeded and batched.

Mask i: a binary grid of ``cells`` cells per spatial axis, each cell kept with
probability ``keep_probability`` (p), upsampled (bilinear / trilinear) to (cells + 1) x cell size and cropped
at a random shift in [0, cell size) per axis, so the cell edges fall anywhere. The map is
S = sum_i s_i M_i / (masks * p), where s_i is the target's score of x * M_i: the softmax
probability of the class for classifiers (as in the paper), the segmentation target's own
score otherwise (pass ``activation="sigmoid"`` / ``"softmax"`` to score probabilities).
It is a Monte Carlo estimate of E[s(x * M) M(u)] / p, so it converges as ``masks`` grows.

``score_baseline="mean"`` subtracts each sample's mean masked score before weighting:
S = ReLU(sum_i (s_i - mean_j s_j) M_i / (masks * p)), the regions whose presence raises the
score above that sample's average. The plain map's level follows the sample's own score
(E[M] = p, so S ~ mean score + structure); across the slices of a volume, normalised
together, that level hides the spatial structure (a slice scored 0.95 is bright
everywhere, one scored 0.35 dark), so ``explain_image`` uses "mean" for per-slice runs.
Progress: ``checkpoint(done, total)`` after every forward, so a long run reports often.

The grids and shifts come from a local ``torch.Generator`` seeded with ``seed`` and
depend only on the seed, ``masks``, ``cells`` and the spatial shape: every sample of a
batch gets the same masks and the global random state is untouched. The masked copies
are stacked copy-major into forwards of ``batching.copies_per_forward`` copies, run by
``request.batch_model`` (on a CPU an inference-optimised copy of the network when it gives
the model's numbers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..batching import chunks, copies_per_forward, copy_scores
from ..interrupt import checkpoint
from ..options import choice, integer, positive_int

#: ``score_baseline``: "none" (the paper's map), "mean" (each sample's mean masked score subtracted).
SCORE_BASELINES = ("none", "mean")
from ..registry import MethodInfo, register


def keep_probability(options: dict) -> float:
    value = options.get("keep_probability", 0.5)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"option keep_probability (of keeping a cell) must be a number in (0, 1], got {value!r}")
    return float(value)


class RiseMasks:
    """The seeded masks of one RISE run; ``batch(start, stop)`` upsamples masks start..stop-1: (b, *S)."""

    def __init__(self, spatial: tuple[int, ...], masks: int, cells: int, p: float, seed: int):
        self.spatial, self.p = tuple(spatial), p
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self.grids = (torch.rand((masks,) + (cells,) * len(spatial), generator=generator) < p).float()
        self.cell = tuple(math.ceil(s / cells) for s in spatial)
        self.shifts = torch.stack([torch.randint(c, (masks,), generator=generator) for c in self.cell], dim=1)
        self.upsampled = tuple((cells + 1) * c for c in self.cell)

    def batch(self, start: int, stop: int, device=None, dtype=torch.float32) -> torch.Tensor:
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(self.spatial)]
        grids = self.grids[start:stop].to(device=device, dtype=dtype).unsqueeze(1)
        smooth = F.interpolate(grids, size=self.upsampled, mode=mode, align_corners=False)[:, 0]
        out = torch.empty((stop - start,) + self.spatial, dtype=dtype, device=device)
        for row, shift in enumerate(self.shifts[start:stop].tolist()):
            out[row] = smooth[(row,) + tuple(slice(s, s + size) for s, size in zip(shift, self.spatial))]
        return out


def _rise(request):
    count = positive_int(request.options, "masks", 1000)
    cells = positive_int(request.options, "cells", 7)
    p = keep_probability(request.options)
    seed = integer(request.options, "seed", 0)
    relative = choice(request.options, "score_baseline", "none", SCORE_BASELINES) == "mean"
    x = request.x
    n, spatial = x.shape[0], tuple(x.shape[2:])
    if any(cells > s for s in spatial):
        raise ValueError(f"option cells={cells} is more than the input's spatial size {spatial}; use at most "
                         f"{min(spatial)} cells per axis")
    masks = RiseMasks(spatial, count, cells, p, seed)
    _, bound = request.reference()
    total = torch.zeros((n, math.prod(spatial)), dtype=x.dtype, device=x.device)
    score_sum = torch.zeros(n, dtype=x.dtype, device=x.device)
    mask_sum = torch.zeros(math.prod(spatial), dtype=x.dtype, device=x.device)
    step = copies_per_forward(n * x[0].numel(), count)
    with torch.no_grad():
        for start, stop in chunks(count, step):
            checkpoint(start, count)  # cancel / heartbeat / progress hook (engine/interrupt.py)
            batch = masks.batch(start, stop, x.device, x.dtype)  # (b, *S)
            inputs = (x[None] * batch[:, None, None]).flatten(0, 1)  # (b * N, C, *S)
            model = request.batch_model(count, step, inputs[:n])
            scores = copy_scores(model, bound, inputs, n, probability=True).to(x.dtype)  # (b, N)
            total.addmm_(scores.T, batch.flatten(1))
            if relative:
                score_sum += scores.sum(dim=0)
                mask_sum += batch.flatten(1).sum(dim=0)
    if relative:  # sum_i (s_i - mean s) M_i = sum_i s_i M_i - mean s * sum_i M_i
        total.sub_((score_sum / count)[:, None] * mask_sum[None]).clamp_(min=0)
    return (total / (count * p)).reshape((n,) + spatial)


register(MethodInfo(
    "rise", "RISE: mean of random smooth masks weighted by the target score of the masked input",
    compute=_rise, family="perturbation", needs_layer=False, cost="masks forwards (batched)",
    options=("masks", "cells", "keep_probability", "seed", "score_baseline"), needs_gradients=False,
))
