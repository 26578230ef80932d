"""A volume too small for a network, said in one line instead of torch's layer message.

A network that halves its grid n times cannot run on a volume thinner than 2**n voxels along
an axis: a one-slice CT into a 3D classifier stops in a pooling layer (``Output size is too
small``), a small head MRI into HD-BET in an instance norm whose map shrank to one voxel
(``Expected more than 1 spatial element when training``). The network does not say its
minimum in advance, so the pipeline runs it and, when torch refuses an input for being too
small, :func:`too_small_error` turns the refusal into what was given, what the model works
on, and what to do.
"""
from __future__ import annotations

from typing import Sequence

#: Parts of torch's messages for an input smaller than a layer can take.
TORCH_TOO_SMALL = (
    "Output size is too small",
    "Expected more than 1 spatial element",
    "Expected more than 1 value per channel",
    "Kernel size can't be greater than actual input size",
    "smaller than kernel size",
    "Padding size should be less than the corresponding input dimension",
)


def is_too_small(exc: BaseException) -> bool:
    """Whether ``exc`` is torch refusing an input too small for one of the network's layers."""
    return isinstance(exc, (RuntimeError, ValueError)) and any(part in str(exc) for part in TORCH_TOO_SMALL)


def too_small_error(exc: BaseException, card, shape: Sequence[int]) -> ValueError:
    """One line: the model-grid size of the volume (or slice), that the model needs more, and what to do."""
    axes = "(z, y, x)" if len(shape) == 3 else "(y, x)"
    size = " x ".join(str(int(s)) for s in shape)
    spacing = ""
    if card.input.spacing is not None:
        spacing = " at " + " x ".join(f"{s:g}" for s in card.input.spacing) + " mm"
    needs = []
    if card.input.patch_size is not None:
        needs.append("its patch is " + " x ".join(str(p) for p in card.input.patch_size))
    if card.input.divisible_by is not None:
        needs.append("it pads to multiples of " + " x ".join(str(d) for d in card.input.divisible_by))
    thin = [i for i, s in enumerate(shape) if s == min(shape)]
    what = "too thin" if len(thin) == 1 and min(shape) * 4 <= max(shape) else "too small"
    advice = ("give a volume with more slices (a one-slice or thin volume needs a 2D model run per slice)"
              if what == "too thin" and card.spatial_dims == 3 else
              "give a larger volume that covers the anatomy the model was trained on")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ValueError(
        f"{card.name}: the volume is {size} voxels {axes} on the model's grid{spacing}, {what} for this "
        f"{card.spatial_dims}D network{' (' + '; '.join(needs) + ')' if needs else ''}: its layers shrink it to "
        f"nothing (torch: {first}); {advice}")
